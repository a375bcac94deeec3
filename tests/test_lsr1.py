"""L-SR1 compact form against an independent dense float64 SR1 recursion."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from apts.optim import LSR1

F64 = torch.float64


# small dense problems: intra-op threading only adds overhead (conftest.py)
pytestmark = pytest.mark.usefixtures("one_thread")


EPS64 = torch.finfo(F64).eps


class DenseSR1:
    """Reference: dense SR1 recursion from γI over the held pairs (limited memory).

    Limited-memory SR1 with m pairs equals the dense recursion applied to the last m
    accepted pairs, so B is rebuilt from scratch over the held pairs whenever needed.
    Skip rule: skip unless |sᵀr| > 1e-8‖s‖‖r‖ (r = y − Bs) and |sᵀr| is above the
    rounding noise of this dense computation, 1e2·ε·‖s‖·(‖y‖ + ‖s‖·(γ + Σⱼ‖rⱼ‖²/|rⱼᵀsⱼ|))
    (LSR1 has its own floor for its own rounding; both only matter for pairs that are
    degenerate up to rounding, such as a repeated pair); skip anything non-finite.
    """

    def __init__(self, memory: int, gamma: float | str) -> None:
        self.m = memory
        self.auto = gamma == "auto"
        self.gamma = 1.0 if self.auto else float(gamma)
        self.pairs: list[tuple[torch.Tensor, torch.Tensor]] = []

    def dense(self, n: int) -> torch.Tensor:
        return self._dense(n)[0]

    def _dense(self, n: int) -> tuple[torch.Tensor, float]:
        B = self.gamma * torch.eye(n, dtype=F64)
        size = self.gamma  # Σ of the norms of the summed terms: scale of B's rounding
        for s, y in self.pairs:
            r = y - B @ s
            B = B + torch.outer(r, r) / (r @ s)
            size += float(r @ r) / abs(float(r @ s))
        return B, size

    def update(self, s: torch.Tensor, y: torch.Tensor) -> bool:
        s, y = s.to(F64), y.to(F64)
        if not (torch.isfinite(s).all() and torch.isfinite(y).all()):
            return False
        B, size = self._dense(s.numel())
        r = y - B @ s
        sr = float(s @ r)
        sn, rn = float(s.norm()), float(r.norm())
        floor = 1e2 * EPS64 * sn * (float(y.norm()) + sn * size)
        if not (abs(sr) > 1e-8 * sn * rn and abs(sr) > floor):
            return False
        self.pairs.append((s.clone(), y.clone()))
        if len(self.pairs) > self.m:
            self.pairs.pop(0)
        if self.auto:
            g = float(y @ y) / float(s @ y) if float(s @ y) != 0 else math.inf
            self.gamma = g if (math.isfinite(g) and g > 0) else 1.0
        return True


def dense_of(H: LSR1, n: int, dtype=F64) -> torch.Tensor:
    return torch.stack([H.matvec(e) for e in torch.eye(n, dtype=dtype)], 1).to(F64)


def assert_close_op(H: LSR1, ref: DenseSR1, n: int, gen: torch.Generator, rtol=1e-10):
    Bref = ref.dense(n)
    scale = float(torch.linalg.matrix_norm(Bref, ord=2))
    for _ in range(3):
        v = torch.randn(n, dtype=F64, generator=gen)
        err = float((H.matvec(v) - Bref @ v).norm())
        assert err <= rtol * scale * float(v.norm()), (err, scale)


def random_sequence(seed: int, auto: bool):
    gen = torch.Generator().manual_seed(seed)
    n = int(torch.randint(4, 40, (1,), generator=gen))
    m = [1, 2, 3, 5, 8][seed % 5]
    gamma = "auto" if auto else float(torch.empty(1).uniform_(1e-3, 3.0, generator=gen))
    A = torch.randn(n, n, dtype=F64, generator=gen)
    A = 0.5 * (A + A.T)
    return gen, n, m, gamma, A


@pytest.mark.parametrize("auto", [False, True])
@pytest.mark.parametrize("seed", range(40))
def test_matches_dense_recursion(seed: int, auto: bool) -> None:
    gen, n, m, gamma, A = random_sequence(seed, auto)
    H, ref = LSR1(m, gamma), DenseSR1(m, gamma)
    skipped = 0
    for t in range(3 * m + 6):
        s = torch.randn(n, dtype=F64, generator=gen)
        y = A @ s + 0.3 * torch.randn(n, dtype=F64, generator=gen)
        kind = t % 5
        if kind == 3 and ref.pairs:
            # The newest held pair again: B already interpolates it (r = 0 up to rounding).
            s, y = ref.pairs[-1]
        elif kind == 4:
            # y = Bs + r with r ⟂ s: the SR1 denominator sᵀr is exactly zero.
            B = ref.dense(n)
            r = torch.randn(n, dtype=F64, generator=gen)
            r = r - (r @ s) / (s @ s) * s
            y = B @ s + r
        ok_ref = ref.update(s, y)
        ok = H.update(s, y)
        assert ok == ok_ref, (t, kind)
        skipped += not ok
        assert len(H) == len(ref.pairs) <= m
        assert H.gamma == pytest.approx(ref.gamma, rel=1e-12)
        assert_close_op(H, ref, n, gen)
    assert skipped >= 2  # the constructed pairs were skipped


def test_overflow_keeps_last_m_pairs() -> None:
    gen = torch.Generator().manual_seed(1)
    n, m = 12, 3
    A = torch.randn(n, n, dtype=F64, generator=gen)
    A = A + A.T
    H, ref = LSR1(m, 0.7), DenseSR1(m, 0.7)
    for _ in range(20):
        s = torch.randn(n, dtype=F64, generator=gen)
        y = A @ s + torch.randn(n, dtype=F64, generator=gen)
        assert H.update(s, y) and ref.update(s, y)
        assert len(H) == min(len(ref.pairs), m)
        assert_close_op(H, ref, n, gen)
    # The newest pair satisfies the secant equation B s = y.
    s, y = ref.pairs[-1]
    assert torch.allclose(H.matvec(s), y, rtol=0, atol=1e-9 * float(y.norm()))


def test_empty_memory_is_gamma_identity() -> None:
    H = LSR1(4, 0.25)
    v = torch.randn(7, dtype=F64)
    assert len(H) == 0
    assert torch.equal(H.matvec(v), 0.25 * v)
    assert LSR1(4, "auto").gamma == 1.0


def test_gamma_auto_textbook_value() -> None:
    H = LSR1(3, "auto")
    s = torch.tensor([1.0, 0.0, 0.0], dtype=F64)
    y = torch.tensor([2.0, 1.0, 0.0], dtype=F64)
    assert H.update(s, y)
    assert H.gamma == pytest.approx(float(y @ y) / float(s @ y))
    # sᵀy < 0: fall back to 1.
    H2 = LSR1(3, "auto")
    assert H2.update(s, -y)
    assert H2.gamma == 1.0


def test_non_finite_pairs_are_skipped() -> None:
    gen = torch.Generator().manual_seed(3)
    n = 9
    H = LSR1(3, 1e-3)
    for _ in range(2):
        s, y = torch.randn(2, n, dtype=F64, generator=gen)
        assert H.update(s, y)
    v = torch.randn(n, dtype=F64, generator=gen)
    before = H.matvec(v)
    bad = torch.randn(n, dtype=F64, generator=gen)
    good = torch.randn(n, dtype=F64, generator=gen)
    for s, y in [
        (bad.clone().fill_(math.nan), good),
        (good, torch.full((n,), math.inf, dtype=F64)),
        (torch.where(torch.arange(n) == 2, math.nan, good), good + 1),
    ]:
        assert not H.update(s, y)
        assert len(H) == 2
        assert torch.equal(H.matvec(v), before)
    # and the memory still accepts good pairs afterwards
    assert H.update(good, bad)
    assert torch.isfinite(H.matvec(v)).all()


def test_zero_step_and_exact_secant_are_skipped() -> None:
    H = LSR1(3, 2.0)
    s = torch.zeros(5, dtype=F64)
    assert not H.update(s, torch.ones(5, dtype=F64))
    s = torch.ones(5, dtype=F64)
    assert not H.update(s, 2.0 * s)  # y = γs: B already satisfies the secant equation
    assert len(H) == 0


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_zero_gradient_change_pairs(dtype) -> None:
    # y = 0 (the loss is flat along s, e.g. once it reached zero): ‖y‖² expanded from
    # ψ = y − γs cancels to rounding, which once went negative and made a later update
    # fail with "math domain error". Such pairs are valid SR1 pairs (sᵀr = −γ‖s‖²).
    for seed in range(20):
        gen = torch.Generator().manual_seed(seed)
        H, ref = LSR1(5, 1e-3), DenseSR1(5, 1e-3)
        for _ in range(4):
            s = torch.randn(50, dtype=F64, generator=gen)
            assert H.update(s.to(dtype), torch.zeros(50, dtype=dtype)) == ref.update(
                s, torch.zeros(50, dtype=F64)
            )
        if dtype == F64:
            assert_close_op(H, ref, 50, gen)


def test_singular_middle_matrix_drops_oldest_pairs() -> None:
    # m = 2, γ = 1. p1 = (e1, 3e1); p2 = (e1, e1 + e2) passes the test against
    # B = I + 2e1e1ᵀ, but on its own (after p1 is dropped) its SR1 denominator
    # s2ᵀ(y2 − s2) = 0, so M⁻¹ becomes singular once p3 pushes p1 out: p2 must go too.
    e = torch.eye(3, dtype=F64)
    H = LSR1(2, 1.0)
    assert H.update(e[0], 3 * e[0])
    assert H.update(e[0], e[0] + e[1])
    assert len(H) == 2
    s3, y3 = e[2], 2 * e[2] + 0.5 * e[0]
    assert H.update(s3, y3)
    assert len(H) == 1
    ref = DenseSR1(2, 1.0)
    ref.pairs = [(s3, y3)]
    assert torch.allclose(dense_of(H, 3), ref.dense(3), rtol=0, atol=1e-14)
    # With m = 1 the newest pair alone is singular: everything is dropped.
    H1 = LSR1(1, 1.0)
    assert H1.update(e[0], 3 * e[0])
    assert not H1.update(e[0], e[0] + e[1])
    assert len(H1) == 0


@pytest.mark.parametrize("gamma", [1e-3, "auto"])
def test_state_dict_round_trip(gamma) -> None:
    gen = torch.Generator().manual_seed(5)
    n = 15
    A = torch.randn(n, n, dtype=F64, generator=gen)
    A = A + A.T

    def pair():
        s = torch.randn(n, dtype=F64, generator=gen)
        return s, A @ s + 0.1 * torch.randn(n, dtype=F64, generator=gen)

    H = LSR1(4, gamma)
    for _ in range(7):
        H.update(*pair())
    # state_dict references the live buffers (as torch's do): a deep copy is a snapshot
    live = H.state_dict()
    assert live["psi"].data_ptr() == H._Z[1].data_ptr() and live["psi"].shape == (4, n)
    sd = copy.deepcopy(live)
    H2 = LSR1(2, 5.0)  # different settings: the state carries them
    H2.load_state_dict(sd)
    assert len(H2) == len(H) and H2.gamma == H.gamma and H2.memory == 4
    v = torch.randn(n, dtype=F64, generator=gen)
    assert torch.equal(H.matvec(v), H2.matvec(v))
    # H2 holds copies: both continue identically, and the snapshot stays as it was.
    for _ in range(6):
        s, y = pair()
        assert H.update(s, y) == H2.update(s, y)
        assert torch.equal(H.matvec(v), H2.matvec(v))
    H3 = LSR1()
    H3.load_state_dict(sd)
    assert not torch.equal(H3.matvec(v), H.matvec(v))
    H.reset()
    assert len(H) == 0 and torch.equal(H.matvec(v), H.gamma * v)


def test_allocated_state_has_a_fixed_layout() -> None:
    """After allocate(), the state's tensors have their final shape (m×n) whatever the
    number of pairs, and reset() keeps them: a fresh optimizer's state is a template that
    an in-place loader (torch.distributed.checkpoint) can fill."""
    n, m = 6, 3
    H = LSR1(m, "auto")
    H.allocate(n, F64, "cpu")
    shapes = {k: v.shape for k, v in H.state_dict().items() if isinstance(v, torch.Tensor)}
    assert shapes == {"psi": (m, n), "s": (m, n), "y": (m, n)}
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        H.update(torch.randn(n, dtype=F64, generator=gen), torch.randn(n, dtype=F64, generator=gen))
    assert len(H) > 0
    assert {k: v.shape for k, v in H.state_dict().items() if isinstance(v, torch.Tensor)} == shapes
    H.reset()
    assert len(H) == 0 and H.state_dict()["psi"].shape == (m, n)
    with pytest.raises(ValueError, match="size 6, not 7"):
        H.allocate(7, F64, "cpu")


def test_float32_close_to_float64() -> None:
    gen = torch.Generator().manual_seed(11)
    n, m = 30, 5
    A = torch.randn(n, n, dtype=F64, generator=gen)
    A = A + A.T
    H32, ref = LSR1(m, 0.5), DenseSR1(m, 0.5)
    for _ in range(9):
        s = torch.randn(n, dtype=F64, generator=gen)
        y = A @ s + torch.randn(n, dtype=F64, generator=gen)
        assert H32.update(s.float(), y.float()) == ref.update(s, y)
    Bref = ref.dense(n)
    B32 = dense_of(H32, n, torch.float32)
    rel = float(torch.linalg.matrix_norm(B32 - Bref, 2) / torch.linalg.matrix_norm(Bref, 2))
    assert rel < 1e-4, rel
    assert H32.matvec(torch.ones(n)).dtype == torch.float32


def test_validation() -> None:
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError):
            LSR1(memory=bad)
    for bad in (0.0, -1.0, math.nan, math.inf, "foo"):
        with pytest.raises(ValueError):
            LSR1(gamma=bad)
    H = LSR1()
    H.update(torch.ones(3, dtype=F64), torch.arange(3, dtype=F64))
    with pytest.raises(ValueError):
        H.update(torch.ones(4, dtype=F64), torch.ones(4, dtype=F64))
