"""The section near the top of the report: runs that did not complete, and planned jobs
of a sweep that left no results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from apts.report.formatting import markdown_table, plural
from apts.report.groups import Group, config_key
from apts.report.multirun import Multirun
from apts.report.runs import NOT_COMPLETED, Run, Skipped, as_number
from apts.rundir.format import ERROR_LOG

STATUS_HEADER = ["run", "configuration", "status", "epoch reached", "reason"]
MISSING_HEADER = ["sweep", "job", "overrides", "missing"]


def _one_line(text: str, limit: int = 200) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _error_log_line(path: Path | None) -> str:
    """The last non-empty line of the run's error.log ("" without one)."""
    try:
        lines = (path / ERROR_LOG).read_text(errors="replace").splitlines() if path else []
    except OSError:
        return ""
    last = next((line for line in reversed(lines) if line.strip()), "")
    return _one_line(last)


def end_reason(summary: dict[str, Any] | None, path: Path | None, fallback: str) -> str:
    """Why a run ended early: summary.json's ``reason`` (diverged: with its ``step``), else
    the last line of error.log, else ``fallback``."""
    reason = (summary or {}).get("reason")
    if reason:
        text = _one_line(str(reason))
        step = as_number((summary or {}).get("step"))
        if (summary or {}).get("status") == "diverged" and step is not None:
            text += f" (step {step:g})"
        return text
    return _error_log_line(path) or fallback


def _epoch_reached(summary: dict[str, Any] | None, logged: int, planned: Any) -> str:
    epoch = as_number((summary or {}).get("epoch"))
    reached = int(epoch) if epoch is not None else logged
    total = as_number(planned)
    return f"{reached}/{int(total)}" if total is not None else str(reached)


def _run_row(r: Run, label: str) -> list[str]:
    if r.ended is None:
        fallback = "no summary.json: killed, or still running"
    elif r.ended in NOT_COMPLETED:
        fallback = "no reason recorded"
    elif r.completed:
        fallback = f"summary.json says completed, but {r.epochs_run} epochs logged"
    else:
        fallback = f"summary.json status {r.ended!r}: still running, or killed"
    status = r.ended if r.ended in NOT_COMPLETED else "incomplete"
    epoch = _epoch_reached(r.summary, r.epochs_run, r.cfg.get("epochs"))
    return [r.display, label, status, epoch, end_reason(r.summary, r.path, fallback)]


def _skipped_row(s: Skipped) -> list[str]:
    label = Group(config_key(s.cfg), []).label if s.cfg is not None else "–"
    ended = (s.summary or {}).get("status")
    status = str(ended) if ended in NOT_COMPLETED else "no results"
    epoch = _epoch_reached(s.summary, 0, (s.cfg or {}).get("epochs"))
    reason = end_reason(s.summary, s.path, s.reason)
    if reason != s.reason:
        reason += f"; {s.reason}"
    return [s.display, label, status, epoch, reason]


def _sweep_lines(sweep: Multirun, found: set[Path]) -> tuple[str, list[list[str]]]:
    """One line on what the sweep planned and found, and a row per missing job."""
    if sweep.jobs is None:
        here = sweep.path.resolve()
        n = sum(1 for d in found if d.parent == here)
        line = f"- `{sweep.display}`: planned count unknown ({sweep.unknown}); {n} jobs found."
        return line, []
    missing = []
    for number, job in enumerate(sweep.jobs):
        d = sweep.job_dir(number, job)
        if d is None or d.resolve() not in found:
            what = "no directory" if d is None else "directory without results"
            missing.append([sweep.display, str(number), " ".join(job), what])
    grid = " × ".join(f"{k} ({n})" for k, n in sweep.sizes) or "no swept key"
    line = (
        f"- `{sweep.display}`: {plural(len(sweep.jobs), 'job')} planned ({grid}), "
        f"{len(sweep.jobs) - len(missing)} found, {len(missing)} missing."
    )
    return line, missing


def status_section(
    runs: list[Run], skipped: list[Skipped], sweeps: list[Multirun], labels: dict[int, str]
) -> list[str]:
    """Every run that did not complete (status, epoch reached of the planned epochs, reason,
    directory), counted and left out of the accuracy tables; per Hydra sweep the planned
    jobs (from multirun.yaml), and those with no directory or no results."""
    lines = ["## Run status", ""]
    bad = [r for r in runs if r.incomplete]
    total = len(runs) + len(skipped)
    done = total - len(bad) - len(skipped)
    if not bad and not skipped:
        lines += [f"Every run completed ({plural(total, 'run')}).", ""]
    else:
        lines.append(
            f"{done} of {total} runs completed; {total - done} did not (below). A run that did "
            "not complete is counted here and in *Runs*, and left out of every accuracy table, "
            "plot and comparison."
        )
        lines.append("")
        rows = [_run_row(r, labels.get(id(r), "–")) for r in bad]
        rows += [_skipped_row(s) for s in skipped]
        lines += markdown_table(STATUS_HEADER, rows)
        lines.append("")
    if sweeps:
        found = {r.path.resolve() for r in runs}
        found |= {s.path.resolve() for s in skipped if s.path is not None}
        lines += ["Jobs planned by the Hydra sweeps (`multirun.yaml`):", ""]
        missing: list[list[str]] = []
        for sweep in sweeps:
            line, rows = _sweep_lines(sweep, found)
            lines.append(line)
            missing += rows
        lines.append("")
        if missing:
            lines += markdown_table(MISSING_HEADER, missing)
            lines.append("")
    return lines
