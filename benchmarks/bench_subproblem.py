"""Cost of the L-SR1 trust-region subproblem solve, in units of one torch.dot on n-vectors.

Figures, not assertions. For n = 10⁶ and m = 5 (memory full), prints the median time of
``solve_subproblem`` (with the spectral data cached, and including its O(m³) rebuild as
after an update), ``LSR1.update`` (an accepted pair, overflow path) and ``LSR1.matvec``,
each divided by the median time of one ``torch.dot`` of two n-vectors. Two units are given:
"hot" (the same two vectors every time, so they stay in cache) and "cold" (cycling
through enough vectors to defeat the last-level cache, as the solver's inputs are in
practice). CPU float32/float64, and CUDA when available.

    python -m benchmarks.bench_subproblem [--n 1000000] [--m 5] [--repeats 50]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from apts.optim import LSR1, solve_subproblem


def timer(device: torch.device):
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def measure(fn, repeats: int, warmup: int = 5) -> float:
        for _ in range(warmup):
            fn()
        sync()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    return measure


def bench(n: int, m: int, dtype: torch.dtype, device: torch.device, repeats: int) -> None:
    measure = timer(device)
    gen = torch.Generator(device="cpu").manual_seed(0)

    def randn(*shape):
        return torch.randn(*shape, generator=gen, dtype=dtype).to(device)

    # Units: one dot, hot and cold (≥ 64 MiB of distinct vectors for the cold one).
    a, b = randn(n), randn(n)
    n_cold = max(4, (64 << 20) // (n * a.element_size()) + 2)
    pool = [randn(n) for _ in range(n_cold)]
    it = iter(range(1 << 62))

    def cold_dot():
        i = next(it) % (n_cold - 1)
        return torch.dot(pool[i], pool[i + 1])

    hot = measure(lambda: torch.dot(a, b), repeats * 4)
    cold = measure(cold_dot, repeats * 4)

    # A full memory of m accepted pairs (y = As + noise, A diagonal indefinite).
    diag = randn(n)
    H = LSR1(m, 1e-3)
    while len(H) < m:
        s = randn(n)
        H.update(s, diag * s + 0.1 * randn(n))
    gs = [randn(n) for _ in range(4)]
    gi = iter(range(1 << 62))

    def solve_cached():
        return solve_subproblem(gs[next(gi) % 4], H, 0.5)

    def solve_fresh():
        H._spectrum = None  # as after an update: rebuild the k×k spectral data too
        return solve_subproblem(gs[next(gi) % 4], H, 0.5)

    t_cached = measure(solve_cached, repeats)
    t_fresh = measure(solve_fresh, repeats)
    t_matvec = measure(lambda: H.matvec(gs[next(gi) % 4]), repeats)
    # Distinct pairs, more than m of them, so each offered pair is new to the memory.
    n_pairs = 2 * m + 2
    pairs = [(s, diag * s + 0.1 * randn(n)) for s in (randn(n) for _ in range(n_pairs))]
    pi = iter(range(1 << 62))
    accepted = []

    def update():
        s, y = pairs[next(pi) % n_pairs]
        accepted.append(H.update(s, y))

    t_update = measure(update, repeats)

    name = f"{device.type} {str(dtype).replace('torch.', '')}"
    print(f"\n{name}: n = {n}, m = {m}, threads = {torch.get_num_threads()}")
    print(f"  torch.dot: hot {hot * 1e6:9.1f} us   cold {cold * 1e6:9.1f} us")
    rows = [
        ("solve_subproblem (cached spectrum)", t_cached),
        ("solve_subproblem (incl. k x k rebuild)", t_fresh),
        ("LSR1.update (accepted, overflow)", t_update),
        ("LSR1.matvec", t_matvec),
    ]
    print(f"  {'':40s} {'time':>10s}   {'x hot dot':>9s}   {'x cold dot':>10s}")
    for label, t in rows:
        print(f"  {label:40s} {t * 1e6:8.1f}us   {t / hot:9.1f}   {t / cold:10.1f}")
    print(f"  (updates accepted: {sum(accepted)}/{len(accepted)})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--m", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    targets = [(torch.float32, torch.device("cpu")), (torch.float64, torch.device("cpu"))]
    if torch.cuda.is_available():
        targets += [(torch.float32, torch.device("cuda")), (torch.float64, torch.device("cuda"))]
    for dtype, device in targets:
        bench(args.n, args.m, dtype, device, args.repeats)


if __name__ == "__main__":
    main()
