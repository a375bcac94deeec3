"""Benchmark: time to a validation accuracy on the CIFAR-10 subset, side by side.

APTS, DDP Adam, Local Adam and DiLoCo train the same model on the real CIFAR-10 subset
(``../shared/data/cifar10-dev``: 3585 training images after the 500 held out for
validation) at the settings of the ``dev_cifar10_*`` presets (N = 2; APTS |B| = 1000, the
others |B| = 128), each through the real runner (``apts-train``, a process of its own).
For each, from its ``metrics.jsonl``, up to the first epoch whose validation accuracy
reaches the target:

- the training wall time measured here, the collectives issued, and the forward+backward
  passes per training sample;
- the same time projected onto a 1 GbE and a 100 Gb/s link (:mod:`apts.report.netcost`:
  this machine's compute plus the α-β cost of the run's own collectives; DDP overlaps its
  all-reduces with the backward pass, so its figure is an upper bound, marked ≤).

The target is ``--target`` (%), or by default 90% of the best validation accuracy any
method reached (near convergence; a method that never gets there says so). Choices and
target use the validation split; test accuracy is shown beside. ``--runs tta.json``
summarises the runs of an earlier call again (another target) without training.
Figures, not assertions.

    python -m benchmarks.bench_tta       # cnn, 20 epochs: outputs/bench/tta.{json,md}
    python -m benchmarks.bench_tta --epochs 5 --model fcnn --target 30
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from apts.report.netcost import LINKS, format_seconds, project
from benchmarks.bench import machine, train

ROOT = Path(__file__).resolve().parents[1]
# label -> the dev_cifar10_<preset> experiment; DDP's collectives overlap its backward
METHODS = {"APTS": "apts", "Adam (DDP)": "adam", "Local Adam": "local_adam", "DiLoCo": "diloco"}
OVERLAPPED = {"adam"}
PROJECTED = ("1 GbE", "100 Gb/s InfiniBand (EDR/HDR100)")
TARGET_OF_BEST = 0.9  # the default target: this share of the best validation accuracy


def run_one(preset: str, args: argparse.Namespace) -> list[dict]:
    """Train one method; its metrics.jsonl rows (one per epoch)."""
    overrides = [
        f"experiment=dev_cifar10_{preset}",
        f"model={args.model}",
        f"seed={args.seed}",
        f"epochs={args.epochs}",
        f"subdomains={args.ranks}",
        f"dataset.data_dir={args.data_dir}",
        "checkpoint=false",
        "progress=false",
    ]
    return train(overrides, f"bench_tta: {preset}")[0]


def to_target(rows: list[dict], epoch: int | None) -> dict | None:
    """Measured figures summed up to ``epoch`` (the first at the target; None: never)."""
    if epoch is None:
        return None
    upto = [r for r in rows if int(r["epoch"]) <= epoch]
    return {"epoch": epoch, "wall_s": sum(float(r["wall_s"]) for r in upto),
            "collectives": sum(int(r["comm_calls"]) for r in upto),
            "passes": sum(float(r["grad_evals"]) for r in upto)}  # fmt: skip


def summarize(runs: dict[str, tuple[str, list[dict]]], n: int, target: float | None) -> dict:
    """The table's rows: per method its best val/test accuracy and, at ``target``, the
    measured and projected figures."""
    if target is None:
        target = TARGET_OF_BEST * max(
            float(r["val_acc"]) for _, rows in runs.values() for r in rows
        )
    out = []
    for label, (preset, rows) in runs.items():
        best = max(rows, key=lambda r: float(r["val_acc"]))
        row = {"method": label, "preset": f"dev_cifar10_{preset}", "best_val_acc": best["val_acc"],
               "test_acc_at_best": best["test_acc"], "best_epoch": best["epoch"]}  # fmt: skip
        # the first epoch at the target, and its time on each link (netcost.project)
        proj = {name: project(rows, n, LINKS[name], target) for name in PROJECTED}
        row["to_target"] = to_target(rows, proj[PROJECTED[0]].epoch_to_target)
        row["projected_s"] = {name: p.time_to_target_s for name, p in proj.items()}
        row["upper_bound"] = preset in OVERLAPPED
        out.append(row)
    return {"target": target, "ranks": n, "rows": out}


def markdown(result: dict) -> str:
    head = ["method", "best val %", "test % there", f"epoch to {result['target']:.2f}%",
            "wall s here", "collectives", "passes per sample",
            *(f"s on {name}" for name in PROJECTED)]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in result["rows"]:
        t, le = r["to_target"], "≤ " if r["upper_bound"] else ""
        cells = [r["method"], f"{r['best_val_acc']:.2f}", f"{r['test_acc_at_best']:.2f}"]
        if t is None:
            cells += ["not reached", "–", "–", "–"]
        else:
            cells += [str(t["epoch"]), format_seconds(t["wall_s"]), str(t["collectives"]),
                      f"{t['passes']:.1f}"]  # fmt: skip
        cells += [le + format_seconds(r["projected_s"][name]) if t else "–" for name in PROJECTED]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="bench_tta", description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="cnn", help="fcnn or cnn (default: cnn)")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--target", type=float, default=None, help="val accuracy %% (default: "
                    "90%% of the best any method reached)")  # fmt: skip
    ap.add_argument("--runs", type=Path, default=None,
                    help="an earlier tta.json: summarise its runs, train nothing")  # fmt: skip
    ap.add_argument("--methods", nargs="+", default=list(METHODS.values()),
                    choices=list(METHODS.values()))  # fmt: skip
    ap.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared/data/cifar10-dev")
    ap.add_argument("--out", type=Path, default=Path("outputs/bench"))
    args = ap.parse_args(argv)
    args.data_dir = args.data_dir.resolve()
    if args.runs is not None:
        earlier = json.loads(args.runs.read_text())
        args.model, args.epochs, args.seed = earlier["model"], earlier["epochs"], earlier["seed"]
        presets = {r["method"]: r["preset"].removeprefix("dev_cifar10_") for r in earlier["rows"]}
        runs = {label: (presets[label], rows) for label, rows in earlier["runs"].items()}
    elif not (args.data_dir / "cifar-10-batches-py").is_dir():
        raise SystemExit(
            f"bench_tta: no CIFAR-10 files in {args.data_dir}/cifar-10-batches-py; "
            "pass --data-dir (the folder that holds cifar-10-batches-py)"
        )
    else:
        runs = {}
        for label, preset in METHODS.items():
            if preset in args.methods:
                print(f"training {label} ({args.model}, {args.epochs} epochs) ...", flush=True)
                runs[label] = (preset, run_one(preset, args))
    result = summarize(runs, args.ranks, args.target)
    result.update(machine=machine(), model=args.model, epochs=args.epochs, seed=args.seed)
    result["runs"] = {label: rows for label, (_, rows) in runs.items()}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "tta.json").write_text(json.dumps(result, indent=1))
    text = (
        f"{result['machine']}\n\nCIFAR-10 subset, {args.model}, N = {args.ranks}, seed "
        f"{args.seed}, {args.epochs} epochs; target: {result['target']:.2f}% validation "
        f"accuracy\n\n{markdown(result)}\n"
    )
    (args.out / "tta.md").write_text(text)
    print(text)
    print(f"written: {args.out / 'tta.json'}, {args.out / 'tta.md'}")


if __name__ == "__main__":
    main()
