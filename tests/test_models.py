"""apts.models: output shapes, parameter counts, gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from apts.models import MODELS, build_model, count_parameters

MNIST, CIFAR = (1, 28, 28), (3, 32, 32)


@pytest.mark.parametrize("shape", [MNIST, CIFAR], ids=["mnist", "cifar"])
@pytest.mark.parametrize("name", MODELS)
def test_output_shape_and_backward(name, shape):
    torch.manual_seed(0)
    model = build_model(name, shape, 10)
    model.train()
    x = torch.randn(3, *shape)
    out = model(x)
    assert out.shape == (3, 10) and torch.isfinite(out).all()
    loss = nn.functional.cross_entropy(out, torch.tensor([0, 3, 9]))
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    model.eval()
    with torch.no_grad():
        assert model(x[:1]).shape == (1, 10)


def test_fcnn_is_the_authors_network_on_mnist():
    model = build_model("fcnn", MNIST, 10)
    assert count_parameters(model) == 784 * 32 + 32 + 32 * 32 + 32 + 32 * 10 + 10 == 26506
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(784, 32), (32, 32), (32, 10)]
    assert sum(isinstance(m, nn.ReLU) for m in model.modules()) == 2


def test_fcnn_is_wider_on_cifar_and_configurable():
    model = build_model("fcnn", CIFAR, 10)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [
        (3072, 256),
        (256, 128),
        (128, 10),
    ]
    small = build_model("fcnn", CIFAR, 5, hidden=[16])
    assert count_parameters(small) == 3072 * 16 + 16 + 16 * 5 + 5
    with pytest.raises(ValueError, match="hidden"):
        build_model("cnn", CIFAR, 10, hidden=[16])


def test_resnet18_size_and_batchnorm():
    model = build_model("resnet18", CIFAR, 10)
    assert count_parameters(model) == 11_173_962  # the usual CIFAR ResNet-18
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    assert build_model("resnet18", MNIST, 10)(torch.randn(2, *MNIST)).shape == (2, 10)


def test_count_parameters_trainable_only():
    model = build_model("cnn", MNIST, 10)
    total = count_parameters(model)
    model[0].weight.requires_grad_(False)
    assert count_parameters(model) == total - model[0].weight.numel()
    assert count_parameters(model, trainable_only=False) == total


def test_unknown_model_and_bad_shape():
    with pytest.raises(ValueError, match="fcnn, cnn, resnet18"):
        build_model("vgg", MNIST, 10)
    with pytest.raises(ValueError, match="shape"):
        build_model("fcnn", (28, 28), 10)
