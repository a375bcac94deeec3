"""Run outputs, written by rank 0 only.

A run directory holds:

- ``config.yaml``: the resolved config;
- ``metrics.jsonl``: one strict-JSON object per epoch (epoch, train_loss, val_loss and
  val_acc on the validation split when there is one, test_loss, test_acc, comm_calls,
  comm_bytes, grad_evals, wall_s, optimizer extras such as the
  trust-region radius and accepted/rejected counts); a non-finite value is ``null``;
- ``tb/``: TensorBoard event files with the same scalars;
- ``train.log``: the log, with where the data came from (paths and md5 sums);
- ``summary.json``: ``{"status": "running", ...}`` while training, then how the run ended
  (see :mod:`apts.rundir.claim`), the last epoch's metrics and the data's provenance;
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
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from apts.rundir.format import (
    CONFIG,
    ERROR_LOG,
    METRICS,
    SUMMARY,
    atomic_write,
    fs_error,
    strict_dumps,
    strict_loads,
    write_json,
)

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


def _keep_epochs(path: Path, last_epoch: int) -> None:
    """Cut metrics.jsonl back to the lines of epochs <= last_epoch (a resumed run)."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if int(strict_loads(line)["epoch"]) <= last_epoch:
                kept.append(line + "\n")
        except (ValueError, KeyError, TypeError):
            break  # a torn last line
    atomic_write(path, lambda p: p.write_text("".join(kept)))


class RunLogger:
    """Writes a run's outputs; a no-op on ranks other than 0 (``enabled=False``)."""

    def __init__(self, run_dir: str | os.PathLike, *, enabled: bool = True, progress: bool = True):
        self.dir = Path(run_dir)
        self.enabled = enabled
        self.show_progress = progress and enabled
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
            _keep_epochs(self.dir / METRICS, resume_epoch)
            handler = logging.FileHandler(self.dir / "train.log")
        except OSError as e:
            raise fs_error(self.dir, e) from None
        cfg = {**cfg, "resume": None}  # how this run was started is not part of it
        atomic_write(self.dir / CONFIG, lambda p: p.write_text(OmegaConf.to_yaml(cfg)))
        self._write_summary("running", pid=os.getpid(), host=socket.gethostname())
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        self._handler = handler
        if not logging.getLogger().handlers and not log.handlers[:-1]:
            # a spawned rank has no Hydra logging set up: echo to the console too
            log.addHandler(logging.StreamHandler(sys.stdout))
        from torch.utils.tensorboard import SummaryWriter

        # purge_step drops the events of epochs after the checkpoint (a resumed run)
        self.writer = SummaryWriter(log_dir=str(self.dir / "tb"), purge_step=resume_epoch + 1)
        if not resume_epoch:
            self.writer.add_text("config", "```\n" + OmegaConf.to_yaml(cfg) + "\n```")
        what = f"resumed after epoch {resume_epoch}" if resume_epoch else "started"
        log.info(
            "run %s %s: dataset=%s model=%s optimizer=%s subdomains=%s params=%s",
            self.dir,
            what,
            cfg["dataset"]["name"],
            cfg["model"]["name"],
            cfg["optimizer"]["name"],
            cfg["subdomains"],
            info.get("n_params"),
        )
        for src in info.get("data", []):
            log.info("data: %s", " ".join(f"{k}={v}" for k, v in src.items()))

    def progress(self, total: int, desc: str) -> _Progress:
        if not self.show_progress:
            return _Progress(None)
        from tqdm import tqdm

        return _Progress(tqdm(total=total, desc=desc, leave=False, file=sys.stderr, ncols=100))

    def log_epoch(self, metrics: dict[str, Any], comm: dict[str, dict[str, int]]) -> None:
        """Append the epoch's line to metrics.jsonl and its scalars to TensorBoard."""
        if not self.enabled:
            return
        line = strict_dumps({**metrics, "comm_by_kind": comm})
        path = self.dir / METRICS
        try:
            with open(path, "a") as f:
                f.write(line + "\n")
        except OSError as e:
            raise fs_error(path, e) from None
        step = metrics["epoch"]
        self.last_epoch = step
        for key, value in metrics.items():
            if key != "epoch" and isinstance(value, (int, float)):
                self.writer.add_scalar(key, value, step)
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

    def _write_summary(self, status: str, **fields: Any) -> None:
        summary = {"status": status, "epoch": self.last_epoch, **fields}
        if "data" in self.info:
            summary["data"] = self.info["data"]
        write_json(self.dir / SUMMARY, summary)

    def finish(self, status: str, final: dict[str, Any] | None = None, **fields: Any) -> None:
        """Record how the run ended (``status`` in :data:`apts.rundir.STATUSES`, a one-line
        ``reason`` unless it completed) and close the outputs. Never raises."""
        if not self.enabled:
            return
        try:
            self._write_summary(status, **fields, **(final or {}))
        except Exception as e:  # a full disk must not hide the run's own outcome
            log.error("could not write %s: %s", self.dir / SUMMARY, e)
        if self.writer is not None:
            try:
                self.writer.close()
            except Exception:
                pass
        reason = f": {fields['reason']}" if fields.get("reason") else ""
        log.info("%s after epoch %d%s: %s", status, self.last_epoch, reason, self.dir)
        if self._handler is not None:
            log.removeHandler(self._handler)
            self._handler.close()
            self._handler = None

    def error_log(self, text: str) -> None:
        """Write the traceback of a failure to error.log (best effort)."""
        if self.enabled:
            try:
                atomic_write(self.dir / ERROR_LOG, lambda p: p.write_text(text))
            except Exception:
                pass
