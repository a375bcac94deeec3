"""Finding and reading run directories: what the runner wrote, nothing else.

A run directory holds ``config.yaml`` (the resolved config), ``metrics.jsonl`` (one
JSON object per epoch) and, once it ended, ``summary.json``. A directory is a run
when it holds a ``config.yaml`` or a ``metrics.jsonl``; one that cannot be used is a
:class:`Skipped` with a one-line reason.

``metrics.jsonl`` and ``summary.json`` are strict JSON: NaN and infinities are written
as ``null``. A line with a bare ``NaN``/``Infinity`` is not JSON and is skipped like any
malformed line; a ``null`` value is a missing one (an epoch whose ``val_acc`` is null has
no accuracy to report and is left out, other null metrics count as absent).

Accuracy: ``val_acc`` is measured on the validation split held out of the training set
(``dataset.val_size``) and ``test_acc`` on the test split. Every choice the report makes
reads :attr:`Run.acc` (validation); test accuracy is shown beside it. A run without a
validation split (``val_size=0``) is chosen on its test accuracy, and says so
(:attr:`Run.chosen_on`). Runs logged before the split existed have ``val_acc`` only, and it
was the test split: they are read as ``test_acc`` (and ``test_loss``).

``summary.json`` says how a run ended: ``status`` (``completed``, ``failed``,
``interrupted``, ``diverged``; ``running`` while it trains), ``epoch`` (the last complete
epoch) and, when it did not complete, a one-line ``reason`` (diverged runs also give the
``step``).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from apts.rundir.claim import with_implied
from apts.rundir.format import CONFIG, METRICS, SUMMARY, strict_loads

# Statuses of a run that ended without completing (summary.json "status").
NOT_COMPLETED = ("failed", "interrupted", "diverged")


def as_number(x: Any) -> float | None:
    """``x`` as a float when it is an int or float (not a bool), else None."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    return float(x)


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config as {"a.b.c": value}, lists and mappings made hashable."""
    out: dict[str, Any] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(flatten(v, f"{prefix}{k}."))
    else:
        out[prefix[:-1]] = hashable(d)
    return out


def hashable(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return tuple(hashable(x) for x in v)
    if isinstance(v, dict):
        return tuple(sorted((str(k), hashable(x)) for k, x in v.items()))
    return v


@dataclass
class Run:
    """One run directory: its config, its per-epoch records (sorted by epoch) and summary.

    Every record has ``_comm_total``: ``comm_calls_total`` when logged, else the
    running sum of ``comm_calls``.
    """

    path: Path
    display: str
    cfg: dict[str, Any]
    records: list[dict[str, Any]]
    summary: dict[str, Any] | None
    notes: list[str] = field(default_factory=list)

    @property
    def seed(self) -> Any:
        """The config's seed ("?" when it has none)."""
        return self.cfg.get("seed", "?")

    @property
    def planned_epochs(self) -> int | None:
        """The config's ``epochs``, or None when it has no number."""
        e = self.cfg.get("epochs")
        return int(e) if isinstance(e, (int, float)) and not isinstance(e, bool) else None

    @property
    def epochs(self) -> np.ndarray:
        """The logged epochs, ascending."""
        return np.array([r["epoch"] for r in self.records], dtype=float)

    @property
    def chosen_on(self) -> str:
        """``val`` when every logged epoch has a validation accuracy, else ``test``: the
        split whose accuracy :attr:`acc` is (runs without a validation split)."""
        return "val" if all("val_acc" in r for r in self.records) else "test"

    @property
    def acc(self) -> np.ndarray:
        """The accuracy (%) choices are made on, per logged epoch: validation (test for a
        run without a validation split, see :attr:`chosen_on`)."""
        return np.array([r[f"{self.chosen_on}_acc"] for r in self.records], dtype=float)

    @property
    def test_acc(self) -> np.ndarray:
        """Test accuracy (%) per logged epoch (NaN where it was not logged)."""
        return np.array([_number_or_nan(r.get("test_acc")) for r in self.records], dtype=float)

    @property
    def comm_total(self) -> np.ndarray:
        """Cumulative collectives at each logged epoch."""
        return np.array([r["_comm_total"] for r in self.records], dtype=float)

    @property
    def bytes_total(self) -> np.ndarray:
        """Cumulative bytes sent by collectives at each logged epoch."""
        return np.array([r["_bytes_total"] for r in self.records], dtype=float)

    def x_values(self, x: str) -> np.ndarray:
        """Per logged epoch: the epoch, cumulative collectives (``comm``) or bytes
        (``bytes``), cumulative training time in s (``wall``) or samples seen
        (``samples``)."""
        if x == "epoch":
            return self.epochs
        if x == "comm":
            return self.comm_total
        if x == "bytes":
            return self.bytes_total
        if x == "wall":
            return np.cumsum([as_number(r.get("wall_s")) or 0.0 for r in self.records])
        if x == "samples":
            return self.samples_seen
        raise ValueError(f"unknown x {x!r}")

    @property
    def samples_seen(self) -> np.ndarray:
        """Training samples drawn up to each logged epoch: ``samples_total`` when logged,
        else the running sum of ``steps`` × the global mini-batch (``batch_size``); NaN
        where neither is known."""
        if all(as_number(r.get("samples_total")) is not None for r in self.records):
            return np.array([r["samples_total"] for r in self.records], dtype=float)
        batch = as_number(self.cfg.get("batch_size"))
        steps = [as_number(r.get("steps")) for r in self.records]
        if batch is None or any(s is None for s in steps):
            return np.full(len(self.records), np.nan)
        return batch * np.cumsum(np.array(steps, dtype=float))

    @property
    def study(self) -> str | None:
        """The config's ``study`` (an ablation preset's name), None for other runs."""
        study = self.cfg.get("study")
        return None if study is None else str(study)

    @property
    def epochs_run(self) -> int:
        """The last logged epoch."""
        return int(self.records[-1]["epoch"])

    @property
    def final_acc(self) -> float:
        """The last logged epoch's :attr:`acc` (validation accuracy, %)."""
        return float(self.acc[-1])

    @property
    def final_test_acc(self) -> float:
        """The last logged epoch's test accuracy (%), NaN when not logged."""
        return float(self.test_acc[-1])

    @property
    def wall_s(self) -> float:
        """Training time: the sum of the per-epoch ``wall_s``."""
        return float(sum(as_number(r.get("wall_s")) or 0.0 for r in self.records))

    @property
    def completed(self) -> bool:
        """summary.json says ``completed``."""
        return self.summary is not None and self.summary.get("status") == "completed"

    @property
    def incomplete(self) -> bool:
        """Not completed, or fewer epochs logged than planned."""
        planned = self.planned_epochs
        return not self.completed or (planned is not None and self.epochs_run < planned)

    @property
    def ended(self) -> str | None:
        """summary.json's ``status`` (None without a summary)."""
        return None if self.summary is None else str(self.summary.get("status"))

    @property
    def status(self) -> str:
        """Either "complete", "failed|interrupted|diverged (k/n epochs)" or
        "incomplete (k/n epochs[, why])"."""
        if not self.incomplete:
            return "complete"
        planned = self.planned_epochs
        frac = f"{self.epochs_run}/{planned if planned is not None else '?'} epochs"
        if self.ended in NOT_COMPLETED:
            return f"{self.ended} ({frac})"
        if self.summary is None:
            if planned is not None and self.epochs_run >= planned:
                frac += ", no summary.json"
        elif not self.completed:
            frac += f", status {self.summary.get('status')!r}"
        return f"incomplete ({frac})"


@dataclass
class Skipped:
    """A run directory that could not be used, and why (one line); its config and
    summary.json when they could be read (a job that failed before its first epoch)."""

    display: str
    reason: str
    path: Path | None = None
    cfg: dict[str, Any] | None = None
    summary: dict[str, Any] | None = None


def find_run_dirs(root: Path) -> list[Path]:
    """Directories under ``root`` (itself included) with a config.yaml or metrics.jsonl."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if CONFIG in filenames or METRICS in filenames:
            found.append(Path(dirpath))
    return found


def _load_config(path: Path) -> dict[str, Any]:
    from omegaconf import OmegaConf

    cfg = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    if not isinstance(cfg, dict):
        raise ValueError("not a mapping")
    return with_implied(cfg)  # a run saved before a key existed groups with those after it


def _number_or_nan(x: Any) -> float:
    v = as_number(x)
    return math.nan if v is None else v


def _as_current(rec: dict[str, Any]) -> dict[str, Any]:
    """A metrics line in today's keys: a line from before the validation split has
    ``val_acc``/``val_loss`` but no ``test_acc``, and they were the test split's."""
    if "val_acc" in rec and "test_acc" not in rec:
        rec["test_acc"] = rec.pop("val_acc")
        if "val_loss" in rec:
            rec["test_loss"] = rec.pop("val_loss")
    return rec


def _read_records(lines: list[str], notes: list[str]) -> tuple[dict[int, dict], list[int]]:
    """The usable metrics lines by epoch (a later line wins) and the numbers of bad lines.

    A line whose choosing accuracy (``val_acc``, else ``test_acc``) is null is no accuracy
    to report: left out, with a note.
    """
    by_epoch: dict[int, dict[str, Any]] = {}
    bad_lines = []
    null_acc, null_keys = [], set()
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rec = strict_loads(line)
        except ValueError:
            bad_lines.append(i)
            continue
        if not isinstance(rec, dict) or as_number(rec.get("epoch")) is None:
            bad_lines.append(i)
            continue
        key = "val_acc" if "val_acc" in _as_current(rec) else "test_acc"
        if key in rec and rec[key] is None:
            null_acc.append(int(rec["epoch"]))
            null_keys.add(key)
            continue
        acc = as_number(rec.get(key))
        if acc is None or not math.isfinite(acc):
            bad_lines.append(i)
            continue
        ep = int(rec["epoch"])
        if ep in by_epoch:
            notes.append(f"epoch {ep} logged twice in {METRICS}; kept the later line")
        by_epoch[ep] = rec
    if null_acc:
        where = ", ".join(map(str, null_acc))
        keys = "/".join(sorted(null_keys))
        notes.append(f"{keys} null (not finite) at epoch {where}; left out")
    return by_epoch, bad_lines


def _bad_lines_note(bad_lines: list[int]) -> str:
    where = ", ".join(str(i) for i in bad_lines[:5]) + (" ..." if len(bad_lines) > 5 else "")
    if len(bad_lines) > 1:
        return f"skipped {len(bad_lines)} malformed line(s) of {METRICS} (line {where})"
    return f"skipped a malformed line of {METRICS} (line {where})"


def _add_comm_totals(records: list[dict[str, Any]]) -> None:
    """``_comm_total``/``_bytes_total``: the logged cumulative counts, or running sums of the
    per-epoch ones where a total is missing (older logs, null)."""
    for per_epoch, total_key, out in (
        ("comm_calls", "comm_calls_total", "_comm_total"),
        ("comm_bytes", "comm_bytes_total", "_bytes_total"),
    ):
        running = 0.0
        for r in records:
            total = as_number(r.get(total_key))
            running += as_number(r.get(per_epoch)) or 0.0
            r[out] = total if total is not None else running


def _read_summary(path: Path, notes: list[str]) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        summary = strict_loads(path.read_text())
        if not isinstance(summary, dict):
            raise ValueError
    except (ValueError, OSError):
        notes.append(f"{SUMMARY} unreadable; treated as missing")
        return None
    return summary


def load_run(path: Path, display: str) -> Run | Skipped:
    """Read one run directory; a :class:`Skipped` says in one line why it is unusable."""
    notes: list[str] = []
    summary = _read_summary(path / SUMMARY, notes)
    if not (path / CONFIG).is_file():
        return Skipped(display, f"no {CONFIG}", path, None, summary)
    try:
        cfg = _load_config(path / CONFIG)
    except Exception as e:  # noqa: BLE001 - any unreadable config is a skipped run
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return Skipped(display, f"unreadable {CONFIG}: {msg}", path, None, summary)
    metrics = path / METRICS
    if not metrics.is_file():
        return Skipped(display, f"{METRICS} missing", path, cfg, summary)
    try:
        lines = metrics.read_text(errors="replace").splitlines()
    except OSError as e:
        return Skipped(display, f"{METRICS} unreadable: {e.strerror or e}", path, cfg, summary)
    by_epoch, bad_lines = _read_records(lines, notes)
    if bad_lines:
        notes.append(_bad_lines_note(bad_lines))
    if not by_epoch:
        reason = f"{METRICS} empty" if not bad_lines else f"{METRICS} has no valid line"
        return Skipped(display, reason, path, cfg, summary)
    records = [by_epoch[e] for e in sorted(by_epoch)]
    _add_comm_totals(records)
    return Run(path, display, cfg, records, summary, notes)


def load_runs(paths: list[Path]) -> tuple[list[Run], list[Skipped], list[str]]:
    """Every run under ``paths``: (runs, skipped directories, problems with the paths).

    A run is named by its path relative to the parent of the root it was found under.
    """
    runs: list[Run] = []
    skipped: list[Skipped] = []
    problems: list[str] = []
    seen: set[Path] = set()
    for root in paths:
        if not root.exists():
            problems.append(f"{root}: no such directory")
            continue
        if not root.is_dir():
            problems.append(f"{root}: not a directory")
            continue
        base = root.resolve().parent
        for d in find_run_dirs(root):
            real = d.resolve()
            if real in seen:
                continue
            seen.add(real)
            display = os.path.relpath(real, base)
            item = load_run(d, display)
            (runs if isinstance(item, Run) else skipped).append(item)
    return runs, skipped, problems
