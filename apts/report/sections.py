"""The main comparison's sections of report.md, each a list of markdown lines."""

from __future__ import annotations

import math

import numpy as np

from apts.report.formatting import (
    format_count,
    format_duration,
    format_number,
    format_range,
    format_seeds,
    format_to_target,
    markdown_table,
    plural,
    value_order,
)
from apts.report.groups import AUTO_TARGET_FACTOR, OPT_NAMES, OPT_ORDER, Group
from apts.report.runs import Run, Skipped

Panels = dict[tuple[str, str], list[Group]]


def what_was_run(
    runs: list[Run], skipped: list[Skipped], groups: list[Group], study_runs: list[Run]
) -> list[str]:
    """One line: how many runs and configurations, the datasets, models, optimizers (with
    their N), seeds and epochs; and how many runs belong to ablation studies."""
    studies = sorted({r.study for r in study_runs if r.study is not None})
    in_studies = (
        f"**Ablations:** {plural(len(study_runs), 'run')} in "
        f"{plural(len(studies), 'study', 'studies')} ({', '.join(studies)})."
    )
    if not runs:
        return [in_studies + (f" {len(skipped)} skipped." if skipped else "")]
    datasets = sorted({g.dataset for g in groups})
    models = sorted({g.model for g in groups})
    opts = []
    for o in sorted({g.opt for g in groups}, key=lambda o: (OPT_ORDER.get(o, 9), o)):
        ns = sorted({g.n for g in groups if g.opt == o}, key=value_order)
        opts.append(f"{OPT_NAMES.get(o, o)} (N={', '.join(map(str, ns))})")
    seeds = format_seeds([r.seed for r in runs], unique=True)
    epochs = format_range([r.epochs_run for r in runs])
    n_inc = sum(r.incomplete for r in runs)
    line = (
        f"**What was run:** {plural(len(runs), 'run')} in "
        f"{plural(len(groups), 'configuration')}"
        + (f" ({n_inc} incomplete)" if n_inc else "")
        + (f", {len(skipped)} skipped" if skipped else "")
        + f" — datasets: {', '.join(datasets)}; models: {', '.join(models)}; "
        + f"optimizers: {'; '.join(opts)}; seeds: {seeds}; epochs: {epochs}."
    )
    return [line, "", in_studies] if study_runs else [line]


FINAL_INTRO = (
    "Mean ± sample standard deviation over seeds of the last logged epoch's validation "
    "accuracy. *Epochs to target*: per seed the first epoch with validation accuracy ≥ the "
    "target, averaged over the seeds that reached it; *collectives to target*: the "
    "cumulative collectives (`comm_calls_total`) at that epoch, averaged the same way. "
    "*Total collectives* and *wall time* (sum of the per-epoch training time `wall_s`) "
    "are per run, averaged over seeds."
)


def final_accuracy_section(by_panel: Panels, targets: dict[tuple[str, str], float]) -> list[str]:
    """Per dataset/model one table: every configuration's final accuracy (mean ± std over
    seeds), epochs and collectives to the target accuracy, total collectives, wall time and
    whether its runs completed."""
    lines = ["## Final validation accuracy", "", FINAL_INTRO, ""]
    for (ds, model), gs in by_panel.items():
        t = targets[(ds, model)]
        ts = f"{t:.2f}%" if math.isfinite(t) else "target"
        lines += [f"### {ds} / {model} (" + (f"target {ts})" if math.isfinite(t) else "no target)")]
        lines.append("")
        header = [
            "configuration",
            "seeds",
            "epochs",
            "final val acc (%)",
            "final test acc (%)",
            f"epochs to {ts}",
            f"collectives to {ts}",
            "total collectives",
            "wall time / run",
            "status",
        ]
        lines += markdown_table(header, [_final_row(g, t) for g in gs])
        lines.append("")
    return lines


def _final_row(g: Group, target: float) -> list:
    epochs, comm = g.to_target(target) if math.isfinite(target) else ([], [])
    return [
        g.label,
        f"{len(g.runs)} ({format_seeds(g.seeds)})",
        format_range([r.epochs_run for r in g.runs]),
        g.val_cell(),
        g.test_cell(),
        format_to_target(epochs, len(g.runs), format_number),
        format_to_target(comm, len(g.runs), format_count),
        format_count(float(np.mean([r.comm_total[-1] for r in g.runs]))),
        format_duration(float(np.mean([r.wall_s for r in g.runs]))),
        g.status,
    ]


def plots_section(hidden: list[Group], no_comm: list[Group]) -> list[str]:
    """The figures with their captions: one line per method (which configuration stands
    for it), accuracy against time and samples, loss, accuracy against collectives."""
    lines = ["## Plots", ""]
    caption = (
        "One line per *method* (an optimizer at one global mini-batch size): its configuration "
        "(N, H, learning rate) with the highest mean final **validation** accuracy, the label "
        "saying how many it was chosen from (all of them are in the tables); a colour per "
        "method family, a line style per variant (DDP at a large or a small mini-batch, local "
        "steps with periodic averaging). Line: mean over seeds; band: min–max over seeds; "
        "dotted grey line: target accuracy; the accuracy axis starts 5 points below the lowest "
        "final accuracy."
    )
    lines += ["![Validation accuracy per epoch](val_acc.png)", "", caption, ""]
    lines += [
        "![Validation accuracy against training time and samples seen](acc_vs_cost.png)",
        "",
        "The same methods against cumulative training time (`wall_s`, this machine) and "
        "training samples seen (`samples_total`, or steps × |B|): APTS and Adam on one axis.",
        "",
        "![Training and validation loss](loss.png)",
        "",
        "The same methods' training loss (mean over each epoch) and validation loss, log scale.",
        "",
    ]
    lines += ["![Validation accuracy against cumulative collectives](acc_vs_comm.png)", ""]
    comm_caption = "Every configuration against the cumulative number of collectives, log scale" + (
        "; learning-rate sweeps (SGD/Adam, DDP and Local) by their best learning rate "
        "(highest mean final validation accuracy)."
        if hidden
        else "."
    )
    if no_comm:
        comm_caption += (
            " Not shown, because they recorded no collectives (single process, N=1): "
            + ", ".join(f"{g.label} ({g.dataset})" for g in no_comm)
            + "."
        )
    lines += [comm_caption, ""]
    return lines


def runs_section(groups: list[Group]) -> list[str]:
    """Every run that logged an epoch (studies' ones named by their study): its directory,
    configuration, seed, epochs, final accuracy, status and notes (malformed lines,
    duplicate epochs, null accuracies); a note for configurations with repeated seeds."""
    lines = ["## Runs", ""]
    rows = [
        [
            r.display,
            f"{g.dataset} / {g.model}",
            g.label if r.study is None else f"{r.study}: {g.label}",
            r.seed,
            r.epochs_run,
            f"{r.final_acc:.2f}" if r.chosen_on == "val" else "–",
            f"{r.final_test_acc:.2f}",
            r.status,
            "; ".join(r.notes) or "",
        ]
        for g in groups
        for r in g.runs
    ]
    header = ["run", "dataset / model", "configuration", "seed", "epochs"]
    header += ["final val acc (%)", "final test acc (%)", "status", "notes"]
    lines += markdown_table(header, rows)
    lines.append("")
    dup = [g for g in groups if len(set(map(str, g.seeds))) < len(g.runs)]
    for g in dup:
        lines.append(
            f"Note: {g.label} ({g.dataset}) has runs with the same seed "
            f"({', '.join(map(str, g.seeds))}); they are counted as separate runs."
        )
    if dup:
        lines.append("")
    return lines


def notes_section(target: float | None, target_notes: list[str] | None) -> list[str]:
    """How the target accuracy was chosen (``target_notes`` None: no comparison, no target)
    and the definitions behind the tables."""
    lines = ["## Notes", ""]
    if target_notes is None:
        pass
    elif target is not None:
        lines.append(f"- Target accuracy: {target:.2f}%, set with `--target`.")
    else:
        lines.append(
            f"- Target accuracy, chosen automatically per dataset/model as {AUTO_TARGET_FACTOR:g} "
            "× the lowest of the per-optimizer best mean final accuracies: a level every "
            "optimizer reaches with its best configuration, so *epochs/collectives to target* "
            "compare how quickly each gets there. Override with `--target ACC`."
        )
        lines += ["  " + n for n in target_notes]
    lines.append(
        "- Configurations: runs whose configs agree on every key except `seed` and keys that do "
        "not change training (device, progress, checkpoint, out_dir, eval_batch_size, "
        "micro_batch, data location, launcher); label parts beyond optimizer, N, lr and |B| "
        "show the keys that tell otherwise equal labels apart."
    )
    lines.append(
        "- A run *did not complete* when its `summary.json` says `failed`, `interrupted` or "
        "`diverged`, when it has none (killed, or still running), or when it logged fewer "
        "epochs than its config's `epochs`. Such runs are listed in *Run status* and *Runs* "
        "and left out of every accuracy table, plot and comparison (the *status* column of "
        "*Final validation accuracy* names the seeds left out)."
    )
    lines.append(
        "- A line of `metrics.jsonl` that is not strict JSON (a bare `NaN` included) or has "
        "no numeric `epoch` is skipped; an epoch whose `val_acc` is `null` (not finite) has "
        "no accuracy and is left out. Both are listed in the run's notes (table *Runs*)."
    )
    lines.append(
        "- Runs whose config sets `study` (ablation presets) appear only in *Ablations*, "
        "*Run status* and *Runs*."
    )
    lines.append("")
    return lines
