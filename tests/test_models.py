"""apts.models: output shapes, parameter counts, gradients; every configs/model/ file builds
its network through ``_target_`` as the runner does."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from apts.config.validate import CONFIG_DIR
from apts.models import cnn, count_parameters, fcnn, resnet18
from apts.training.setup import build_model

MNIST, CIFAR = (1, 28, 28), (3, 32, 32)
MODEL_CONFIGS = sorted(p.stem for p in (CONFIG_DIR / "model").glob("*.yaml"))


def _from_config(name: str, shape, num_classes: int = 10) -> nn.Module:
    return build_model(OmegaConf.load(CONFIG_DIR / "model" / f"{name}.yaml"), shape, num_classes)


def test_the_model_configs_are_the_three_networks():
    assert MODEL_CONFIGS == ["cnn", "fcnn", "resnet18"]


@pytest.mark.parametrize("shape", [MNIST, CIFAR], ids=["mnist", "cifar"])
@pytest.mark.parametrize("name", MODEL_CONFIGS)
def test_output_shape_and_backward(name, shape):
    torch.manual_seed(0)
    model = _from_config(name, shape)
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
    model = _from_config("fcnn", MNIST)
    assert count_parameters(model) == 784 * 32 + 32 + 32 * 32 + 32 + 32 * 10 + 10 == 26506
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(784, 32), (32, 32), (32, 10)]
    assert sum(isinstance(m, nn.ReLU) for m in model.modules()) == 2


def test_fcnn_is_wider_on_cifar_and_configurable():
    model = fcnn(CIFAR, 10)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [
        (3072, 256),
        (256, 128),
        (128, 10),
    ]
    small = fcnn(CIFAR, 5, hidden=[16])
    assert count_parameters(small) == 3072 * 16 + 16 + 16 * 5 + 5
    with pytest.raises(TypeError, match="hidden"):
        cnn(CIFAR, 10, hidden=[16])


def test_resnet18_size_and_batchnorm():
    model = resnet18(CIFAR, 10)
    assert count_parameters(model) == 11_173_962  # the usual CIFAR ResNet-18
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    assert resnet18(MNIST, 10)(torch.randn(2, *MNIST)).shape == (2, 10)


def test_count_parameters_trainable_only():
    model = cnn(MNIST, 10)
    total = count_parameters(model)
    model[0].weight.requires_grad_(False)
    assert count_parameters(model) == total - model[0].weight.numel()
    assert count_parameters(model, trainable_only=False) == total


def test_bad_shape_and_classes():
    for build in (fcnn, cnn, resnet18):
        with pytest.raises(ValueError, match="shape"):
            build((28, 28), 10)
        with pytest.raises(ValueError, match="num_classes"):
            build(MNIST, 0)
