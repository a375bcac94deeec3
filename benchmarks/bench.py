"""Benchmark: one epoch of APTS, TR, Adam and SGD on the same model and data.

For each model (fcnn, cnn; resnet18 on request) on synthetic data (MNIST-shaped, or
``--shape 3 32 32`` for CIFAR's) and each rank count N (1, 2, 4, gloo), one epoch per
optimizer through the real runner (``apts-train``, a fresh process per row, so each row's
memory is its own): wall time, forward+backward passes per sample, collectives and bytes,
and

- the cost of one forward+backward pass over one sample (the epoch's wall time over its
  passes), and that cost relative to Adam's on the same model and N: APTS makes about 7
  passes per sample, so this is what decides whether it is worth it;
- the shares of the epoch spent in forward/backward, in taking the shard out of the data
  (indexing, normalising), and for APTS/TR in blocking collectives (waiting for the other
  ranks included) and in the optimizer's own work (what is left: L-SR1, subproblem
  solves, vector copies, Python);
- rank 0's peak memory (resident set on a CPU, torch's peak allocation on a GPU).

APTS and TR use the paper's mini-batch (10000); Adam and SGD a conventional 128. The
shards are evaluated in ``--micro-batch`` chunks (``auto``, a number, or ``null`` for one
pass over the shard, the runner's behaviour before micro-batches). Figures, not assertions.

    python -m benchmarks.bench                 # full grid, writes outputs/bench/bench.{json,md}
    python -m benchmarks.bench --models fcnn --ranks 1 2 --n-train 10000
    python -m benchmarks.bench --models cnn --ranks 1 --micro-batch null   # one pass per shard
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from apts.rundir.format import strict_loads


def train(overrides: list[str], what: str) -> tuple[list[dict], dict]:
    """One ``apts-train`` run with ``overrides`` in a fresh process and a folder of its own:
    its metrics.jsonl rows (one per epoch) and its summary.json; ``what`` names it in the
    error that ends the benchmark if it fails."""
    with tempfile.TemporaryDirectory() as d:
        cmd = [sys.executable, "-m", "apts.cli", *overrides, f"out_dir={d}/run"]
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=d)
        if r.returncode != 0:
            raise SystemExit(f"{what} failed: {r.stderr.strip()[-2000:]}")
        lines = Path(d, "run", "metrics.jsonl").read_text().splitlines()
        summary = strict_loads(Path(d, "run", "summary.json").read_text())
    return [strict_loads(line) for line in lines], summary


def run_one(model: str, optimizer: str, n: int, args: argparse.Namespace) -> dict:
    batch = args.large_batch if optimizer in ("apts", "tr") else args.small_batch
    overrides = [
        "dataset=synthetic",
        f"dataset.n_train={args.n_train}",
        "dataset.val_size=0",  # cost per training sample: --n-train samples all train
        "dataset.n_test=1000",
        f"dataset.shape=[{','.join(map(str, args.shape))}]",
        f"model={model}",
        f"optimizer={optimizer}",
        f"subdomains={n}",
        "epochs=1",
        "progress=false",
        "checkpoint=false",
        f"batch_size={batch}",
        f"micro_batch={args.micro_batch}",
        f"device={args.device}",
    ]
    rows, summary = train(overrides, f"bench: {model}/{optimizer}/N={n}")
    m, chunk = rows[-1], summary.get("micro_batch")
    closure = optimizer in ("apts", "tr")
    return {
        "model": model,
        "optimizer": optimizer,
        "N": n,
        "batch_size": batch,
        "micro_batch": chunk,
        "steps": m["steps"],
        "wall_s": m["wall_s"],
        "grad_evals": m["grad_evals"],
        "collectives": m["comm_calls"],
        "bytes": m["comm_bytes"],
        # wall time per forward+backward pass over one sample, every rank together
        "pass_us": 1e6 * m["wall_s"] / (m["grad_evals"] * m["samples"]),
        "fwd_bwd_share": m["fwd_bwd_s"] / m["wall_s"],
        "data_share": m["data_s"] / m["wall_s"],
        "comm_share": m["comm_s"] / m["wall_s"] if closure else None,
        # what is neither forward/backward, data nor a collective: L-SR1, subproblem, copies
        "optimizer_share": (
            1.0 - (m["fwd_bwd_s"] + m["data_s"] + m["comm_s"]) / m["wall_s"] if closure else None
        ),
        "peak_mem_mb": m["peak_mem_mb"],
        "test_acc": m["test_acc"],  # a sanity check; nothing is chosen on it
    }


def relative_to_adam(rows: list[dict]) -> None:
    """Each row's ``pass_vs_adam``: its pass cost over Adam's on the same model and N."""
    adam = {(r["model"], r["N"]): r["pass_us"] for r in rows if r["optimizer"] == "adam"}
    for r in rows:
        base = adam.get((r["model"], r["N"]))
        r["pass_vs_adam"] = r["pass_us"] / base if base else None


def markdown(rows: list[dict]) -> str:
    head = (
        "| model | optimizer | N | batch | micro-batch | steps | wall s | fwd+bwd passes "
        "| collectives | MB sent | µs per pass-sample | vs Adam | time in fwd/bwd | in data "
        "| in collectives | in optimizer | peak MiB | test acc % |\n|" + "---|" * 18
    )

    def pct(x: float | None) -> str:
        return "" if x is None else f"{100 * x:.0f}%"

    lines = [head]
    for r in rows:
        ratio = "" if r["pass_vs_adam"] is None else f"{r['pass_vs_adam']:.2f}×"
        lines.append(
            f"| {r['model']} | {r['optimizer']} | {r['N']} | {r['batch_size']} "
            f"| {r['micro_batch'] or 'one pass'} | {r['steps']} | {r['wall_s']:.2f} "
            f"| {r['grad_evals']:.2f} | {r['collectives']} | {r['bytes'] / 1e6:.2f} "
            f"| {r['pass_us']:.1f} | {ratio} | {pct(r['fwd_bwd_share'])} | {pct(r['data_share'])} "
            f"| {pct(r['comm_share'])} | {pct(r['optimizer_share'])} "
            f"| {r['peak_mem_mb']:.0f} | {r['test_acc']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def machine() -> str:
    return (
        f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}, "
        f"{os.cpu_count()} cores"
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["fcnn", "cnn"])
    ap.add_argument("--optimizers", nargs="+", default=["apts", "tr", "adam", "sgd"])
    ap.add_argument("--ranks", nargs="+", type=int, default=[1, 2, 4])
    ap.add_argument("--n-train", type=int, default=20000, help="synthetic training samples")
    ap.add_argument("--shape", nargs=3, type=int, default=[1, 28, 28], help="C H W")
    ap.add_argument("--large-batch", type=int, default=10000, help="|B| of APTS and TR")
    ap.add_argument("--small-batch", type=int, default=128, help="|B| of Adam and SGD")
    ap.add_argument("--micro-batch", default="auto", help="auto, a number, or null")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--out", default="outputs/bench")
    args = ap.parse_args(argv)
    rows = []
    for model in args.models:
        for n in args.ranks:
            for opt in args.optimizers:
                rows.append(run_one(model, opt, n, args))
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    relative_to_adam(rows)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps({"machine": machine(), "rows": rows}, indent=1))
    table = markdown(rows)
    (out / "bench.md").write_text(f"{machine()}\n\n{table}")
    print(f"{machine()}\n\n{table}")
    print(f"written: {out / 'bench.json'}, {out / 'bench.md'}")


if __name__ == "__main__":
    main()
