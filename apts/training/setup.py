"""One rank's model, optimizer and collectives, built from the config's groups.

The ``model`` and ``optimizer`` config groups name a callable (``_target_``) and its
arguments; :func:`group_factory` binds them (Hydra's ``instantiate``) and the runner adds
what only it knows: the data's shape and classes for a model, the parameters and
``comm`` for an optimizer. An optimizer says what it needs through class attributes
(:func:`needs`). :func:`build` puts one rank together: the seeded model (identical on
every rank), DDP around it for the data-parallel baselines, the optimizer.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from apts.config.factory import group_factory, needs
from apts.data.dataset import Dataset
from apts.training import micro
from apts.training.comm import Comm


def optimizer_factory(ocfg: Mapping) -> Callable[..., torch.optim.Optimizer]:
    """``params -> optimizer`` from the ``optimizer`` config group."""
    return group_factory(ocfg)


def communicates_itself(factory: functools.partial) -> bool:
    return needs(factory, "requires_comm")


def build_model(mcfg: Mapping, shape, num_classes: int) -> torch.nn.Module:
    """The network of the ``model`` config group for the data's ``shape`` = (C, H, W)."""
    return group_factory(mcfg)(shape=tuple(shape), num_classes=int(num_classes))


def build_optimizer(ocfg: dict, model: torch.nn.Module, comm: Comm | None) -> torch.optim.Optimizer:
    """The optimizer of the ``optimizer`` config group on ``model``'s parameters; those that
    communicate themselves get ``comm`` (None: a single process)."""
    factory = optimizer_factory(ocfg)
    if communicates_itself(factory):
        return factory(model.parameters(), comm=comm)
    return factory(model.parameters())


@dataclass
class Setup:
    """One rank's model, optimizer and collectives."""

    model: torch.nn.Module
    net: torch.nn.Module  # the model, or its DDP wrapper (SGD/Adam baselines)
    opt: torch.optim.Optimizer
    comm: Comm
    device: torch.device
    closure_style: bool
    overlap: float
    micro_batch: int | None = None  # samples per forward/backward chunk (None: one chunk)


def build(cfg: dict, ds: Dataset) -> Setup:
    """Model (seeded: identical on every rank, no broadcast), DDP when the optimizer does
    not communicate itself, and the optimizer."""
    device = torch.device("cpu")
    if cfg["device"] in ("cuda", "auto") and torch.cuda.is_available():
        device = torch.device("cuda", torch.cuda.current_device())
    comm = Comm()
    torch.manual_seed(cfg["seed"])
    model = build_model(cfg["model"], ds.shape, ds.num_classes).to(device)
    factory = optimizer_factory(cfg["optimizer"])
    net = model
    if not communicates_itself(factory) and comm.world_size > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        # Identical seeded init: skip DDP's start-up broadcast; no per-forward buffer
        # broadcasts either, so every collective is a counted gradient all-reduce.
        net = DDP(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            init_sync=False,
            forward_sync_buffers=False,
        )
        net.register_comm_hook(comm, Comm.ddp_hook)
        settle_ddp_buckets(net, model, ds.shape, device, comm)
    opt = build_optimizer(cfg["optimizer"], model, comm)
    overlap = cfg["overlap"] if needs(factory, "uses_overlap") else 0.0
    # runs made before the key existed took one chunk: resuming them keeps doing so
    chunk = micro.resolve(cfg.get("micro_batch"), model, ds.shape, device)
    closure_style = needs(factory, "requires_closure")
    return Setup(model, net, opt, comm, device, closure_style, overlap, chunk)


def settle_ddp_buckets(net, model: torch.nn.Module, shape, device, comm: Comm) -> None:
    """One backward pass through DDP before training, local only (nothing is reduced or
    counted; the gradients are zero and dropped), in eval mode (no statistics change,
    no random numbers drawn).

    DDP reduces its first step's gradients in one bucket in parameter order, then rebuilds
    its buckets once in the order the gradients became ready. A resumed run's first step
    would otherwise be reduced in the first layout while the uninterrupted run used the
    rebuilt one; a ring all-reduce sums each element in an order that depends on its
    offset, and at N >= 3 floating-point sums depend on the order. With this pass every
    run, fresh or resumed, reduces every step in the rebuilt layout."""
    was_training = model.training
    model.eval()
    comm.ddp_local = True
    try:
        net(torch.zeros(2, *shape, device=device)).sum().backward()
    finally:
        comm.ddp_local = False
        model.train(was_training)
    model.zero_grad(set_to_none=True)
