"""The training loop: epochs, evaluation, checkpoints. Optimizer-agnostic.

Two kinds of optimizer are driven here:

- ``sgd``/``adam``: data-parallel baselines under ``DistributedDataParallel``; the
  global mini-batch of ``batch_size`` is split across the ranks (no overlap) and
  DDP averages the gradients (one all-reduce per bucket, counted by a comm hook).
- ``tr``/``apts``: closure optimizers that do their own (counted) collectives; each
  rank's closure computes the loss of its shard of the mini-batch (with APTS's
  overlap), zeroes the gradients and calls backward.

Every rank derives the same shuffled order from the seed: data is never sent.
Only rank 0 evaluates and writes (see :mod:`apts.logs`).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from apts.comm import Comm
from apts.data import Dataset, augment, epoch_permutation, minibatches, shard, to_float
from apts.logs import RunLogger
from apts.models import build_model, count_parameters

CLOSURE_OPTIMIZERS = ("tr", "apts")
# metrics.jsonl keys that are clock readings: everything else repeats exactly for a seed
TIMING_KEYS = ("wall_s", "elapsed_s", "fwd_bwd_s", "comm_s")


def optimizer_factory(ocfg: dict) -> Callable[..., torch.optim.Optimizer]:
    """``params -> optimizer`` from the ``optimizer`` config group (Hydra's ``instantiate``).

    The group's ``_target_`` names the class and every other key except ``name`` (the
    runner's label) is a constructor argument, declared nowhere else: the constructors
    check their ranges and reject unknown keys.
    """
    from hydra.utils import instantiate

    args = {k: v for k, v in ocfg.items() if k != "name"}
    return instantiate({**args, "_partial_": True}, _convert_="all")


def communicates_itself(factory: Callable[..., torch.optim.Optimizer]) -> bool:
    """Whether the optimizer issues its own (counted) collectives: it takes ``comm``.
    Those that do not are the data-parallel baselines, wrapped in DDP."""
    import inspect

    return "comm" in inspect.signature(factory.func).parameters


def build_optimizer(ocfg: dict, model: torch.nn.Module, comm: Comm) -> torch.optim.Optimizer:
    """The optimizer of the ``optimizer`` config group on ``model``'s parameters; those that
    communicate themselves get ``comm``."""
    factory = optimizer_factory(ocfg)
    if communicates_itself(factory):
        return factory(model.parameters(), comm=comm)
    return factory(model.parameters())


def _threads_per_rank(world_size: int) -> int:
    # N ranks on one machine must share its cores; oversubscription costs far more
    # than it gains. torchrun users can set OMP_NUM_THREADS themselves.
    if "OMP_NUM_THREADS" in os.environ:
        return int(os.environ["OMP_NUM_THREADS"])
    local = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
    return max(1, (os.cpu_count() or 1) // local)


@torch.no_grad()
def evaluate(model: torch.nn.Module, ds: Dataset, device, batch_size: int) -> tuple[float, float]:
    """Mean cross-entropy and accuracy (%) on the test split."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    n = len(ds.test_y)
    for start in range(0, n, batch_size):
        x = to_float(ds.test_x[start : start + batch_size], ds.mean, ds.std, device)
        y = ds.test_y[start : start + batch_size].to(device)
        out = model(x)
        loss_sum += F.cross_entropy(out, y, reduction="sum").double()
        correct += (out.argmax(1) == y).sum()
    model.train(was_training)
    return loss_sum.item() / n, 100.0 * correct.item() / n


class EpochStats:
    """Per-epoch aggregates of the optimizer's per-step diagnostics (``last_info``)."""

    def __init__(self) -> None:
        self.infos: list[dict[str, Any]] = []

    def add(self, info: dict[str, Any] | None) -> None:
        if info:
            self.infos.append(info)

    def summary(self) -> dict[str, float]:
        if not self.infos:
            return {}
        out: dict[str, float] = {}
        for key, last in self.infos[-1].items():
            vals = [i[key] for i in self.infos if key in i]
            if isinstance(last, bool):
                out[key] = sum(bool(v) for v in vals)
                if key == "accepted":
                    out["rejected"] = len(vals) - out[key]
            elif isinstance(last, (int, float)) and key == "radius":
                out[key] = float(last)
            elif isinstance(last, (int, float)):
                finite = [float(v) for v in vals if math.isfinite(float(v))]
                out[key] = sum(finite) / len(finite) if finite else float("nan")
        return out


def train(cfg: dict, run_dir: str, ds: Dataset, *, rank: int = 0, world_size: int = 1) -> dict:
    """Train on this rank; returns the last epoch's metrics (rank 0) or {}."""
    torch.set_num_threads(_threads_per_rank(world_size))
    device = torch.device("cpu")
    if cfg["device"] in ("cuda", "auto") and torch.cuda.is_available():
        device = torch.device("cuda", torch.cuda.current_device())
    comm = Comm()
    seed = cfg["seed"]
    torch.manual_seed(seed)  # identical initial weights on every rank, no broadcast needed
    model = build_model(cfg["model"]["name"], ds.shape, ds.num_classes).to(device)
    opt_name = cfg["optimizer"]["name"]
    closure_style = opt_name in CLOSURE_OPTIMIZERS
    net = model
    if not communicates_itself(optimizer_factory(cfg["optimizer"])) and comm.world_size > 1:
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
    opt = build_optimizer(cfg["optimizer"], model, comm)
    overlap = cfg["overlap"] if opt_name == "apts" else 0.0

    logger = RunLogger(run_dir, enabled=rank == 0, progress=cfg.get("progress", True))
    logger.start(OmegaConf.create(cfg), n_params=count_parameters(model), world_size=world_size)
    aug_gen = torch.Generator(device="cpu")
    n_train = len(ds.train_y)
    t_start = time.perf_counter()
    final: dict[str, Any] = {}
    for epoch in range(1, cfg["epochs"] + 1):
        t0 = time.perf_counter()
        calls0, bytes0 = comm.total_calls(), comm.total_bytes()
        comm_s0 = comm.seconds["optimizer"]
        perm = epoch_permutation(n_train, seed, epoch)
        batches = [b for b in minibatches(perm, cfg["batch_size"]) if len(b) >= world_size]
        aug_gen.manual_seed(seed * 1_000_003 + epoch * 7919 + rank)
        stats = EpochStats()
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        samples = 0  # forward+backward passes over samples on this rank
        fwd_bwd_s = 0.0  # time in forward+backward (CPU clock; on CUDA it includes waits)
        epoch_samples = sum(len(b) for b in batches)
        model.train()
        bar = logger.progress(len(batches), f"epoch {epoch}/{cfg['epochs']}")
        for idx in batches:
            sidx = shard(idx, rank, world_size, overlap)
            x = to_float(ds.train_x[sidx], ds.mean, ds.std, device)
            y = ds.train_y[sidx].to(device, non_blocking=True)
            if cfg["dataset"].get("augment"):
                x = augment(x, aug_gen)
            if closure_style:
                counter = [0, 0.0]
                closure = _make_closure(model, opt, x, y, counter)
                loss = opt.step(closure)
                samples += counter[0]
                fwd_bwd_s += counter[1]
                stats.add(getattr(opt, "last_info", None))
            else:
                opt.zero_grad(set_to_none=True)
                t1 = time.perf_counter()
                loss = F.cross_entropy(net(x), y)
                loss.backward()
                fwd_bwd_s += time.perf_counter() - t1
                opt.step()
                samples += len(sidx)
            loss_sum += torch.as_tensor(loss, dtype=torch.float64, device=device).detach()
            bar.update(loss)
        bar.close()
        sync = getattr(opt, "synchronize", None)
        if sync is not None:
            sync()
        train_s = time.perf_counter() - t0
        # one reduction of the epoch's statistics (counted as "metrics", not optimizer traffic)
        buf = torch.stack(
            [loss_sum, torch.tensor(float(samples), dtype=torch.float64, device=device)]
        )
        comm.all_reduce(buf, op="sum", kind="metrics")
        train_loss = buf[0].item() / (world_size * max(1, len(batches)))
        grad_evals = buf[1].item() / max(1, epoch_samples)
        metrics: dict[str, Any] = {"epoch": epoch, "train_loss": train_loss}
        if rank == 0:
            val_loss, val_acc = evaluate(model, ds, device, cfg["eval_batch_size"])
            metrics.update(
                val_loss=val_loss,
                val_acc=val_acc,
                comm_calls=comm.total_calls() - calls0,
                comm_bytes=comm.total_bytes() - bytes0,
                comm_calls_total=comm.total_calls(),
                comm_bytes_total=comm.total_bytes(),
                grad_evals=grad_evals,
                steps=len(batches),
                wall_s=train_s,
                fwd_bwd_s=fwd_bwd_s,
                # blocking optimizer collectives (DDP's overlap with backward: not timed)
                comm_s=comm.seconds["optimizer"] - comm_s0,
                elapsed_s=time.perf_counter() - t_start,
            )
            # optimizer extras (radius, accepted/rejected, ...); the loop's own keys win
            metrics.update({k: v for k, v in stats.summary().items() if k not in metrics})
            logger.log_epoch(metrics, comm.snapshot())
            if cfg.get("checkpoint", True):
                logger.checkpoint(
                    {"epoch": epoch, "model": model.state_dict(), "optimizer": opt.state_dict()}
                )
            final = metrics
    logger.finish(final)
    return final


def _make_closure(
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    counter: list,
) -> Callable[[], torch.Tensor]:
    def closure() -> torch.Tensor:
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=False)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        counter[0] += len(y)
        counter[1] += time.perf_counter() - t0
        return loss

    return closure
