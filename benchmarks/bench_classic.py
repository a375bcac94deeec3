"""TrustRegion on classic smooth test problems (Moré, Garbow & Hillstrom 1981, and the
chained Rosenbrock function): steps to convergence with L-SR1 updates after every trial
point (``update_rejected=True``, APTS.md rule 4) against updates on acceptance only, for
γ = "auto" and γ = 1e-3. Figures, not assertions; prints a markdown table.

    python -m benchmarks.bench_classic [--budget 3000] [--problems rosenbrock,wood,...]

Each cell: steps to convergence (closure evaluations in brackets: TrustRegion.step
evaluates the current point and the trial point), "local" when it converged to a known
local minimiser, or "✗ f = ..." when the budget ran out. Convergence: f − f* ≤ 1e-12 (f* = 0)
or ≤ 1e-5·f* (see ``benchmarks.problems``). m = 5 pairs (the table's in docs/results.md); other
options: TrustRegion's defaults, float64.
"""

from __future__ import annotations

import argparse
import time

import torch

from benchmarks.problems import PROBLEMS, problem, run_trust_region

# The standard starts of every problem, and the origin for the 100-D Rosenbrock functions.
DEFAULT = [p.name for p in PROBLEMS] + ["extended_rosenbrock@zero", "chained_rosenbrock@zero"]
VARIANTS = [("auto", True), ("auto", False), (1e-3, True), (1e-3, False)]


def cell(res) -> str:
    if res.converged is None:
        return f"✗ f = {res.f:.3g}"
    local = " local" if res.converged == "local" else ""
    return f"{res.iterations} ({res.evaluations}){local}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--budget", type=int, default=3000, help="steps per run (default 3000)")
    ap.add_argument("--problems", default=",".join(DEFAULT), help="comma-separated names")
    args = ap.parse_args()
    torch.set_num_threads(1)  # tiny problems: threads only add overhead

    head = ["problem", "n", "start"]
    head += [f"γ={g}, {'every trial' if u else 'accepted only'}" for g, u in VARIANTS]
    head += ["final f (γ=auto, every trial)"]
    print(f"TrustRegion defaults (Δ₀ = 0.1, Δ_min = 1e-4, Δ_max = 1, m = 5), budget {args.budget}")
    print()
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    t0 = time.perf_counter()
    for name in args.problems.split(","):
        prob = problem(name)
        runs = [
            run_trust_region(prob, args.budget, gamma=g, update_rejected=u, memory=5)
            for g, u in VARIANTS
        ]
        start = "0" if name.endswith("@zero") else "standard"
        row = [f"{prob.name.split('@')[0]} ({prob.ref})", str(prob.n), start]
        row += [cell(r) for r in runs] + [f"{runs[0].f:.6g}"]
        print("| " + " | ".join(row) + " |", flush=True)
    print(f"\n({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
