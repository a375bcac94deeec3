"""Run outputs, written by rank 0 only.

A run directory holds:

- ``config.yaml``: the resolved config;
- ``metrics.jsonl``: one strict-JSON object per epoch (epoch, train_loss, val_loss and
  val_acc on the validation split when there is one, test_loss, test_acc, comm_calls,
  comm_bytes, grad_evals, wall_s, optimizer extras such as the
  trust-region radius and accepted/rejected counts); a non-finite value is ``null``;
- ``tb/``: TensorBoard event files with the same scalars;
- ``train.log``: the log, with where the data came from (paths and md5 sums);
- ``summary.json``: ``{"status": "running", ...}`` while training (rewritten after each
  epoch), then how the run ended (:mod:`apts.runtime.outcome`), the last epoch's metrics
  and the data's provenance;
- ``checkpoint.pt``: everything needed to continue after the latest epoch
  (:mod:`apts.training.checkpoint`).

Files are replaced atomically and ``metrics.jsonl`` is appended a whole line at a time,
so an interrupted run leaves complete lines and no half-written file. A resumed run cuts
``metrics.jsonl`` back to its checkpoint's epoch and has TensorBoard drop later events.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from apts.rundir.format import (
    CONFIG,
    METRICS,
    atomic_write,
    fs_error,
    now,
    strict_dumps,
    strict_loads,
    write_summary,
)
from apts.training.provenance import provenance

log = logging.getLogger("apts")


class _Progress:
    def __init__(self, bar):
        self.bar = bar

    def update(self, loss) -> None:
        if self.bar is not None:
            self.bar.set_postfix(
                loss=f"{float(loss.detach() if hasattr(loss, 'detach') else loss):.4f}",
                refresh=False,
            )
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _keep_epochs(path: Path, last_epoch: int) -> list[dict[str, Any]]:
    """Cut metrics.jsonl back to the lines of epochs <= last_epoch (a resumed run); the
    records kept."""
    if not path.exists():
        return []
    kept, records = [], []
    for line in path.read_text().splitlines():
        try:
            rec = strict_loads(line)
            if int(rec["epoch"]) <= last_epoch:
                kept.append(line + "\n")
                records.append(rec)
        except (ValueError, KeyError, TypeError):
            break  # a torn last line
    atomic_write(path, lambda p: p.write_text("".join(kept)))
    return records


# TensorBoard tags: grouped by what they measure (loss/, acc/, comm/, time/, work/, tr/);
# a key not listed here goes to opt/<key> (an optimizer's own statistic).
TB_TAGS = {
    "train_loss": "loss/train",
    "val_loss": "loss/val",
    "test_loss": "loss/test",
    "val_acc": "acc/val",
    "test_acc": "acc/test",
    "comm_calls": "comm/calls",
    "comm_bytes": "comm/bytes",
    "comm_calls_total": "comm/calls_total",
    "comm_bytes_total": "comm/bytes_total",
    "comm_s": "time/comm",
    "wall_s": "time/epoch",
    "fwd_bwd_s": "time/fwd_bwd",
    "data_s": "time/data",
    "elapsed_s": "time/elapsed",
    "peak_mem_mb": "mem/peak_mb",
    "grad_evals": "work/grad_evals",
    "steps": "work/steps",
    "samples": "work/samples",
    "samples_total": "work/samples_total",
    "radius": "tr/radius",
    "rho": "tr/rho",
    "accepted": "tr/accepted",
    "rejected": "tr/rejected",
}
# also drawn against samples seen (step = samples_total), to compare methods whose
# epochs differ in steps on one axis
BY_SAMPLES = ("train_loss", "val_loss", "test_loss", "val_acc", "test_acc")


def tb_tag(key: str) -> str:
    """The TensorBoard tag of a metrics.jsonl key."""
    return TB_TAGS.get(key) or (f"tr/{key}" if key.startswith(("radius", "rho")) else f"opt/{key}")


def _hparams(cfg: dict[str, Any]) -> dict[str, Any]:
    """The config's scalar settings that define the run, flat (for TensorBoard's HParams)."""
    out: dict[str, Any] = {}

    def walk(d: dict, prefix: str) -> None:
        for k, v in d.items():
            if isinstance(v, dict):
                if k not in ("launcher", "hydra"):
                    walk(v, f"{prefix}{k}.")
            elif not k.startswith("_") and k not in HPARAMS_SKIPPED:
                out[prefix + k] = v if isinstance(v, (int, float, str, bool)) else str(v)

    walk(cfg, "")
    return out


HPARAMS_SKIPPED = {"out_dir", "resume", "progress", "checkpoint", "data_dir", "download"}


def _quiet_writer_thread(args: threading.ExceptHookArgs) -> None:
    """``threading.excepthook``: an exception of TensorBoard's writer thread (a full disk)
    is kept by the thread and raised again by the training thread's next write, which
    reports it in one line; the thread itself prints no traceback. Any other thread's
    exception goes to the previous hook."""
    if args.thread is not None and getattr(args.thread, "exception", None) is args.exc_value:
        if type(args.thread).__module__.startswith("tensorboard."):
            return
    _previous_excepthook(args)


_previous_excepthook = threading.excepthook


def tensorboard_writer(log_dir: str, **kwargs: Any):
    """TensorBoard's ``SummaryWriter`` on ``log_dir``; its writer thread's failure is the
    training thread's to report (:func:`_quiet_writer_thread`)."""
    global _previous_excepthook
    from torch.utils.tensorboard import SummaryWriter

    if threading.excepthook is not _quiet_writer_thread:
        _previous_excepthook, threading.excepthook = threading.excepthook, _quiet_writer_thread
    return SummaryWriter(log_dir=log_dir, **kwargs)


class RunLogger:
    """Writes a run's outputs; a no-op on ranks other than 0 (``enabled=False``)."""

    def __init__(self, run_dir: str | os.PathLike, *, enabled: bool = True, progress: bool = True):
        self.dir = Path(run_dir)
        self.enabled = enabled
        # a bar only on a terminal: piped or captured output gets one line per epoch
        self.show_progress = progress and enabled and sys.stderr.isatty()
        self.best: tuple[int, float] | None = None  # (epoch, val_acc) of the best epoch
        self.cfg: dict[str, Any] = {}
        self.started_at: str | None = None
        self.provenance: dict[str, Any] = {}
        self.writer = None
        self._handler: logging.Handler | None = None
        self.last_epoch = 0
        self.info: dict[str, Any] = {}

    def start(self, cfg: dict[str, Any], *, resume_epoch: int = 0, **info: Any) -> None:
        """Open the outputs: a fresh run, or a resumed one continuing after
        ``resume_epoch``. ``info`` (data source, sizes) goes to train.log and summary.json."""
        self.last_epoch = resume_epoch
        self.info = info
        if not self.enabled:
            return
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            for rec in _keep_epochs(self.dir / METRICS, resume_epoch):
                self._track_best(rec)
            handler = logging.FileHandler(self.dir / "train.log")
        except OSError as e:
            raise fs_error(self.dir, e) from None
        cfg = {**cfg, "resume": None}  # how this run was started is not part of it
        self.cfg = cfg
        self.started_at = now()
        self.provenance = provenance(
            device=str(info.get("device", cfg.get("device", "cpu"))),
            world_size=int(info.get("world_size", cfg.get("subdomains", 1))),
        )
        atomic_write(self.dir / CONFIG, lambda p: p.write_text(OmegaConf.to_yaml(cfg)))
        self._write_running()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        self._handler = handler
        if not logging.getLogger().handlers and not log.handlers[:-1]:
            # a spawned rank has no Hydra logging set up: echo to the console too
            log.addHandler(logging.StreamHandler(sys.stdout))
        # purge_step drops the events of epochs after the checkpoint (a resumed run)
        self.writer = tensorboard_writer(str(self.dir / "tb"), purge_step=resume_epoch + 1)
        if not resume_epoch:
            self.writer.add_text("config", "```\n" + OmegaConf.to_yaml(cfg) + "\n```")
        self.writer.add_text(
            "provenance", "```\n" + strict_dumps(self.provenance) + "\n```", resume_epoch
        )
        what = f"resumed after epoch {resume_epoch}" if resume_epoch else "started"
        log.info(
            "run %s %s: dataset=%s model=%s optimizer=%s subdomains=%s params=%s micro_batch=%s",
            self.dir,
            what,
            cfg["dataset"]["name"],
            cfg["model"]["name"],
            cfg["optimizer"]["name"],
            cfg["subdomains"],
            info.get("n_params"),
            info.get("micro_batch"),
        )
        for src in info.get("data", []):
            log.info("data: %s", " ".join(f"{k}={v}" for k, v in src.items()))

    def progress(self, total: int, desc: str) -> _Progress:
        if not self.show_progress:
            return _Progress(None)
        import threading

        from tqdm import tqdm

        # a thread lock, not tqdm's default multiprocessing one: a rank leaves through
        # os._exit, and a semaphore it created would be reported as leaked at shutdown
        tqdm.set_lock(threading.RLock())
        return _Progress(tqdm(total=total, desc=desc, leave=False, file=sys.stderr, ncols=100))

    def log_epoch(self, metrics: dict[str, Any], comm: dict[str, dict[str, Any]]) -> None:
        """Append the epoch's line to metrics.jsonl and its scalars to TensorBoard;
        ``comm``: ``comm_by_kind`` (this epoch) and ``comm_by_kind_total``, by kind."""
        if not self.enabled:
            return
        line = strict_dumps({**metrics, **comm})
        path = self.dir / METRICS
        try:
            with open(path, "a") as f:
                f.write(line + "\n")
        except OSError as e:
            raise fs_error(path, e) from None
        step = metrics["epoch"]
        self.last_epoch = step
        self._track_best(metrics)
        self._write_running()
        samples = metrics.get("samples_total")
        for key, value in metrics.items():
            if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(tb_tag(key), value, step)
                if key in BY_SAMPLES and samples is not None:
                    self.writer.add_scalar(f"by_samples/{tb_tag(key)}", value, int(samples))
        self.writer.flush()
        accs = "  ".join(
            f"{k}_loss {metrics[k + '_loss']:.4f}  {k}_acc {metrics[k + '_acc']:.2f}%"
            for k in ("val", "test")
            if k + "_acc" in metrics
        )
        log.info(
            "epoch %d  train_loss %.4f  %s  comm %d calls %.3g MB  %.1fs",
            step,
            metrics["train_loss"],
            accs,
            metrics["comm_calls"],
            metrics["comm_bytes"] / 1e6,
            metrics["wall_s"],
        )

    def _track_best(self, rec: dict[str, Any]) -> None:
        acc = rec.get("val_acc")
        if isinstance(acc, (int, float)) and (self.best is None or acc > self.best[1]):
            self.best = (int(rec["epoch"]), float(acc))

    def _add_hparams(self, final: dict[str, Any]) -> None:
        """The run's settings and final figures in TensorBoard's HParams view (a sweep's
        runs side by side: tensorboard --logdir <sweep dir>)."""
        metrics = {
            f"final/{k}": final[k]
            for k in ("val_acc", "test_acc", "val_loss", "comm_calls_total", "elapsed_s")
            if isinstance(final.get(k), (int, float))
        }
        if self.best is not None:
            metrics["final/best_val_acc"] = self.best[1]
            metrics["final/best_epoch"] = self.best[0]
        self.writer.add_hparams(_hparams(self.cfg), metrics, run_name=".")

    def final_line(self, status: str, final: dict[str, Any], reason: str) -> str:
        """The console's last line: how the run ended, what it reached, where it is."""
        parts = [f"{status} after epoch {self.last_epoch}{reason}"]
        reached = [
            f"{k} {final[k]:.2f}%"
            for k in ("val_acc", "test_acc")
            if isinstance(final.get(k), (int, float))
        ]
        if reached:
            parts.append(", ".join(reached))
        if self.best is not None:
            parts.append(f"best epoch {self.best[0]} (val_acc {self.best[1]:.2f}%)")
        return "; ".join(parts) + f"; run directory {self.dir}"

    def _write_running(self) -> None:
        """summary.json while the run trains (:func:`apts.rundir.format.write_summary`): how
        the run ends is recorded by whoever knows it (:mod:`apts.runtime`)."""
        fields: dict[str, Any] = {"pid": os.getpid(), "host": socket.gethostname()}
        if self.best is not None:
            fields["best_epoch"], fields["best_val_acc"] = self.best
        fields["started_at"] = self.started_at
        fields["provenance"] = self.provenance
        for key in ("data", "micro_batch"):
            if key in self.info:
                fields[key] = self.info[key]
        write_summary(self.dir, "running", **fields)

    def close(self, status: str, final: dict[str, Any] | None = None, reason: str = "") -> None:
        """Close the outputs, after logging how the training ended. Never raises."""
        if not self.enabled:
            return
        if self.writer is not None:
            try:
                if status == "completed" and final:
                    self._add_hparams(final)
                self.writer.close()
            except Exception:
                pass
        log.info("%s", self.final_line(status, final or {}, reason))
        if self._handler is not None:
            log.removeHandler(self._handler)
            self._handler.close()
            self._handler = None
