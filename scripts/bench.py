"""Benchmark: one epoch of APTS, TR, Adam and SGD on the same model and data.

For each model (fcnn, cnn) on MNIST-shaped synthetic data and each rank count N
(1, 2, 4, gloo), one epoch per optimizer through the real runner (``apts.launch``):
wall time, forward+backward passes (grad_evals), collectives and bytes per epoch,
and for APTS/TR the share of step time spent outside forward/backward (L-SR1,
subproblem solves, vector copies, communication). APTS and TR use the paper's
mini-batch (10000); Adam and SGD a conventional 128. Figures, not assertions.

    python scripts/bench.py                 # full grid, writes outputs/bench/bench.{json,md}
    python scripts/bench.py --models fcnn --ranks 1 2 --n-train 10000
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from apts.cli import CONFIG_DIR
from apts.launch import launch
from apts.validate import validate


def run_one(model: str, optimizer: str, n: int, n_train: int, batch: int | None) -> dict:
    overrides = [
        "dataset=synthetic",
        f"dataset.n_train={n_train}",
        "dataset.n_test=1000",
        f"model={model}",
        f"optimizer={optimizer}",
        f"subdomains={n}",
        "epochs=1",
        "progress=false",
        "checkpoint=false",
    ]
    if batch:
        overrides.append(f"batch_size={batch}")
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        cfg = compose(config_name="train", overrides=overrides)
    validate(cfg)
    with tempfile.TemporaryDirectory() as d:
        result = launch(OmegaConf.to_container(cfg, resolve=True), d)
    if result.error:
        raise SystemExit(f"bench: {model}/{optimizer}/N={n} failed: {result.error}")
    m = result.final
    return {
        "model": model,
        "optimizer": optimizer,
        "N": n,
        "batch_size": cfg.batch_size,
        "steps": m["steps"],
        "wall_s": m["wall_s"],
        "grad_evals": m["grad_evals"],
        "collectives": m["comm_calls"],
        "bytes": m["comm_bytes"],
        "outside_fwd_bwd": (
            1.0 - m["fwd_bwd_s"] / m["wall_s"] if optimizer in ("apts", "tr") else None
        ),
        "val_acc": m["val_acc"],
    }


def markdown(rows: list[dict]) -> str:
    head = (
        "| model | optimizer | N | batch | steps | wall s | fwd+bwd passes | collectives "
        "| MB sent | outside fwd/bwd | val acc % |\n|" + "---|" * 11
    )
    lines = [head]
    for r in rows:
        share = "" if r["outside_fwd_bwd"] is None else f"{100 * r['outside_fwd_bwd']:.0f}%"
        lines.append(
            f"| {r['model']} | {r['optimizer']} | {r['N']} | {r['batch_size']} | {r['steps']} "
            f"| {r['wall_s']:.2f} | {r['grad_evals']:.2f} | {r['collectives']} "
            f"| {r['bytes'] / 1e6:.2f} | {share} | {r['val_acc']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["fcnn", "cnn"])
    ap.add_argument("--optimizers", nargs="+", default=["apts", "tr", "adam", "sgd"])
    ap.add_argument("--ranks", nargs="+", type=int, default=[1, 2, 4])
    ap.add_argument("--n-train", type=int, default=20000, help="synthetic training samples")
    ap.add_argument("--out", default="outputs/bench")
    args = ap.parse_args(argv)
    rows = []
    for model in args.models:
        for n in args.ranks:
            for opt in args.optimizers:
                row = run_one(model, opt, n, args.n_train, None)
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(rows, indent=1))
    table = markdown(rows)
    (out / "bench.md").write_text(table)
    print(table)
    print(f"written: {out / 'bench.json'}, {out / 'bench.md'} (cores: {os.cpu_count()})")


if __name__ == "__main__":
    main()
