"""Time on a network: each configuration's runs projected onto typical interconnects.

Measured (on the machine the runs ran on): per epoch the compute time, ``wall_s −
comm_s`` (the training time outside blocking optimizer collectives), the number of
collectives ``comm_calls`` and the bytes they reduced ``comm_bytes``. Modelled: what
those collectives take on a link of latency α and bandwidth β, a ring all-reduce of b
bytes over N ranks costing 2(N−1)α + 2(N−1)/N·b/β (:mod:`apts.report.netcost`, with the
typical α and β of :data:`apts.report.netcost.LINKS`). A projected epoch is compute + the
modelled collectives; the time to the target is the sum of the projected epochs up to
the first one whose ``val_acc`` reaches it. Both are per seed, then averaged over the
seeds (the time to target over the seeds that reached it).

DDP SGD/Adam overlap their gradient all-reduces with the backward pass and time none of
them (``comm_s`` = 0): the projection adds all of them on top of ``wall_s``, an upper
bound (written "≤"). APTS and Local SGD/Adam block in their collectives, which are
timed and replaced by the model's.

The check of the model (``--net-bench``): a ``net.json`` of ``make bench-net`` holds
runs on shaped links with the link's measured α (half a 1-byte round trip) and β (a
20 MB transfer) and each run's per-epoch ``comm_s``, ``comm_calls`` and ``comm_bytes``;
the section sets the measured time in collectives against the model's prediction for
that link.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from apts.report.communication import communicating
from apts.report.formatting import format_number, format_to_target, markdown_table
from apts.report.groups import Group
from apts.report.netcost import LINKS, Link, collectives_time, format_seconds, project

Panels = dict[tuple[str, str], list[Group]]
DEFAULT_NET_BENCH = Path("outputs/bench/net.json")
# DDP: gradient all-reduces overlap the backward pass and are not timed
OVERLAPPED = ("sgd", "adam")
NETWORK_INTRO = (
    "What each configuration's epochs would take with its N ranks on separate machines "
    "joined by a network. *Measured* (on the machine the runs ran on): the compute time "
    "per epoch, `wall_s − comm_s` (training time outside blocking optimizer collectives), "
    "and the collectives' count and bytes (`comm_calls`, `comm_bytes`). *Modelled*: their "
    "time on each link, a ring all-reduce of b bytes over N ranks costing "
    "2(N−1)α + 2(N−1)/N·b/β (`apts/report/netcost.py`; α and β typical values, not measurements). "
    "Projected epoch = compute + modelled collectives, per seed, averaged over seeds; time "
    "to target = the projected epochs up to the first that reaches the target. "
    "The compute time is the one measured here, where all ranks shared this machine's "
    "cores. Single-process runs (no collectives) are left out."
)
DDP_NOTE = (
    "DDP (SGD/Adam) overlaps its gradient all-reduces with the backward pass and does not "
    "time them: its figures add all of them on top of its measured wall time, as if none "
    "were hidden, and are **upper bounds** (≤); its *compute* column is its whole measured "
    "wall time."
)
BENCH_HINT = (
    "No measurements on shaped links to check the model against: `make bench-net` (as "
    f"root) writes `{DEFAULT_NET_BENCH}`; `--net-bench PATH` reads another."
)

BENCH_CAPTION = (
    "Runs of `make bench-net` on links shaped with `tc tbf`, one network namespace per "
    "rank: rank 0's time in blocking optimizer collectives per epoch (waiting for slower "
    "ranks included) against the α-β prediction for the same collectives (count and bytes "
    "per epoch) on the link with its measured α (half a 1-byte round trip) and β (a 20 MB "
    "transfer). DDP's all-reduces overlap the backward pass and are not timed."
)


class NetBenchError(ValueError):
    """A net.json that cannot be used; the message is one line."""


@dataclass
class BenchRow:
    """One run of ``make bench-net``: what it was, its link as measured, and per epoch its
    collectives' count and bytes and the time in them (None: overlapped, not timed)."""

    model: str
    label: str
    n: int
    rate: str
    link: Link
    epochs: list[tuple[int, float, float | None]]


def _bench_row(r: dict[str, Any], links: dict[str, Link]) -> BenchRow:
    overlapped = bool(r["overlapped"])
    epochs = [
        (int(e["comm_calls"]), float(e["comm_bytes"]), None if overlapped else float(e["comm_s"]))
        for e in r["metrics"]
    ]
    if not epochs:
        raise ValueError(f"{r['label']} N={r['N']} at {r['rate']}: no epochs")
    if r["rate"] not in links:
        raise ValueError(f"{r['label']} N={r['N']}: rate {r['rate']!r} not among its links")
    return BenchRow(
        str(r["model"]), str(r["label"]), int(r["N"]), r["rate"], links[r["rate"]], epochs
    )


def load_net_bench(path: Path) -> list[BenchRow]:
    """The runs of a ``make bench-net`` result (``links``: rate, alpha_s,
    measured_bytes_per_s; ``rows``: model, label, N, rate, overlapped and per-epoch
    ``metrics`` with comm_calls, comm_bytes and, unless overlapped, comm_s); a
    :class:`NetBenchError` says in one line what is wrong with it."""
    fix = "rerun `make bench-net` (as root) or pass another --net-bench PATH"
    try:
        data = json.loads(path.read_text())
    except OSError as e:
        raise NetBenchError(f"--net-bench {path}: {e.strerror or e}") from None
    except ValueError as e:
        raise NetBenchError(f"--net-bench {path}: not JSON ({e}); {fix}") from None
    try:
        links = {
            lk["rate"]: Link(f"tbf {lk['rate']}", lk["alpha_s"], lk["measured_bytes_per_s"])
            for lk in data["links"]
        }
        rows = [_bench_row(r, links) for r in data["rows"]]
    except (KeyError, TypeError, ValueError) as e:
        what = f"missing {e}" if isinstance(e, KeyError) else str(e)
        raise NetBenchError(f"--net-bench {path}: not a bench-net result ({what}); {fix}") from None
    if not rows:
        raise NetBenchError(f"--net-bench {path}: no runs in it; {fix}")
    return rows


def bench_check(rows: list[BenchRow]) -> list[str]:
    """The table "measured vs predicted": per (model, method, N, link) the measured time in
    blocking collectives per epoch, the α-β prediction for its collectives on the link as
    measured, and their ratio (DDP's all-reduces are not timed: no ratio)."""
    out = []
    for r in rows:
        calls = np.mean([c for c, _, _ in r.epochs])
        pred = float(np.mean([collectives_time(c, b, r.n, r.link) for c, b, _ in r.epochs]))
        if r.epochs[0][2] is None:
            meas, ratio = "overlapped", "–"
        else:
            m = float(np.mean([s for _, _, s in r.epochs]))
            meas, ratio = f"{m:.3f}", (f"{m / pred:.2f}" if pred > 0 else "–")
        out.append([r.model, r.label, r.n, r.rate, f"{calls:g}", meas, f"{pred:.3f}", ratio])
    header = ["model", "method", "N", "link (tbf rate)", "collectives / epoch"]
    header += ["in collectives, measured (s/epoch)", "predicted (s/epoch)", "measured / predicted"]
    return markdown_table(header, out)


def projections(g: Group, link: Link, target: float) -> tuple[float, list[float]]:
    """``g`` on ``link``: the projected s/epoch averaged over seeds, and the projected
    times to ``target`` of the seeds that reach it."""
    tt = target if math.isfinite(target) else None
    ps = [project(r.records, int(g.n), link, tt, acc_key=f"{r.chosen_on}_acc") for r in g.runs]
    reached = [p.time_to_target_s for p in ps if p.time_to_target_s is not None]
    return float(np.mean([p.s_per_epoch for p in ps])), reached


def group_rows(g: Group, links: list[Link], target: float) -> tuple[list, list]:
    """``g``'s rows of the two tables: measured compute s/epoch, collectives and MB per
    epoch, projected s/epoch per link; epochs to ``target``, projected time to it per
    link. Raises KeyError, TypeError or ValueError when its logs lack a per-epoch
    ``wall_s``, ``comm_calls`` or ``comm_bytes``."""
    le = "≤ " if g.opt in OVERLAPPED else ""
    proj = [projections(g, lk, target) for lk in links]
    recs = [e for r in g.runs for e in r.records]
    compute = np.mean([float(e["wall_s"]) - float(e.get("comm_s") or 0.0) for e in recs])
    calls = np.mean([float(e["comm_calls"]) for e in recs])
    mb = np.mean([float(e["comm_bytes"]) / 1e6 for e in recs])
    per_epoch = [g.label, format_seconds(float(compute)), f"{calls:g}", f"{mb:.3g}"]
    per_epoch += [le + format_seconds(s) for s, _ in proj]
    epochs = g.to_target(target)[0] if math.isfinite(target) else []
    to_target = [g.label, format_to_target(epochs, len(g.runs), format_number)]
    to_target += [
        format_to_target(tt, len(g.runs), lambda x: le + format_seconds(x)) for _, tt in proj
    ]
    return per_epoch, to_target


def links_line(links: list[Link]) -> str:
    """The links projected onto, with their α and β."""
    each = []
    for lk in links:
        bits = lk.beta * 8
        rate = f"{bits / 1e9:g} Gbit/s" if bits >= 1e9 else f"{bits / 1e6:g} Mbit/s"
        each.append(f"{lk.name} (α = {lk.alpha * 1e6:g} µs, β = {rate})")
    return "Links (typical values): " + "; ".join(each) + "."


def network_section(
    plot_panels: Panels,
    targets: dict[tuple[str, str], float],
    bench: list[BenchRow] | None,
) -> list[str]:
    """Per dataset/model: each communicating configuration's measured compute time and
    collectives per epoch, its projected s/epoch on every link of :data:`LINKS` and its
    projected time to the target there (DDP: upper bounds, "≤"); then the check of the
    model against ``make bench-net``'s measurements, or how to make them."""
    links = list(LINKS.values())
    names = [lk.name for lk in links]
    lines = ["## Time on a network", "", NETWORK_INTRO, "", links_line(links), ""]
    if any(g.opt in OVERLAPPED for gs in plot_panels.values() for g in communicating(gs)):
        lines += [DDP_NOTE, ""]
    for (ds, model), gs in plot_panels.items():
        t = targets[(ds, model)]
        ts = f"{t:.2f}%" if math.isfinite(t) else "target"
        lines += [f"### {ds} / {model}", ""]
        epoch_rows, target_rows, unlogged = [], [], []
        for g in communicating(gs):
            try:
                per_epoch, to_target = group_rows(g, links, t)
            except (KeyError, TypeError, ValueError):  # older logs: no wall_s/comm_bytes
                unlogged.append(g.label)
                continue
            epoch_rows.append(per_epoch)
            target_rows.append(to_target)
        if epoch_rows:
            head = ["configuration", "compute s/epoch (measured)", "collectives / epoch"]
            head += ["MB reduced / epoch"]
            lines += ["Projected seconds per epoch:", ""]
            lines += [*markdown_table(head + names, epoch_rows), ""]
            lines += [f"Projected time to {ts} (s):", ""]
            head = ["configuration", f"epoch to {ts}"]
            lines += [*markdown_table(head + names, target_rows), ""]
        elif not unlogged:
            lines += ["No configuration with collectives here.", ""]
        if unlogged:
            why = "their metrics.jsonl lacks per-epoch wall_s, comm_calls or comm_bytes"
            lines += [f"Not projected ({why}): {', '.join(unlogged)}.", ""]
    lines += ["### Measured vs predicted (make bench-net)", ""]
    if bench is None:
        return [*lines, BENCH_HINT, ""]
    return [*lines, BENCH_CAPTION, "", *bench_check(bench), ""]
