"""Our final accuracies beside the authors' published ones (arXiv 2502.05133)."""

from __future__ import annotations

import re

from apts.report.formatting import format_mean_std, format_range, markdown_table
from apts.report.groups import OPT_NAMES, Group, plotted_groups
from apts.report.runs import as_number

# Published validation accuracies (%), the authors' results: 100 epochs, |B| = 10000,
# 5% overlap. Keys: normalised dataset name -> [(optimizer, N or None, accuracy)].
PAPER_SETTING = "100 epochs, |B|=10000, 5% overlap"
PAPER = {
    "mnist": [
        ("adam", None, 98.03),
        ("apts", 2, 98.24),
        ("apts", 4, 97.33),
        ("apts", 6, 95.98),
    ],
    "cifar10": [
        ("adam", None, 53.88),
        ("apts", 2, 54.11),
        ("apts", 4, 53.70),
        ("apts", 6, 52.32),
    ],
}
PAPER_NAMES = {"mnist": "MNIST", "cifar10": "CIFAR-10"}

PAPER_HEADER = [
    "method",
    "published (%)",
    "ours: configuration",
    "ours (%)",
    "ours − published",
    "our epochs",
    "our overlap",
]


def normalise_dataset_name(name: str) -> str:
    """Lower case, letters and digits only ("CIFAR-10" -> "cifar10")."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


def paper_section(by_panel: dict[tuple[str, str], list[Group]], groups: list[Group]) -> list[str]:
    """Per dataset with a published number: the published accuracy of each method beside ours
    (mean ± std over seeds; an SGD/Adam sweep by its best lr), the difference, and our epochs
    and overlap where they differ from the paper's setting."""
    lines = ["## Comparison with the published numbers", ""]
    lines.append(
        f"Published: the authors' validation accuracy (%), {PAPER_SETTING}. Ours: mean ± std "
        "over seeds of the final validation accuracy; SGD/Adam sweeps by their best "
        "learning rate. Differences in epochs, |B| or overlap are shown beside each row."
    )
    lines.append("")
    best_only = {id(g) for g in plotted_groups(groups)}
    for (ds, model), gs in by_panel.items():
        key = normalise_dataset_name(ds)
        if key not in PAPER:
            published = ", ".join(PAPER_NAMES.values())
            lines += [
                f"- **{ds} / {model}**: no published number for this dataset (published: "
                f"{published}).",
                "",
            ]
            continue
        lines += [f"### {PAPER_NAMES[key]} ({ds} / {model})", ""]
        rows = []
        for opt, n, acc in PAPER[key]:
            ours = [
                g
                for g in gs
                if g.opt == opt and id(g) in best_only and (n is None or as_number(g.n) == n)
            ]
            rows += _paper_rows(opt, n, acc, ours)
        lines += markdown_table(PAPER_HEADER, rows)
        lines.append("")
    return lines


def _paper_rows(opt: str, n: int | None, acc: float, ours: list[Group]) -> list[list]:
    method = OPT_NAMES[opt] + (f" N={n}" if n is not None else "")
    if not ours:
        return [[method, f"{acc:.2f}", "not run", "–", "–", "–", "–"]]
    rows = []
    for g in ours:
        overlap = g.cfg.get("overlap", "?")
        ov = f"{as_number(overlap) * 100:g}%" if as_number(overlap) is not None else str(overlap)
        rows.append(
            [
                method,
                f"{acc:.2f}",
                g.label,
                format_mean_std(g.final_mean, g.final_std),
                f"{g.final_mean - acc:+.2f}",
                format_range([r.epochs_run for r in g.runs]),
                ov,
            ]
        )
    return rows
