"""Benchmark: one epoch of APTS, TR, Adam and SGD on the same model and data.

For each model (fcnn, cnn) on MNIST-shaped synthetic data and each rank count N
(1, 2, 4, gloo), one epoch per optimizer through the real runner (``apts.runtime.launch``):
wall time, forward+backward passes (grad_evals), collectives and bytes per epoch,
and the share of the epoch's time spent in forward/backward, and for APTS/TR in
blocking collectives (waiting for the other ranks included) and in the optimizer's
own work (L-SR1, subproblem solves, vector copies). APTS and TR use the paper's
mini-batch (10000); Adam and SGD a conventional 128. Figures, not assertions.

    python -m benchmarks.bench                 # full grid, writes outputs/bench/bench.{json,md}
    python -m benchmarks.bench --models fcnn --ranks 1 2 --n-train 10000
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

from apts.config.validate import CONFIG_DIR, validate
from apts.runtime.job import run_job


def run_one(model: str, optimizer: str, n: int, n_train: int, batch: int) -> dict:
    overrides = [
        "dataset=synthetic",
        f"dataset.n_train={n_train}",
        "dataset.val_size=0",  # cost per training sample: --n-train samples all train
        "dataset.n_test=1000",
        f"model={model}",
        f"optimizer={optimizer}",
        f"subdomains={n}",
        "epochs=1",
        "progress=false",
        "checkpoint=false",
        f"batch_size={batch}",
    ]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        cfg = compose(config_name="train", overrides=overrides)
    validate(cfg)
    with tempfile.TemporaryDirectory() as d:
        out = run_job(OmegaConf.to_container(cfg, resolve=True), f"{d}/run")
    if not out.ok:
        raise SystemExit(f"bench: {model}/{optimizer}/N={n} failed: {out.message}")
    m = out.fields
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
        "fwd_bwd_share": m["fwd_bwd_s"] / m["wall_s"],
        "comm_share": m["comm_s"] / m["wall_s"] if optimizer in ("apts", "tr") else None,
        # what is neither forward/backward nor a collective: L-SR1, subproblem, copies
        "optimizer_share": (
            1.0 - (m["fwd_bwd_s"] + m["comm_s"]) / m["wall_s"]
            if optimizer in ("apts", "tr")
            else None
        ),
        "test_acc": m["test_acc"],  # a sanity check; nothing is chosen on it
    }


def markdown(rows: list[dict]) -> str:
    head = (
        "| model | optimizer | N | batch | steps | wall s | fwd+bwd passes | collectives "
        "| MB sent | time in fwd/bwd | in collectives | in optimizer | test acc % |\n|"
        + "---|"
        * 13
    )

    def pct(x: float | None) -> str:
        return "" if x is None else f"{100 * x:.0f}%"

    lines = [head]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['optimizer']} | {r['N']} | {r['batch_size']} | {r['steps']} "
            f"| {r['wall_s']:.2f} | {r['grad_evals']:.2f} | {r['collectives']} "
            f"| {r['bytes'] / 1e6:.2f} | {pct(r['fwd_bwd_share'])} | {pct(r['comm_share'])} "
            f"| {pct(r['optimizer_share'])} | {r['test_acc']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["fcnn", "cnn"])
    ap.add_argument("--optimizers", nargs="+", default=["apts", "tr", "adam", "sgd"])
    ap.add_argument("--ranks", nargs="+", type=int, default=[1, 2, 4])
    ap.add_argument("--n-train", type=int, default=20000, help="synthetic training samples")
    ap.add_argument("--large-batch", type=int, default=10000, help="|B| of APTS and TR")
    ap.add_argument("--small-batch", type=int, default=128, help="|B| of Adam and SGD")
    ap.add_argument("--out", default="outputs/bench")
    args = ap.parse_args(argv)
    rows = []
    for model in args.models:
        for n in args.ranks:
            for opt in args.optimizers:
                batch = args.large_batch if opt in ("apts", "tr") else args.small_batch
                row = run_one(model, opt, n, args.n_train, batch)
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
