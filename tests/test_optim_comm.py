"""The one comm contract of apts.optim (apts/optim/comm.py), used the same way by every
optimizer that communicates itself: ``world_size`` and an in-place ``all_reduce(tensor, op)``
with op "sum" or "mean", its return value unused, no other keyword."""

from __future__ import annotations

import inspect

import pytest
import torch
import torch.nn.functional as F

import apts.optim
from apts.optim.comm import OPS, Communicator, SingleProcess, communicator
from apts.training.comm import Comm


def communicating_optimizers() -> list[type]:
    """Every optimizer class exported by apts.optim that takes ``comm``."""
    found = []
    for name in apts.optim.__all__:
        obj = getattr(apts.optim, name)
        is_opt = inspect.isclass(obj) and issubclass(obj, torch.optim.Optimizer)
        if is_opt and "comm" in inspect.signature(obj).parameters:
            found.append(obj)
    return found


class StrictComm:
    """The contract and nothing more: a world of one that records every call. Its
    ``all_reduce`` takes no other argument and returns nothing."""

    world_size = 1

    def __init__(self) -> None:
        self.calls: list[tuple[int, str]] = []

    def all_reduce(self, tensor: torch.Tensor, op: str) -> None:
        assert op in OPS, op
        self.calls.append((tensor.numel(), op))


def _trajectory(cls: type, comm) -> tuple[list[float], list[torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (64,), generator=g)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3))
    model = model.double()
    opt = cls(model.parameters(), comm=comm)

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        return loss

    losses = [float(torch.as_tensor(opt.step(closure)).detach()) for _ in range(4)]
    sync = getattr(opt, "synchronize", None)
    if sync is not None:
        sync()
    return losses, [p.detach().clone() for p in model.parameters()]


def test_every_communicating_optimizer_is_found() -> None:
    names = {c.__name__ for c in communicating_optimizers()}
    assert {"APTS", "TrustRegion", "LocalSGD", "LocalAdam"} <= names


@pytest.mark.parametrize("cls", communicating_optimizers(), ids=lambda c: c.__name__)
def test_contract_alone_suffices_and_one_rank_equals_no_comm(cls: type) -> None:
    """A comm with exactly the Protocol's surface works, is called with op sum/mean on
    whole flat buffers, and a world of one gives the comm=None trajectory bit for bit."""
    comm = StrictComm()
    assert isinstance(comm, Communicator)
    losses, params = _trajectory(cls, comm)
    ref_losses, ref_params = _trajectory(cls, None)
    assert comm.calls, "no collective issued"
    n = sum(p.numel() for p in params)
    assert {size for size, _ in comm.calls} <= {n, n + 1}
    assert losses == ref_losses
    assert all(torch.equal(p, q) for p, q in zip(params, ref_params, strict=True))


def test_communicator_checks_and_defaults() -> None:
    assert isinstance(communicator(None), SingleProcess)
    comm = Comm()  # no process group: a world of one, counted nothing
    assert communicator(comm) is comm and isinstance(comm, Communicator)
    for bad in ("gloo", object(), type("W", (), {"world_size": 0, "all_reduce": print})()):
        with pytest.raises(ValueError, match=r"^comm=.* must be None or an object with"):
            communicator(bad)
    buf = torch.arange(3.0)
    SingleProcess().all_reduce(buf, "mean")
    assert torch.equal(buf, torch.arange(3.0))
    with pytest.raises(ValueError, match="op='max' must be 'sum' or 'mean'"):
        SingleProcess().all_reduce(buf, "max")
