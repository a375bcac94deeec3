"""Hand-written run directories in the runner's format, for the apts-report tests.

Every number a test expects is computed by hand from the values passed here: a run's
epoch ``i`` logs ``val_acc = accs[i-1]`` (``test_acc`` that minus 1, unless ``test_accs``
gives it; ``split="none"``: no validation split, ``accs`` are test accuracies; ``"legacy"``:
the format from before the split, ``val_acc`` holding the test split's accuracy),
``comm_calls = comm[i-1]`` (or ``comm`` every epoch), ``comm_bytes = bytes_per_call *
comm_calls`` and the running totals.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from apts import report

OPTIMIZERS = {
    "apts": {"name": "apts", "local_iters": 3, "global_iters": 3, "gamma": 0.001},
    "adam": {"name": "adam", "lr": 0.001},
    "sgd": {"name": "sgd", "lr": 0.01},
    "local_adam": {"name": "local_adam", "lr": 0.001, "sync_every": 13},
    "local_sgd": {"name": "local_sgd", "lr": 0.01, "sync_every": 13},
    "diloco": {"name": "diloco", "lr": 0.001, "sync_every": 13, "outer_lr": 0.7},
    "prodigy": {"name": "prodigy", "lr": 1.0},
    "schedulefree_adamw": {"name": "schedulefree_adamw", "lr": 0.0025},
}


def config(optimizer: str = "apts", **overrides: Any) -> dict[str, Any]:
    """A resolved config; ``overrides`` as flat keys: ``optimizer__lr=0.1``, ``seed=1``."""
    cfg: dict[str, Any] = {
        "seed": 0,
        "subdomains": 2,
        "epochs": 4,
        "batch_size": 10000 if optimizer == "apts" else 128,
        "overlap": 0.05 if optimizer == "apts" else 0.0,
        "device": "cpu",
        "progress": False,
        "study": None,
        "dataset": {"name": "mnist", "data_dir": "data", "val_size": 5000},
        "model": {"name": "fcnn"},
        "optimizer": dict(OPTIMIZERS[optimizer]),
        "launcher": {"name": "local"},
    }
    for key, value in overrides.items():
        *parents, leaf = key.split("__")
        node = cfg
        for p in parents:
            node = node[p]
        node[leaf] = value
    return cfg


def write_run(
    d: Path,
    cfg: dict[str, Any],
    accs: list[float | None],
    *,
    comm: int | list[int] = 36,
    bytes_per_call: int = 1000,
    wall: float = 1.0,
    comm_s: float | None = None,
    status: str | None = "completed",
    summary: dict[str, Any] | None = None,
    extra_lines: list[str] = (),
    test_accs: list[float | None] | None = None,
    split: str = "val",
) -> Path:
    """A run directory: config.yaml, metrics.jsonl (one line per entry of ``accs``; None is
    written as null; every epoch ``wall_s = wall`` and, unless None, ``comm_s``) and
    summary.json with ``status`` (None: no summary)."""
    d.mkdir(parents=True, exist_ok=True)  # a Hydra job directory may exist already
    (d / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    lines, calls_total = [], 0
    per_epoch = comm if isinstance(comm, list) else [comm] * len(accs)
    for i, acc in enumerate(accs, start=1):
        calls_total += per_epoch[i - 1]
        test = test_accs[i - 1] if test_accs is not None else None if acc is None else acc - 1
        accs_of = {"val": {"val_acc": acc, "test_acc": test}, "none": {"test_acc": acc}}
        rec = {
            "epoch": i,
            "train_loss": 1.0 / i,
            **accs_of.get(split, {"val_acc": acc}),
            "comm_calls": per_epoch[i - 1],
            "comm_bytes": bytes_per_call * per_epoch[i - 1],
            "comm_calls_total": calls_total,
            "comm_bytes_total": bytes_per_call * calls_total,
            "wall_s": wall,
        }
        if comm_s is not None:
            rec["comm_s"] = comm_s
        lines.append(json.dumps(rec))
    (d / "metrics.jsonl").write_text("\n".join([*lines, *extra_lines]) + "\n")
    if status is not None:
        info = {"status": status, "epoch": len(accs), **(summary or {})}
        (d / "summary.json").write_text(json.dumps(info))
    return d


def write_multirun(sweep: Path, task: list[str], params: dict[str, str] | None = None) -> None:
    """The parts of Hydra's multirun.yaml the report reads."""
    sweep.mkdir(parents=True, exist_ok=True)
    hydra = {
        "sweep": {"dir": str(sweep), "subdir": "${hydra.job.num}_${hydra.job.override_dirname}"},
        "sweeper": {"params": params},
        "overrides": {"hydra": [f"hydra.sweep.dir={sweep}"], "task": task},
        "mode": "MULTIRUN",
    }
    (sweep / "multirun.yaml").write_text(yaml.safe_dump({"hydra": hydra}, sort_keys=False))


def job_dir(sweep: Path, number: int, overrides: list[str]) -> Path:
    """A job directory as Hydra names it, with its .hydra/overrides.yaml."""
    d = sweep / f"{number}_{','.join(sorted(overrides))}"
    (d / ".hydra").mkdir(parents=True)
    (d / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    return d


def build(tree: Path, out: Path, *extra: str) -> str:
    """Run apts-report on ``tree``; the text of report.md."""
    assert report.main([str(tree), "--out", str(out), *extra]) == 0
    return (out / "report.md").read_text()


def section(md: str, heading: str) -> str:
    """The text from a heading line starting with ``heading`` to the next heading as deep."""
    lines = md.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(heading))
    level = len(heading) - len(heading.lstrip("#"))
    end = next(
        (
            i
            for i in range(start + 1, len(lines))
            if (m := re.match(r"^(#+) ", lines[i])) and len(m.group(1)) <= level
        ),
        len(lines),
    )
    return "\n".join(lines[start:end])


def _cells(line: str) -> list[str]:
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line)[1:-1]]


def table(text: str) -> list[dict[str, str]]:
    """Rows of the markdown tables in ``text`` as {header: cell}."""
    out, header = [], None
    for line in text.splitlines():
        if not line.startswith("|"):
            header = None
        elif header is None:
            header = _cells(line)
        elif not set(line) <= set("|-"):
            out.append(dict(zip(header, _cells(line), strict=True)))
    return out


def row(text: str, first: str) -> dict[str, str]:
    """The one table row whose first cell is ``first``."""
    found = [r for r in table(text) if next(iter(r.values())) == first]
    assert len(found) == 1, (first, [next(iter(r.values())) for r in table(text)])
    return found[0]
