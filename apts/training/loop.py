"""The training loop: epochs, evaluation, checkpoints, resume, divergence. Optimizer-agnostic.

Three kinds of optimizer are driven here:

- ``sgd``/``adam``: data-parallel baselines under ``DistributedDataParallel``; the
  global mini-batch of ``batch_size`` is split across the ranks (no overlap) and
  DDP averages the gradients (one all-reduce per bucket, counted by a comm hook).
- ``prodigy``/``schedulefree_adamw``: the tuning-free baselines, under DDP like Adam;
  schedule-free's parameters are switched to its average x (``opt.eval()``) at each
  epoch's end, for evaluation and the checkpoint, and back (``opt.train()``) at the start
  of each epoch.
- ``local_sgd``/``local_adam``/``diloco``: each rank steps on its shard; the optimizer
  averages the parameters (DiLoCo: takes its outer step) itself every H steps and at the
  end of every epoch (``synchronize``).
- ``tr``/``apts``: closure optimizers that do their own (counted) collectives; each
  rank's closure computes the loss of its shard of the mini-batch (with APTS's
  overlap), zeroes the gradients and calls backward.

Every rank derives the same shuffled order from the seed: data is never sent.
Only rank 0 evaluates and writes (see :mod:`apts.training.logger`).

Divergence: a training loss that is not finite, or above ``max_loss``, stops the run
at the end of its epoch (all ranks learn it from the epoch's statistics reduction, so
they stop together) with :class:`Diverged`, naming the first such step. APTS and TR
never move to a non-finite trial point (a rejection), so for them it means the loss at
the kept point itself went bad.
"""

from __future__ import annotations

import math
import os
import resource
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from apts.data.dataset import Dataset, augment, epoch_permutation, minibatches, shard, to_float
from apts.errors import Diverged, one_line
from apts.models import count_parameters
from apts.training.checkpoint import gather_checkpoint, restore, save_checkpoint
from apts.training.logger import RunLogger
from apts.training.micro import forward_backward
from apts.training.setup import Setup, build

# metrics.jsonl keys that measure the machine (clocks, memory): everything else repeats
# exactly for a seed
TIMING_KEYS = ("wall_s", "elapsed_s", "fwd_bwd_s", "data_s", "comm_s", "peak_mem_mb")


def peak_memory_mb(device: torch.device) -> float:
    """This process's peak memory so far, in MiB: on CUDA the peak of torch's allocations,
    else the peak resident set size (Linux's ``ru_maxrss``, in KiB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _threads_per_rank(world_size: int) -> int:
    # N ranks on one machine must share its cores; oversubscription costs far more
    # than it gains. torchrun users can set OMP_NUM_THREADS themselves.
    if "OMP_NUM_THREADS" in os.environ:
        return int(os.environ["OMP_NUM_THREADS"])
    local = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
    return max(1, (os.cpu_count() or 1) // local)


@torch.no_grad()
def evaluate(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, ds: Dataset, device, batch_size: int
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy (%) on the uint8 images ``x`` with labels ``y``
    (one of ``ds``'s splits, normalised with its training statistics)."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    n = len(y)
    for start in range(0, n, batch_size):
        xb = to_float(x[start : start + batch_size], ds.mean, ds.std, device)
        yb = y[start : start + batch_size].to(device)
        out = model(xb)
        loss_sum += F.cross_entropy(out, yb, reduction="sum").double()
        correct += (out.argmax(1) == yb).sum()
    model.train(was_training)
    return loss_sum.item() / n, 100.0 * correct.item() / n


def eval_batch(cfg: dict, s: Setup, ds: Dataset) -> int:
    """Samples per evaluation forward pass: ``eval_batch_size``, or with ``auto`` the
    training micro-batch (the whole split when that is one chunk)."""
    size = cfg["eval_batch_size"]
    if size == "auto":
        size = s.micro_batch or max(len(ds.train_y), len(ds.test_y))
    return int(size)


def evaluate_splits(model: torch.nn.Module, ds: Dataset, device, batch_size: int) -> dict:
    """``val_loss``/``val_acc`` on the validation split (when the dataset has one) and
    ``test_loss``/``test_acc`` on the test split: choices are made on the first, the
    second is reported beside them."""
    out = {}
    splits = (("val", ds.val_x, ds.val_y), ("test", ds.test_x, ds.test_y))
    for name, x, y in splits:
        if x is not None:
            loss, acc = evaluate(model, x, y, ds, device, batch_size)
            out[f"{name}_loss"], out[f"{name}_acc"] = loss, acc
    return out


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


@dataclass
class EpochResult:
    """One rank's sums over an epoch (tensors stay on the device: no per-step sync)."""

    loss_sum: torch.Tensor
    samples: int = 0  # forward+backward passes over samples on this rank
    fwd_bwd_s: float = 0.0  # time in forward+backward (CPU clock; on CUDA it includes waits)
    data_s: float = 0.0  # time taking the shard out of the data: index, normalise, augment
    stats: EpochStats = field(default_factory=EpochStats)
    first_bad: torch.Tensor | None = None  # first step with a bad loss, -1 if none


def batch_size_now(opt: torch.optim.Optimizer, batch_size: int, n: int) -> int:
    """The mini-batch size the optimizer asks for now: min(⌊|B|·factor⌋, n), the factor
    being its ``batch_size_factor`` (APTS's ``batch_growth``; 1 for every other one)."""
    return min(int(batch_size * float(getattr(opt, "batch_size_factor", 1.0))), n)


def epoch_batches(
    perm: torch.Tensor, batch_size: int, opt: torch.optim.Optimizer, world: int, taken: list
) -> Iterator[torch.Tensor]:
    """The epoch's mini-batches: consecutive slices of ``perm``, each as large as the
    optimizer asks for just before it (:func:`batch_size_now`), so the decision stays in the
    optimizer and a change takes effect at the next mini-batch. Slices smaller than the
    world are skipped; every one yielded is appended to ``taken``. With a factor of 1 these
    are exactly ``minibatches(perm, batch_size)``."""
    pos = 0
    while pos < len(perm):
        size = batch_size_now(opt, batch_size, len(perm))
        idx = perm[pos : pos + size]
        pos += size
        if len(idx) >= world:
            taken.append(idx)
            yield idx


def run_epoch(
    s: Setup, cfg: dict, ds: Dataset, epoch: int, batches: Iterable[torch.Tensor], bar
) -> EpochResult:
    """Train one epoch on this rank's shards of ``batches``."""
    rank, world = s.comm.rank, s.comm.world_size
    dev = s.device
    aug_gen = torch.Generator(device="cpu")
    aug_gen.manual_seed(cfg["seed"] * 1_000_003 + epoch * 7919 + rank)
    max_loss = cfg.get("max_loss")
    limit = torch.tensor(math.inf if max_loss is None else float(max_loss), device=dev)
    res = EpochResult(torch.zeros((), dtype=torch.float64, device=dev))
    res.first_bad = torch.full((), -1, dtype=torch.int64, device=dev)
    s.model.train()
    switch_mode(s.opt, "train")
    for step, idx in enumerate(batches, start=1):
        t0 = time.perf_counter()
        sidx = shard(idx, rank, world, s.overlap)
        x = to_float(ds.train_x[sidx], ds.mean, ds.std, dev)
        y = ds.train_y[sidx].to(dev, non_blocking=True)
        if cfg["dataset"].get("augment"):
            x = augment(x, aug_gen)
        res.data_s += time.perf_counter() - t0
        if s.closure_style:
            counter = [0, 0.0]
            loss = s.opt.step(_make_closure(s.model, s.opt, x, y, counter, s.micro_batch))
            res.samples += counter[0]
            res.fwd_bwd_s += counter[1]
            res.stats.add(getattr(s.opt, "last_info", None))
        else:
            s.opt.zero_grad(set_to_none=True)
            t1 = time.perf_counter()
            loss = forward_backward(s.net, x, y, s.micro_batch)
            res.fwd_bwd_s += time.perf_counter() - t1
            s.opt.step()
            res.samples += len(sidx)
        loss = torch.as_tensor(loss, dtype=torch.float64, device=dev).detach()
        res.loss_sum += loss
        bad = ~(torch.isfinite(loss) & (loss <= limit)) & (res.first_bad < 0)
        res.first_bad = torch.where(bad, step, res.first_bad)
        bar.update(loss)
    bar.close()
    sync = getattr(s.opt, "synchronize", None)  # local SGD/Adam: evaluate the average
    if sync is not None:
        sync()
    switch_mode(s.opt, "eval")
    return res


def switch_mode(opt: torch.optim.Optimizer, mode: str) -> None:
    """``opt.train()``/``opt.eval()`` for optimizers that keep a training point apart from
    the point to evaluate and save (schedule-free: y and x); no-op for the others."""
    switch = getattr(opt, mode, None)
    if callable(switch):
        switch()


def reduce_epoch(s: Setup, res: EpochResult, cfg: dict, epoch: int, n_batches: int) -> tuple:
    """Mean training loss and passes per sample over all ranks: one ``metrics`` all-reduce
    (a second one only when some rank saw a bad loss, to find the first step)."""
    dev = s.device
    buf = torch.stack(
        [
            res.loss_sum,
            torch.tensor(float(res.samples), dtype=torch.float64, device=dev),
            (res.first_bad >= 0).to(torch.float64),
        ]
    )
    s.comm.all_reduce(buf, op="sum", kind="metrics")
    loss_sum, samples, n_bad = buf.tolist()
    if n_bad > 0:
        first = torch.where(res.first_bad >= 0, -res.first_bad, -(1 << 62)).to(torch.float64)
        s.comm.all_reduce(first.reshape(1), op="max", kind="metrics")
        raise Diverged(epoch, int(-first.item()), cfg.get("max_loss"))
    return loss_sum / (s.comm.world_size * max(1, n_batches)), samples


def train(
    cfg: dict,
    run_dir: str,
    ds: Dataset,
    *,
    rank: int = 0,
    world_size: int = 1,
    resume: dict | None = None,
) -> dict:
    """Train on this rank (from ``resume``, a checkpoint, if given); returns the last
    epoch's metrics on rank 0, {} elsewhere. A run that cannot go on raises: diverged
    (:class:`~apts.errors.Diverged`), interrupted (:class:`~apts.errors.Interrupted`) or
    anything else; the caller records how it ended (:mod:`apts.runtime`)."""
    torch.set_num_threads(_threads_per_rank(world_size))
    s = build(cfg, ds)
    start = 0
    if resume is not None:
        restore(resume, rank=rank, model=s.model, opt=s.opt, comm=s.comm)
        start = resume["epoch"]
    logger = RunLogger(run_dir, enabled=rank == 0, progress=cfg.get("progress", True))
    logger.start(
        cfg,
        resume_epoch=start,
        n_params=count_parameters(s.model),
        data=getattr(ds, "source", []),
        device=str(s.device),
        world_size=world_size,
        micro_batch=s.micro_batch,  # the chunk micro_batch resolved to (None: one chunk)
    )
    try:
        final = _epochs(s, cfg, ds, logger, run_dir, start, resume)
    except BaseException as e:
        logger.close("stopped", reason=f": {one_line(e)}")
        raise
    logger.close("completed", final)
    return final


def _since(counts: dict, before: dict) -> dict:
    """Collective counters (``{"calls": {kind: n}, "bytes": {...}}``) less ``before``."""
    return {
        what: {k: n - before.get(what, {}).get(k, 0) for k, n in by.items()}
        for what, by in counts.items()
    }


def _epoch_record(s: Setup, ds: Dataset, cfg: dict, epoch, res, batches, samples, counters):
    """Rank 0's metrics line of an epoch (the loop adds loss and timings): the splits'
    accuracy and loss, this epoch's and the run's collectives, passes per sample, and the
    optimizer's own figures (radius, accepted/rejected, ...; the loop's keys win)."""
    comm = s.comm
    calls0, bytes0, comm_s0 = counters
    drawn = sum(len(b) for b in batches)  # the same every epoch
    rec = {
        "epoch": epoch,
        "train_loss": None,
        **evaluate_splits(s.model, ds, s.device, eval_batch(cfg, s, ds)),
        "comm_calls": comm.total_calls() - calls0,
        "comm_bytes": comm.total_bytes() - bytes0,
        "comm_calls_total": comm.total_calls(),
        "comm_bytes_total": comm.total_bytes(),
        "grad_evals": samples / max(1, drawn),
        "steps": len(batches),
        "samples": drawn,
        "samples_total": drawn * epoch,
        "wall_s": None,
        "fwd_bwd_s": res.fwd_bwd_s,
        "data_s": res.data_s,
        # blocking optimizer collectives (DDP's overlap with backward: not timed)
        "comm_s": comm.seconds["optimizer"] - comm_s0,
        "elapsed_s": None,
        "peak_mem_mb": peak_memory_mb(s.device),
    }
    rec.update({k: v for k, v in res.stats.summary().items() if k not in rec})
    return rec


def _epochs(s: Setup, cfg: dict, ds: Dataset, logger, run_dir, start, resume) -> dict:
    comm, rank = s.comm, s.comm.rank
    elapsed0 = resume["elapsed_s"] if resume is not None else 0.0
    t_start = time.perf_counter()
    final: dict[str, Any] = {}
    # comm_by_kind counts since the previous line: epoch 1 includes the start-up's
    # collectives, later epochs (resumed ones too) the previous epoch's checkpoint gather
    by_kind0 = (resume.get("comm_logged") or comm.snapshot()) if start else {}
    for epoch in range(start + 1, cfg["epochs"] + 1):
        t0 = time.perf_counter()
        calls0, bytes0 = comm.total_calls(), comm.total_bytes()
        comm_s0 = comm.seconds["optimizer"]
        perm = epoch_permutation(len(ds.train_y), cfg["seed"], epoch)
        batches: list[torch.Tensor] = []  # filled as the epoch takes them
        planned = len(minibatches(perm, batch_size_now(s.opt, cfg["batch_size"], len(perm))))
        bar = logger.progress(planned, f"epoch {epoch}/{cfg['epochs']}")
        todo = epoch_batches(perm, cfg["batch_size"], s.opt, comm.world_size, batches)
        res = run_epoch(s, cfg, ds, epoch, todo, bar)
        train_s = time.perf_counter() - t0
        train_loss, samples = reduce_epoch(s, res, cfg, epoch, len(batches))
        elapsed = elapsed0 + time.perf_counter() - t_start
        if rank == 0:
            counters = (calls0, bytes0, comm_s0)
            final = _epoch_record(s, ds, cfg, epoch, res, batches, samples, counters)
            final.update(train_loss=train_loss, wall_s=train_s, elapsed_s=elapsed)
            by_kind = comm.snapshot()
            logger.log_epoch(
                final, {"comm_by_kind": _since(by_kind, by_kind0), "comm_by_kind_total": by_kind}
            )
            by_kind0 = by_kind
        if cfg.get("checkpoint", True):
            ckpt = gather_checkpoint(
                comm,
                epoch=epoch,
                cfg=cfg,
                model=s.model,
                opt=s.opt,
                elapsed_s=elapsed,
                logged=by_kind0,
            )
            if ckpt is not None:
                save_checkpoint(run_dir, ckpt)
    return final


def _make_closure(
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    counter: list,
    chunk: int | None,
) -> Callable[[], torch.Tensor]:
    def closure() -> torch.Tensor:
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=False)
        loss = forward_backward(model, x, y, chunk)
        counter[0] += len(y)
        counter[1] += time.perf_counter() - t0
        return loss

    return closure
