"""Micro-batched closures (apts.training.micro): the chunks sum to the shard's exact mean.

References are independent of the chunking code: the one-shot loss and gradient in
float64, a BatchNorm model stepped chunk by chunk by hand, DDP's one-shot reduction on a
second process count."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from clitools import SMALL, cli, read_summary
from dist_harness import run_ranks
from torch import nn

from apts.models import cnn, fcnn, resnet18
from apts.training import micro
from apts.training.comm import Comm


def _grads(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.reshape(-1) for p in model.parameters()])


def _one_shot_f64(model: nn.Module, x, y) -> tuple[torch.Tensor, torch.Tensor]:
    ref = copy.deepcopy(model).double()
    loss = F.cross_entropy(ref(x.double()), y)
    loss.backward()
    return loss.detach(), _grads(ref)


@pytest.mark.parametrize("build", [fcnn, cnn], ids=["fcnn", "cnn"])
@pytest.mark.parametrize("chunk", [64, 100, 299, 300, None])
def test_chunks_give_the_one_shot_loss_and_gradient(build, chunk):
    # 300 samples: chunks of 64 and 299 leave a last chunk of another size (44, 1)
    torch.manual_seed(0)
    model = build((1, 12, 12), 10)
    x, y = torch.randn(300, 1, 12, 12), torch.randint(0, 10, (300,))
    ref_loss, ref_grad = _one_shot_f64(model, x, y)
    loss = micro.forward_backward(model, x, y, chunk)
    assert loss.dtype == torch.float32 and not loss.requires_grad
    # float32 rounding of a few hundred terms, against a float64 reference
    torch.testing.assert_close(loss.double(), ref_loss, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(_grads(model).double(), ref_grad, rtol=1e-4, atol=1e-6)


def test_one_chunk_is_the_one_shot_pass_bit_for_bit():
    torch.manual_seed(1)
    model = fcnn((1, 8, 8), 10)
    twin = copy.deepcopy(model)
    x, y = torch.randn(50, 1, 8, 8), torch.randint(0, 10, (50,))
    loss = micro.forward_backward(model, x, y, 50)
    ref = F.cross_entropy(twin(x), y)
    ref.backward()
    assert torch.equal(loss, ref.detach())
    assert torch.equal(_grads(model), _grads(twin))


def test_batchnorm_normalises_per_chunk_as_gradient_accumulation_does():
    torch.manual_seed(2)
    model = resnet18((3, 8, 8), 10)
    twin = copy.deepcopy(model)
    x, y = torch.randn(20, 3, 8, 8), torch.randint(0, 10, (20,))
    micro.forward_backward(model, x, y, 8)  # chunks of 8, 8, 4
    for start in range(0, 20, 8):  # by hand: each chunk alone, weighted by its size
        xb, yb = x[start : start + 8], y[start : start + 8]
        (F.cross_entropy(twin(xb), yb) * len(yb) / 20).backward()
    torch.testing.assert_close(_grads(model), _grads(twin), rtol=1e-5, atol=1e-6)
    # running statistics: one update per chunk, in order
    for a, b in zip(model.buffers(), twin.buffers(), strict=True):
        torch.testing.assert_close(a, b)
    # and not the one-shot statistics: the chunking is visible with BatchNorm
    one_shot = copy.deepcopy(model)
    one_shot.zero_grad()
    micro.forward_backward(one_shot, x, y, None)
    assert not torch.allclose(_grads(one_shot), _grads(model), rtol=1e-3, atol=1e-5)


def test_auto_fills_the_cpu_budget_from_the_models_activations():
    shape = (1, 28, 28)
    small, conv = fcnn(shape, 10), cnn(shape, 10)
    # cnn's leaf outputs per sample: conv/relu 32x28x28 twice, pool 32x14x14, conv/relu
    # 64x14x14 twice, pool and flatten 64x7x7 twice, 128 twice, 10 (float32)
    floats = 2 * 32 * 28 * 28 + 32 * 14 * 14 + 2 * 64 * 14 * 14 + 2 * 64 * 7 * 7 + 2 * 128 + 10
    assert micro.activation_bytes(conv, shape, torch.device("cpu")) == 4 * floats
    cpu = torch.device("cpu")
    assert micro.resolve("auto", conv, shape, cpu) == micro.CPU_BUDGET // (4 * floats)
    # the small fcnn is cheap per sample: a shard of half the paper's |B| is one chunk
    assert micro.resolve("auto", small, shape, cpu) >= 5000
    assert micro.resolve(None, conv, shape, cpu) is None
    assert micro.resolve(256, conv, shape, cpu) == 256


def test_auto_draws_no_random_numbers_and_leaves_batchnorm_alone():
    model = resnet18((3, 8, 8), 10)
    buffers = [b.clone() for b in model.buffers()]
    state = torch.get_rng_state()
    chunk = micro.resolve("auto", model, (3, 8, 8), torch.device("cpu"))
    assert micro.MIN_AUTO <= chunk <= micro.MAX_AUTO
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(a, b) for a, b in zip(model.buffers(), buffers, strict=True))
    assert model.training


def _ddp_rank(rank: int, n: int, chunk):
    from torch.nn.parallel import DistributedDataParallel as DDP

    torch.manual_seed(0)
    model = fcnn((1, 6, 6), 10)
    comm = Comm()
    net = DDP(model, init_sync=False)
    net.register_comm_hook(comm, Comm.ddp_hook)
    g = torch.Generator().manual_seed(rank)
    x, y = torch.randn(90, 1, 6, 6, generator=g), torch.randint(0, 10, (90,), generator=g)
    micro.forward_backward(net, x, y, chunk)
    return _grads(model), comm.calls["ddp"]


def test_ddp_reduces_once_per_step_and_averages_the_chunked_gradients():
    chunked = run_ranks(_ddp_rank, 2, 32)  # chunks of 32, 32, 26 on each rank
    one_shot = run_ranks(_ddp_rank, 2, None)
    assert [calls for _, calls in chunked] == [calls for _, calls in one_shot]
    torch.testing.assert_close(chunked[0][0], chunked[1][0])  # every rank holds the mean
    torch.testing.assert_close(chunked[0][0], one_shot[0][0], rtol=1e-5, atol=1e-7)
    # the reference: the mean of each rank's one-shot gradient, in one process
    ref = []
    for rank in range(2):
        torch.manual_seed(0)
        model = fcnn((1, 6, 6), 10)
        g = torch.Generator().manual_seed(rank)
        x, y = torch.randn(90, 1, 6, 6, generator=g), torch.randint(0, 10, (90,), generator=g)
        ref.append(_one_shot_f64(model, x, y)[1])
    torch.testing.assert_close(chunked[0][0].double(), (ref[0] + ref[1]) / 2, rtol=1e-5, atol=1e-7)


def test_a_run_made_before_the_key_resumes_with_one_chunk(tmp_path):
    # an older run's config.yaml has no micro_batch: it resumes with its own config, in
    # one pass per shard as it was trained, instead of failing on the missing key
    run = tmp_path / "run"
    r = cli(*SMALL, "epochs=1", f"out_dir={run}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    config = run / "config.yaml"
    lines = config.read_text().splitlines(keepends=True)
    config.write_text("".join(x for x in lines if not x.startswith("micro_batch:")))
    r = cli(f"resume={run}", "epochs=2", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    summary = read_summary(run)
    assert summary["epoch"] == 2 and summary["micro_batch"] is None
