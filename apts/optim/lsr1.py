r"""Limited-memory SR1 matrix in compact form.

The symmetric rank-one (SR1) update of a Hessian approximation B with a pair
(s, y), s = x₊ − x, y = ∇φ(x₊) − ∇φ(x), is

.. math::
    B_+ = B + \frac{(y - Bs)(y - Bs)^T}{(y - Bs)^T s}.

Starting from B₀ = γI and applying it to the last m stored pairs gives, in the
compact form of Byrd, Nocedal and Schnabel (1994; Nocedal & Wright §7.2),

.. math::
    B = \gamma I + \Psi M \Psi^T,\qquad \Psi = Y - \gamma S,\qquad
    M = (D + L + L^T - \gamma S^T S)^{-1},

where S = [s₁ … s_k], Y = [y₁ … y_k] (oldest first) and SᵀY = L + D + U is split
into its strictly lower, diagonal and strictly upper parts. Because
(M⁻¹)ᵢⱼ = sᵢᵀyⱼ − γ sᵢᵀsⱼ = sᵢᵀψⱼ for i ≥ j, M⁻¹ only needs sᵢᵀψⱼ (i ≥ j).

Storage: the n-vectors ψᵢ live in one (m+1)×n buffer in the parameter dtype and
device (row 0 stages the candidate ψ of an update, rows 1…k hold the pairs as one
contiguous block, in no particular order; ``_slots`` gives the order). The k×k
matrices ΨᵀΨ and sᵢᵀψⱼ are kept in float64 on the CPU and updated with one new
row/column per pair, so an update costs O(n·m) and never forms an n×n matrix.
With a fixed γ the vectors S and Y are not stored at all (only Ψ is ever needed).
γ = "auto" also stores S and Y and the γ-free Gram matrices SᵀS, SᵀY, YᵀY, because a
change of γ changes every ψᵢ = yᵢ − γsᵢ (Ψ is then rebuilt in one O(n·m) pass).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from apts.checks import check_int, is_number
from apts.errors import OptionError

__all__ = ["LSR1", "LSR1Spectrum"]

_F64 = torch.float64
_CPU = torch.device("cpu")

# Spec rule: skip a pair when |sᵀr| < SKIP_RTOL·‖s‖·‖r‖, r = y − Bs.
SKIP_RTOL = 1e-8
# Additional rounding floor: a curvature denominator sᵀr that the vector dtype cannot tell
# from zero is skipped too: |sᵀr| ≤ NOISE_FACTOR·ε·N with
# N = ‖s‖(‖y‖ + γ‖s‖ + ‖Bs‖ + Σᵢ‖ψᵢ‖|xᵢ|) + ‖M⁻¹‖_F‖x‖², x = MΨᵀs,
# the size of the terms whose rounding errors add up in sᵀr = sᵀψ − (Ψᵀs)ᵀx (x computed
# by a backward-stable solve with M⁻¹). Without it a repeated pair (r = 0 up to rounding)
# passes the relative rule on pure noise and makes M numerically singular. For float64
# this binds only for pairs that B already predicts to ~6 digits or better.
NOISE_FACTOR = 1e2
# M⁻¹ is treated as singular when an (unpivoted, i.e. recursion-order) LDLᵀ pivot dⱼ —
# exactly the SR1 denominator of pair j in the recursion over the held pairs — satisfies
# |dⱼ| ≤ PIVOT_FACTOR·ε·‖sⱼ‖·‖yⱼ‖. It is 10× below the update floor, so it only triggers
# when dropping old pairs (memory overflow, γ change) makes a denominator vanish.
PIVOT_FACTOR = 10.0
# Directions of span(Ψ) with Gram eigenvalue μ ≤ RANK_FACTOR·k·ε·μ_max are treated as null
# (Ψ rank deficient): the Gram matrix in the vector dtype cannot resolve them, and keeping
# them would make the implied basis ΨVμ^{-1/2} far from orthonormal.
RANK_FACTOR = 10.0
# Largest memory m accepted. Every update does O(m³) float64 host work (factorising and
# inverting M⁻¹, the pivot check, two k×k eigen-decompositions in the subproblem) besides
# its O(m·n) vector work: measured 5 ms at m = 16, 76 ms at m = 64, 0.47 s at m = 128 and
# 2.5 s at m = 256 per update (n = 2000, one core), so beyond 128 the memory's bookkeeping
# would dominate any model's forward/backward pass; and the (m+1)·n buffers are allocated
# at construction by the optimizers. L-SR1 in practice uses m ≤ 30 (default 10).
MAX_MEMORY = 128


@dataclass(frozen=True)
class LSR1Spectrum:
    r"""Spectral form of an :class:`LSR1` matrix, as used by the OBS subproblem solver.

    With Ψ the k×n matrix ``psi`` (rows ψᵢ in storage order), the n×r matrix
    P∥ = Ψᵀ·``coef`` has orthonormal columns spanning (the numerically non-null part of)
    span(Ψ), and

    .. math:: B = P_\parallel \operatorname{diag}(\lambda) P_\parallel^T
                  + \gamma (I - P_\parallel P_\parallel^T).

    ``psi`` is None (and r = 0) when the memory is empty, B = γI.
    """

    psi: Tensor | None  # (k, n) view of the storage, parameter dtype/device
    coef: Tensor  # (k, r) float64 CPU
    lam: tuple[float, ...]  # r eigenvalues of B on span(Ψ)
    gamma: float


@dataclass
class _Products:
    """The inner products of an offered pair (s, y), ψ = y − γs, with the stored pairs
    (k-vectors oldest first, float64 on the CPU) that the skip test and the append use."""

    a: Tensor  # ψᵢᵀs
    b: Tensor  # ψᵢᵀψ
    s_psi: float  # sᵀψ
    psi_psi: float  # ψᵀψ
    ss: float  # sᵀs
    y2: float  # yᵀy
    # γ = "auto" only: sᵢᵀs, yᵢᵀs, sᵢᵀy, yᵢᵀy (k-vectors), sᵀy, yᵀy
    gram: tuple[Tensor, Tensor, Tensor, Tensor, float, float] | None = None


class LSR1:
    r"""Limited-memory SR1 approximation B = γI + ΨMΨᵀ of a Hessian (see module doc).

    Args:
        memory: number m of (s, y) pairs kept, 1 ≤ m ≤ ``MAX_MEMORY`` (128: the O(m³)
            host work per update takes ~0.5 s there and grows as m³; see ``MAX_MEMORY``);
            the oldest pair is dropped on overflow.
        gamma: the curvature γ > 0 that B assigns to every direction outside span(Ψ),
            or ``"auto"``: γ = yᵀy / sᵀy of the newest stored pair (1.0 when that is not
            positive and finite, and before the first pair).

    Pairs are tested with the SR1 safeguard: (s, y) is skipped when anything is
    non-finite or |sᵀ(y − Bs)| ≤ 1e-8·‖s‖·‖y − Bs‖, or when sᵀ(y − Bs) is within
    rounding noise of zero (see ``NOISE_FACTOR``). If the compact middle matrix M cannot
    be formed (M⁻¹ singular or non-finite), the oldest pairs are dropped until it can.

    n-vectors are kept in the dtype/device of the first pair; k×k algebra is float64 on
    the CPU. Memory use: (m+1)·n numbers ((3m+1)·n with ``gamma="auto"``).
    """

    def __init__(self, memory: int = 10, gamma: float | str = 1e-3) -> None:
        self.check_options(memory, gamma)
        self.memory = int(memory)
        self._gamma_spec: float | str = gamma if gamma == "auto" else float(gamma)
        self._Z: Tensor | None = None  # (m+1, n): row 0 staging, rows 1+slot hold ψ
        self._W: Tensor | None = None  # (2, m, n): [S; Y] by slot, only with gamma="auto"
        self.reset()

    @staticmethod
    def check_options(memory: Any, gamma: Any) -> None:
        """``ValueError`` (starting ``memory=...`` or ``gamma=...``) for invalid settings."""
        check_int("memory", memory, 1, MAX_MEMORY)
        if not (gamma == "auto" if isinstance(gamma, str) else is_number(gamma) and gamma > 0):
            raise OptionError("gamma", gamma, "must be a positive number or 'auto'")

    # ------------------------------------------------------------------ state
    @property
    def auto_gamma(self) -> bool:
        return self._gamma_spec == "auto"

    @property
    def gamma(self) -> float:
        """The γ in use (a float, also with ``gamma="auto"``)."""
        return self._gamma

    def __len__(self) -> int:
        return len(self._slots)

    def reset(self) -> None:
        """Forget all pairs (and, with ``gamma="auto"``, reset γ to 1). Allocated buffers
        stay allocated (their rows are unused until the next pairs overwrite them)."""
        self._slots: list[int] = []  # storage slot of each pair, oldest first
        self._gamma = 1.0 if self.auto_gamma else float(self._gamma_spec)
        e = torch.zeros(0, 0, dtype=_F64)
        self._PP = e  # ΨᵀΨ (ordered)
        self._SP = e  # SP[i, j] = sᵢᵀψⱼ (lower triangle used; full with gamma="auto")
        # With gamma="auto": SᵀS, SᵀY, YᵀY, which do not depend on γ; ΨᵀΨ and SᵀΨ are
        # re-derived from them whenever γ changes (updating ΨᵀΨ through a γ shift instead
        # would accumulate errors ~ε·(Δγ)²‖s‖²).
        self._SS = e
        self._SY = e
        self._YY = e
        self._M = e  # M (ordered)
        self._s2: list[float] = []  # ‖sᵢ‖²
        self._y2: list[float] = []  # ‖yᵢ‖²
        self._invalidate()

    def _invalidate(self) -> None:
        self._M_dev: Tensor | None = None  # M in storage order, vector dtype/device
        self._spectrum: LSR1Spectrum | None = None

    def _psi_rows(self) -> Tensor:
        # Invariant: the used slots are exactly {0, …, k−1}, so Ψ is one contiguous block.
        assert self._Z is not None
        return self._Z[1 : 1 + len(self._slots)]

    def _inv_perm(self) -> Tensor:
        # inv[slot] = position of that slot in the oldest-first order.
        return torch.argsort(torch.tensor(self._slots, dtype=torch.long))

    # ----------------------------------------------------------------- update
    def update(self, s: Tensor, y: Tensor) -> bool:
        """Offer the pair (s, y); return True when it was stored, False when skipped.

        Three phases: the inner products of s and ψ = y − γs with the stored vectors
        (:meth:`_inner_products`), the SR1 skip test on them (:meth:`_passes_skip_test`),
        and the append (:meth:`_append`, then M re-formed). Cost: O(n·m) — two
        matrix–vector passes over the stored vectors plus a few O(n) operations, no
        O(n·m²) Gram recomputation, one host sync on accelerators.
        """
        s = s.detach().reshape(-1)
        y = y.detach().reshape(-1)
        if s.shape != y.shape:
            raise ValueError(f"s and y must have the same size, got {s.shape} and {y.shape}")
        if self._Z is None:
            self._allocate(s.numel(), s.dtype, s.device)
        assert self._Z is not None
        n = self._Z.shape[1]
        if s.numel() != n:
            raise ValueError(f"pair has size {s.numel()}, memory holds size {n}")
        s = s.to(self._Z)
        y = y.to(self._Z)
        ip = self._inner_products(s, y)
        if ip is None or not self._passes_skip_test(ip):
            return False
        self._append(s, y, ip)
        kept = self._form_middle()
        self._invalidate()
        return kept

    def _inner_products(self, s: Tensor, y: Tensor) -> _Products | None:
        """Every inner product the skip test and the append need (None if not finite)."""
        perm = torch.tensor(self._slots, dtype=torch.long)
        if self.auto_gamma:
            return self._inner_products_auto(s, y, perm)
        gam, k = self._gamma, len(self._slots)
        assert self._Z is not None
        # Stage ψ = y − γs in row 0: [ψ; Ψ]ᵀs and [ψ; Ψ]ᵀψ then hold every inner
        # product the test and the Gram update need.
        psi = self._Z[0]
        torch.add(y, s, alpha=-gam, out=psi)
        head = self._Z[: k + 1]
        parts = [torch.mv(head, s), torch.mv(head, psi), torch.dot(s, s).reshape(1)]
        h = torch.cat(parts).to(device=_CPU, dtype=_F64)  # the one host sync
        if not bool(torch.isfinite(h).all()):
            return None
        s_psi, psi_psi, ss = float(h[0]), float(h[k + 1]), float(h[2 * k + 2])
        return _Products(
            a=h[1 : k + 1][perm],  # ψᵢᵀs, oldest first
            b=h[k + 2 : 2 * k + 2][perm],  # ψᵢᵀψ
            s_psi=s_psi,
            psi_psi=psi_psi,
            ss=ss,
            y2=psi_psi + 2.0 * gam * s_psi + gam * gam * ss,
        )

    def _inner_products_auto(self, s: Tensor, y: Tensor, perm: Tensor) -> _Products | None:
        """γ = "auto": [S; Y]ᵀs and [S; Y]ᵀy (free slots hold stale but finite rows)."""
        assert self._W is not None
        m, gam = self.memory, self._gamma
        W = self._W.view(2 * m, -1)
        dots = torch.stack([torch.dot(s, s), torch.dot(s, y), torch.dot(y, y)])
        h = torch.cat([torch.mv(W, s), torch.mv(W, y), dots]).to(device=_CPU, dtype=_F64)
        if not bool(torch.isfinite(h).all()):
            return None
        Ss, Ys = h[:m][perm], h[m : 2 * m][perm]  # sᵢᵀs, yᵢᵀs
        Sy, Yy = h[2 * m : 3 * m][perm], h[3 * m : 4 * m][perm]  # sᵢᵀy, yᵢᵀy
        ss, sy, yy = (float(v) for v in h[4 * m :])
        a = Ys - gam * Ss  # ψᵢᵀs
        return _Products(
            a=a,
            b=(Yy - gam * Sy) - gam * a,  # ψᵢᵀψ
            s_psi=sy - gam * ss,
            psi_psi=yy - 2.0 * gam * sy + gam * gam * ss,
            ss=ss,
            y2=yy,
            gram=(Ss, Ys, Sy, Yy, sy, yy),
        )

    def _passes_skip_test(self, ip: _Products) -> bool:
        """The SR1 safeguard on r = y − Bs = ψ − ΨMΨᵀs, whose inner products all follow
        from the k-vectors of ``ip``: |sᵀr| > 1e-8·‖s‖·‖r‖ and above rounding noise."""
        gam, k = self._gamma, len(self._slots)
        eps = torch.finfo(self._Z.dtype).eps if self._Z is not None else 0.0
        s_norm = math.sqrt(ip.ss)
        # Size of the terms whose rounding errors add up in sᵀr (see NOISE_FACTOR).
        noise = s_norm * (math.sqrt(max(ip.y2, 0.0)) + gam * s_norm)
        if k:
            # Ma by a backward-stable solve with M⁻¹ rather than with the explicit inverse M:
            # for a repeated pair a = M⁻¹eₖ, and M's forward error (~ε·cond) would leak in.
            a = ip.a
            Ma = torch.linalg.solve(_sym_lower(self._SP), a)
            aMa = float(a @ Ma)
            MaPMa = float(Ma @ (self._PP @ Ma))
            sr = ip.s_psi - aMa
            r2 = ip.psi_psi - 2.0 * float(ip.b @ Ma) + MaPMa
            Bs2 = gam * gam * ip.ss + 2.0 * gam * aMa + MaPMa
            psi_norms = self._PP.diagonal().clamp_min(0.0).sqrt()
            noise += s_norm * (math.sqrt(max(Bs2, 0.0)) + float(psi_norms @ Ma.abs()))
            noise += float(torch.linalg.matrix_norm(self._SP)) * float(Ma @ Ma)
        else:
            sr, r2 = ip.s_psi, ip.psi_psi
        r_norm = math.sqrt(max(r2, 0.0))
        floor = NOISE_FACTOR * eps * noise
        return abs(sr) > SKIP_RTOL * s_norm * r_norm and abs(sr) > floor

    def _append(self, s: Tensor, y: Tensor, ip: _Products) -> None:
        """Store the pair (dropping the oldest on overflow, reusing its slot) and extend
        the Gram matrices by one row and column."""
        assert self._Z is not None
        a, b, gram = ip.a, ip.b, ip.gram
        if len(self._slots) == self.memory:
            slot = self._pop_oldest()
            a, b = a[1:], b[1:]
            if gram is not None:
                gram = (gram[0][1:], gram[1][1:], gram[2][1:], gram[3][1:], *gram[4:])
        else:
            slot = len(self._slots)
        self._s2.append(ip.ss)
        # y2 is expanded from ψ = y − γs; for y ≈ 0 (a flat loss) its terms cancel and
        # rounding can leave it below zero, where the pivot tolerance's sqrt fails
        self._y2.append(max(ip.y2, 0.0))
        self._slots.append(slot)
        if gram is None:
            self._Z[1 + slot].copy_(self._Z[0])
            self._PP = _append(self._PP, b, b, ip.psi_psi)
            # SP[new, j] = sᵀψⱼ; the upper triangle is not needed with a fixed γ.
            self._SP = _append(self._SP, torch.zeros(len(a), dtype=_F64), a, ip.s_psi)
            return
        assert self._W is not None
        Ss, Ys, Sy, Yy, sy, yy = gram
        self._W[0, slot].copy_(s)
        self._W[1, slot].copy_(y)
        self._SS = _append(self._SS, Ss, Ss, ip.ss)
        self._SY = _append(self._SY, Sy, Ys, sy)  # SY[i, j] = sᵢᵀyⱼ
        self._YY = _append(self._YY, Yy, Yy, yy)
        new_gamma = yy / sy if sy != 0.0 else math.inf
        if not (math.isfinite(new_gamma) and new_gamma > 0.0):
            new_gamma = 1.0
        changed = new_gamma != self._gamma
        self._gamma = new_gamma
        self._refresh_psi(None if changed else slot)

    def _refresh_psi(self, slot: int | None) -> None:
        """γ = "auto": ψ = y − γs for one slot (or all when γ changed), and ΨᵀΨ, SᵀΨ."""
        assert self._Z is not None and self._W is not None
        k = len(self._slots)
        if slot is None:
            torch.add(self._W[1, :k], self._W[0, :k], alpha=-self._gamma, out=self._Z[1 : 1 + k])
        else:
            torch.add(self._W[1, slot], self._W[0, slot], alpha=-self._gamma, out=self._Z[1 + slot])
        g, SS, SY = self._gamma, self._SS, self._SY
        self._SP = SY - g * SS
        self._PP = self._YY - g * (SY + SY.T) + (g * g) * SS

    def allocate(self, n: int, dtype: torch.dtype, device: torch.device | str) -> None:
        """Allocate the n-vector buffers now (else the first pair does), e.g. so that an
        optimizer's state has its final shape from the start. No-op when already allocated
        for size n; a different n is a ``ValueError``."""
        if self._Z is not None:
            if self._Z.shape[1] != n:
                raise ValueError(f"memory holds vectors of size {self._Z.shape[1]}, not {n}")
            return
        self._allocate(n, dtype, torch.device(device))

    def _allocate(self, n: int, dtype: torch.dtype, device: torch.device) -> None:
        if not dtype.is_floating_point:
            raise ValueError(f"LSR1 pairs must be floating point, got {dtype}")
        self._Z = torch.zeros(self.memory + 1, n, dtype=dtype, device=device)
        if self.auto_gamma:
            self._W = torch.zeros(2, self.memory, n, dtype=dtype, device=device)

    def _pop_oldest(self) -> int:
        """Forget the oldest pair; return its (now free) slot. Leaves a hole in the slots."""
        slot = self._slots.pop(0)
        self._PP = self._PP[1:, 1:]
        self._SP = self._SP[1:, 1:]
        if self.auto_gamma:
            self._SS = self._SS[1:, 1:]
            self._SY = self._SY[1:, 1:]
            self._YY = self._YY[1:, 1:]
        self._M = torch.zeros(0, 0, dtype=_F64)  # stale; rebuilt by _form_middle
        self._s2.pop(0)
        self._y2.pop(0)
        return slot

    def _drop_oldest(self) -> None:
        """Forget the oldest pair and keep the used slots contiguous (rare path)."""
        free = self._pop_oldest()
        last = len(self._slots)  # highest slot in use
        if free != last:
            assert self._Z is not None
            self._Z[1 + free].copy_(self._Z[1 + last])
            if self._W is not None:
                self._W[:, free].copy_(self._W[:, last])
            self._slots[self._slots.index(last)] = free

    def _form_middle(self) -> bool:
        """Form M = (M⁻¹)⁻¹, dropping oldest pairs while M⁻¹ is singular/non-finite.

        Returns whether the newest pair survived. The check runs an unpivoted LDLᵀ of
        M⁻¹ in pair order: its pivots are the SR1 denominators of the recursion over the
        held pairs started from γI, so a vanishing pivot is exactly a recursion breakdown.
        """
        eps = torch.finfo(self._Z.dtype).eps if self._Z is not None else 0.0
        while self._slots:
            Minv = _sym_lower(self._SP)
            ok = bool(torch.isfinite(Minv).all())
            if ok:
                norms = zip(self._s2, self._y2, strict=True)
                tol = [PIVOT_FACTOR * eps * math.sqrt(s2 * y2) for s2, y2 in norms]
                ok = _ldl_pivots_ok(Minv.tolist(), tol)
            if ok:
                M = torch.linalg.inv(Minv)
                ok = bool(torch.isfinite(M).all())
            if ok:
                self._M = 0.5 * (M + M.T)
                return True
            if len(self._slots) == 1:
                self._pop_oldest()
            else:
                self._drop_oldest()
        # Pairs are dropped oldest first, so the newest survives iff anything does.
        self._M = torch.zeros(0, 0, dtype=_F64)
        return False

    # ----------------------------------------------------------------- apply
    def matvec(self, v: Tensor) -> Tensor:
        """B·v = γv + Ψ(M(Ψᵀv)) for a vector v of size n (two passes over Ψ, no sync)."""
        shape = v.shape
        v = v.reshape(-1)
        if not self._slots:
            return (self._gamma * v).reshape(shape)
        psi = self._psi_rows()
        if self._M_dev is None:
            inv = self._inv_perm()
            self._M_dev = self._M[inv][:, inv].to(device=psi.device, dtype=psi.dtype)
        c = self._M_dev @ torch.mv(psi, v)
        return torch.addmv(v, psi.T, c, beta=self._gamma).reshape(shape)

    def spectrum(self) -> LSR1Spectrum:
        r"""Eigen-decomposition of B restricted to span(Ψ), from k×k matrices only (cached).

        Instead of a thin QR of Ψ (slow on n×k), use the Gram matrix ΨᵀΨ = VμVᵀ: with
        R = μ^{1/2}Vᵀ, Q = ΨVμ^{-1/2} is orthonormal and Ψ = QR. Then
        ΨMΨᵀ = Q(RMRᵀ)Qᵀ and RMRᵀ = UΛ̂Uᵀ gives P∥ = QU = Ψ(Vμ^{-1/2}U) and the
        eigenvalues λ = Λ̂ + γ (Brust, Erway & Marcia 2017, with Gram instead of QR).
        Near-null Gram directions (rank-deficient Ψ) are dropped.
        """
        if self._spectrum is not None:
            return self._spectrum
        k = len(self._slots)
        if k == 0:
            spec = LSR1Spectrum(None, torch.zeros(0, 0, dtype=_F64), (), self._gamma)
        else:
            assert self._Z is not None
            eps = torch.finfo(self._Z.dtype).eps
            mu, V = torch.linalg.eigh(0.5 * (self._PP + self._PP.T))
            keep = mu > RANK_FACTOR * k * eps * float(mu.max().clamp_min(0.0))
            mu, V = mu[keep], V[:, keep]
            if mu.numel() == 0:
                spec = LSR1Spectrum(None, torch.zeros(0, 0, dtype=_F64), (), self._gamma)
            else:
                R = mu.sqrt()[:, None] * V.T
                # RMRᵀ by a solve with M⁻¹ (backward stable) rather than with the inverse.
                T = R @ torch.linalg.solve(_sym_lower(self._SP), R.T)
                lam_hat, U = torch.linalg.eigh(0.5 * (T + T.T))
                coef = (V * mu.rsqrt()[None, :]) @ U  # oldest-first rows
                coef = coef[self._inv_perm()]  # storage-order rows
                lam = tuple((lam_hat + self._gamma).tolist())
                spec = LSR1Spectrum(self._psi_rows(), coef, lam, self._gamma)
        self._spectrum = spec
        return spec

    # ------------------------------------------------------------ checkpoint
    def state_dict(self) -> dict[str, Any]:
        """The memory as a flat dict of tensors and plain values (ints, floats, bools, lists).

        ``psi`` (and ``s``, ``y`` with ``gamma="auto"``) are the whole m×n buffers in storage
        order, *references* to the live buffers as in torch's own ``state_dict``s (deep-copy
        or save before updating on if you need a snapshot), None before allocation; their
        shape depends on m and n only, so a fresh memory's state has the layout of a used
        one (``torch.distributed.checkpoint`` loads in place). The k×k float64 matrices are
        nested lists of floats: exact, and left alone by ``Optimizer.load_state_dict``,
        which casts every tensor to the parameters' dtype. No strings (torch's loader
        mangles them).
        """
        Z, W = self._Z, self._W
        return {
            "memory": self.memory,
            "auto_gamma": self.auto_gamma,
            "gamma": self._gamma,
            "n": None if Z is None else Z.shape[1],
            "slots": list(self._slots),
            "psi": None if Z is None else Z[1:],
            "s": None if W is None else W[0],
            "y": None if W is None else W[1],
            "PP": self._PP.tolist(),
            "SP": self._SP.tolist(),
            "SS": self._SS.tolist(),
            "SY": self._SY.tolist(),
            "YY": self._YY.tolist(),
            "M": self._M.tolist(),
            "s2": list(self._s2),
            "y2": list(self._y2),
        }

    def load_state_dict(
        self,
        state: dict[str, Any],
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        """Restore :meth:`state_dict` output into buffers of its own (copied, so ``state``
        may be changed afterwards), n-vectors in ``device``/``dtype`` if given. The state
        carries m and whether γ is ``"auto"``, so they replace this memory's settings."""
        self.memory = check_int("memory", state["memory"], 1, MAX_MEMORY)
        auto = state["auto_gamma"]
        self._gamma_spec = "auto" if auto else float(state["gamma"])
        self._Z, self._W = None, None
        self.reset()
        self._gamma = float(state["gamma"])
        self._slots = [int(i) for i in state["slots"]]
        for name in ("PP", "SP", "SS", "SY", "YY", "M"):
            rows = state[name]
            if isinstance(rows, Tensor):  # tolerate tensors (e.g. a hand-made state)
                rows = rows.tolist()
            setattr(self, f"_{name}", torch.tensor(rows, dtype=_F64).reshape(len(rows), len(rows)))
        self._s2 = [float(v) for v in state["s2"]]
        self._y2 = [float(v) for v in state["y2"]]
        psi = state["psi"]
        if psi is not None:
            self._allocate(int(state["n"]), dtype or psi.dtype, torch.device(device or psi.device))
            assert self._Z is not None
            rows = min(psi.shape[0], self.memory)  # m rows, or k rows from an older format
            self._Z[1 : 1 + rows].copy_(psi[:rows])
            if self._W is not None:
                self._W[0, :rows].copy_(state["s"][:rows])
                self._W[1, :rows].copy_(state["y"][:rows])
        self._invalidate()


def _append(A: Tensor, col: Tensor, row: Tensor, diag: float) -> Tensor:
    """[[A, col], [rowᵀ, diag]] for a k×k float64 A and k-vectors col, row."""
    k = A.shape[0]
    out = torch.empty(k + 1, k + 1, dtype=_F64)
    out[:k, :k] = A
    out[:k, k] = col
    out[k, :k] = row
    out[k, k] = diag
    return out


def _sym_lower(A: Tensor) -> Tensor:
    """Symmetric matrix with the lower triangle (diagonal included) of A."""
    # Plain Python on a k×k list: tiny torch kernels (tril) cost more than the arithmetic.
    a = A.tolist()
    k = len(a)
    return torch.tensor([[a[max(i, j)][min(i, j)] for j in range(k)] for i in range(k)], dtype=_F64)


def _ldl_pivots_ok(A: list[list[float]], tol: list[float]) -> bool:
    """Unpivoted LDLᵀ of a small symmetric A: every pivot |dⱼ| must exceed tol[j]."""
    k = len(A)
    L = [[0.0] * k for _ in range(k)]
    d = [0.0] * k
    for j in range(k):
        dj = A[j][j] - sum(L[j][t] ** 2 * d[t] for t in range(j))
        if not (math.isfinite(dj) and abs(dj) > tol[j]):
            return False
        d[j] = dj
        for i in range(j + 1, k):
            L[i][j] = (A[i][j] - sum(L[i][t] * L[j][t] * d[t] for t in range(j))) / dj
    return True
