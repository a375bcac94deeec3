"""Run outputs, written by rank 0 only.

A run directory holds:

- ``config.yaml``: the resolved config;
- ``metrics.jsonl``: one JSON object per epoch (epoch, train_loss, val_loss,
  val_acc, comm_calls, comm_bytes, grad_evals, wall_s, optimizer extras such as
  the trust-region radius and accepted/rejected counts);
- ``tb/``: TensorBoard event files with the same scalars;
- ``train.log``: the log; ``summary.json``: written last, when the run completed;
- ``checkpoint.pt``: model and optimizer state after the latest epoch.

Files are replaced atomically (write to a temporary name, then rename) and
``metrics.jsonl`` is appended a whole line at a time, so an interrupted run
leaves complete lines and no half-written file.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

METRICS = "metrics.jsonl"
CONFIG = "config.yaml"
SUMMARY = "summary.json"

log = logging.getLogger("apts")


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


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


class RunLogger:
    """Writes a run's outputs; a no-op on ranks other than 0 (``enabled=False``)."""

    def __init__(self, run_dir: str | os.PathLike, *, enabled: bool = True, progress: bool = True):
        self.dir = Path(run_dir)
        self.enabled = enabled
        self.show_progress = progress and enabled
        self.writer = None

    def start(self, cfg: DictConfig, **info: Any) -> None:
        if not self.enabled:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / METRICS).unlink(missing_ok=True)
        for stale in (SUMMARY, "error.log"):
            (self.dir / stale).unlink(missing_ok=True)
        _atomic_write(self.dir / CONFIG, lambda p: p.write_text(OmegaConf.to_yaml(cfg)))
        handler = logging.FileHandler(self.dir / "train.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        self._handler = handler
        if not logging.getLogger().handlers and not log.handlers[:-1]:
            # a spawned rank has no Hydra logging set up: echo to the console too
            log.addHandler(logging.StreamHandler(sys.stdout))
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(self.dir / "tb"))
        self.writer.add_text("config", "```\n" + OmegaConf.to_yaml(cfg) + "\n```")
        log.info(
            "run %s: dataset=%s model=%s optimizer=%s subdomains=%s params=%s",
            self.dir,
            cfg.dataset.name,
            cfg.model.name,
            cfg.optimizer.name,
            info.get("world_size"),
            info.get("n_params"),
        )

    def progress(self, total: int, desc: str) -> _Progress:
        if not self.show_progress:
            return _Progress(None)
        from tqdm import tqdm

        return _Progress(tqdm(total=total, desc=desc, leave=False, file=sys.stderr, ncols=100))

    def log_epoch(self, metrics: dict[str, Any], comm: dict[str, dict[str, int]]) -> None:
        if not self.enabled:
            return
        line = json.dumps({**metrics, "comm_by_kind": comm})
        with open(self.dir / METRICS, "a") as f:
            f.write(line + "\n")
        step = metrics["epoch"]
        for key, value in metrics.items():
            if key != "epoch" and isinstance(value, (int, float)):
                self.writer.add_scalar(key, value, step)
        self.writer.flush()
        log.info(
            "epoch %d  train_loss %.4f  val_loss %.4f  val_acc %.2f%%  comm %d calls %.3g MB  %.1fs",  # noqa: E501
            step,
            metrics["train_loss"],
            metrics["val_loss"],
            metrics["val_acc"],
            metrics["comm_calls"],
            metrics["comm_bytes"] / 1e6,
            metrics["wall_s"],
        )

    def checkpoint(self, state: dict[str, Any]) -> None:
        if self.enabled:
            _atomic_write(self.dir / "checkpoint.pt", lambda p: torch.save(state, p))

    def finish(self, final: dict[str, Any]) -> None:
        if not self.enabled:
            return
        summary = {"status": "completed", **final}
        _atomic_write(self.dir / SUMMARY, lambda p: p.write_text(json.dumps(summary, indent=1)))
        self.writer.close()
        log.info("done: %s", self.dir)
        log.removeHandler(self._handler)
        self._handler.close()
