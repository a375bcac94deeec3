"""The jobs a Hydra multirun planned, and which of them left a run directory.

Hydra writes ``multirun.yaml`` (the composed config) into the sweep directory before it
launches the first job. The basic sweeper's grid is the cartesian product of
``hydra.sweeper.params`` (key -> ``"a,b,c"``) and the command-line overrides
``hydra.overrides.task`` (``key=value``; a value with top-level commas is a sweep; a
command-line key replaces the same key of ``params`` in place). Job ``i`` of that product
runs in ``<sweep dir>/<hydra.sweep.subdir>`` (by default ``<i>_<overrides>``) and
apts-train saves its overrides in ``overrides.yaml`` there (Hydra's own
``.hydra/overrides.yaml`` in older runs): that is how a job is matched to its directory.
Sweeps over ``range()``, ``choice()``, ``glob()`` or intervals are not expanded here:
their planned count is reported as unknown.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MULTIRUN = "multirun.yaml"
JOB_OVERRIDES = (Path("overrides.yaml"), Path(".hydra") / "overrides.yaml")


@dataclass
class Multirun:
    """One multirun directory: its planned jobs (override lists, in Hydra's job order) or
    why their number is unknown, and the job directories found in it."""

    path: Path
    display: str
    jobs: list[tuple[str, ...]] | None = None
    unknown: str = ""  # why the planned jobs are unknown
    sizes: list[tuple[str, int]] = field(default_factory=list)  # swept key -> its values
    job_dirs: dict[frozenset[str] | int, Path] = field(default_factory=dict)

    def job_dir(self, number: int, job: tuple[str, ...]) -> Path | None:
        """The directory of job ``number`` with overrides ``job``, or None."""
        return self.job_dirs.get(frozenset(job)) or self.job_dirs.get(number)


def find_multiruns(roots: list[Path]) -> list[Multirun]:
    """Every directory under ``roots`` (themselves included) with a multirun.yaml, named
    relative to the parent of its root like the runs, with its planned jobs."""
    found: list[Multirun] = []
    seen: set[Path] = set()
    for root in roots:
        if not root.is_dir():
            continue
        base = root.resolve().parent
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            real = Path(dirpath).resolve()
            if MULTIRUN in filenames and real not in seen:
                seen.add(real)
                found.append(read_multirun(Path(dirpath), os.path.relpath(real, base)))
    return found


def read_multirun(path: Path, display: str) -> Multirun:
    """The sweep in ``path``: planned jobs from multirun.yaml and the job directories."""
    from omegaconf import OmegaConf

    sweep = Multirun(path, display)
    try:
        cfg = OmegaConf.to_container(OmegaConf.load(path / MULTIRUN), resolve=False)
        hydra = cfg.get("hydra") if isinstance(cfg, dict) else None
        if not isinstance(hydra, dict):
            raise ValueError("no hydra section")
    except Exception as e:  # noqa: BLE001 - any unreadable file is reported, not raised
        sweep.unknown = f"{MULTIRUN} unreadable: {_first_line(e)}"
        return sweep
    _plan(sweep, hydra)
    subdir = str((hydra.get("sweep") or {}).get("subdir") or "")
    _find_job_dirs(sweep, numbered=subdir.startswith("${hydra.job.num}"))
    return sweep


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _plan(sweep: Multirun, hydra: dict[str, Any]) -> None:
    """Fill ``sweep.jobs`` (or ``sweep.unknown``) from the sweeper params and task overrides,
    parsed by Hydra's own override parser, in the basic sweeper's order."""
    import itertools

    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ValueType

    task = (hydra.get("overrides") or {}).get("task")
    params = (hydra.get("sweeper") or {}).get("params") or {}
    if not isinstance(task, list) or not isinstance(params, dict):
        sweep.unknown = f"{MULTIRUN} has no hydra.overrides.task list"
        return
    texts = [f"{k}={v}" for k, v in params.items()] + [str(t) for t in task]
    try:
        overrides = OverridesParser.create().parse_overrides(texts)
    except Exception as e:  # noqa: BLE001 - Hydra's parse errors vary; report the first line
        sweep.unknown = f"cannot parse the overrides: {_first_line(e)}"
        return
    choices: dict[str, list[str]] = {}
    for o in overrides:
        key = o.get_key_element()
        if not o.is_sweep_override():
            choices[key] = [f"{key}={o.get_value_element_as_str()}"]
        elif o.value_type == ValueType.SIMPLE_CHOICE_SWEEP:
            choices[key] = [f"{key}={v}" for v in o.sweep_string_iterator()]
        else:
            original = next((t for t in reversed(texts) if t.startswith(f"{key}=")), key)
            sweep.unknown = f"`{original}` is not a plain comma list"
            return
    sweep.sizes = [(k, len(v)) for k, v in choices.items() if len(v) > 1]
    sweep.jobs = [tuple(job) for job in itertools.product(*choices.values())]


def _find_job_dirs(sweep: Multirun, numbered: bool) -> None:
    """Map each job directory by its saved overrides, and (when the subdir starts with the
    job number, Hydra's default here) by that number."""
    from omegaconf import OmegaConf

    for d in sorted(p for p in sweep.path.iterdir() if p.is_dir() and p.name[:1] != "."):
        saved = next((d / f for f in JOB_OVERRIDES if (d / f).is_file()), None)
        if saved is not None:
            try:
                overrides = OmegaConf.to_container(OmegaConf.load(saved))
                if isinstance(overrides, list):
                    sweep.job_dirs[frozenset(map(str, overrides))] = d
            except Exception:  # noqa: BLE001, S112 - an unreadable file: match by number only
                pass
        m = re.match(r"(\d+)_", d.name)
        if numbered and m:
            sweep.job_dirs.setdefault(int(m.group(1)), d)
