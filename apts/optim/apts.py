"""APTS: data-parallel Additively Preconditioned Trust-Region Strategy.

Cruz Alegría, Trotti, Kopaničáková, Krause, "Data-Parallel Neural Network Training
via Nonlinearly Preconditioned Trust-Region Method", arXiv 2502.05133; the choices
the paper leaves open follow the authors' code (cruzas/DD4ML, cruzas/ML_APTS). The
specification this file implements is ``docs/APTS.md``, "One APTS iteration k".
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor

from apts.checks import check_bool, check_choice, check_int, check_number
from apts.optim.comm import communicator
from apts.optim.flat import flat_grad, flat_params, set_flat_params_
from apts.optim.lsr1 import LSR1
from apts.optim.trust_region import (
    FlatLSR1Optimizer,
    judge_trial,
    offer_pair,
    rules_from_group,
    tr_iteration,
)
from apts.optim.variants import (
    adam_iteration,
    init_state,
    momentum_proposal,
    reference_loss,
    remember_loss,
    track_stall,
)

# The global test rejects when the summed local reductions are this small (APTS.md, 6).
_PRED_FLOOR = 1e-12
_BOUNDARY_TOL = 1e-3


class _Start(NamedTuple):
    """Step 1's values at θ_k: this rank's shard loss and gradient, and the global ones."""

    f_i: Tensor
    g_i: Tensor
    f: Tensor
    g: Tensor


class _Test(NamedTuple):
    """Step 6's outcome: the point kept (θ, f, g) and the test's diagnostics."""

    point: tuple[Tensor, Any, Tensor]
    accepted: bool
    rho: float
    pred: float
    ared: float


class APTS(FlatLSR1Optimizer):
    r"""Data-parallel APTS, one rank per subdomain; every rank runs the same code.

    Rank :math:`i` owns shard :math:`B_k^i` of mini-batch :math:`B_k`, with mean loss
    :math:`f_i`; :math:`f = \frac1N\sum_i f_i`. One :meth:`step` is one iteration
    :math:`k` from :math:`\theta_k` with global radius :math:`\Delta_k`:

    .. math::
        \begin{aligned}
        &1.\ [g_k, f_k] = \tfrac1N \textstyle\sum_i [\nabla f_i(\theta_k), f_i(\theta_k)]
            &&\text{(all-reduce 1)}\\
        &2.\ m_i(x) = f_i(x) + \langle g_k - \nabla f_i(\theta_k), x - \theta_k\rangle
            &&(\nabla m_i(\theta_k) = g_k)\\
        &3.\ x \leftarrow \text{up to } L \text{ TR iterations on } m_i
            \text{ in } \|x-\theta_k\| \le \Delta_k/N;\ s_i = x-\theta_k,\
            r_i = m_i(\theta_k) - m_i(x) \\
        &4.\ [s_k, \mathrm{pred}_k] = \textstyle\sum_i [s_i, r_i]
            &&\text{(all-reduce 2)}\\
        &5.\ [g^+, f^+] = \tfrac1N \textstyle\sum_i [\nabla f_i, f_i](\theta_k + s_k)
            &&\text{(all-reduce 3)}\\
        &6.\ \rho_k = (f_k - f^+)/\mathrm{pred}_k:\ \text{accept/reject and update }
            \Delta \text{ by the TR rules; offer } (s_k, g^+ - g_k) \text{ to L-SR1}\\
        &7.\ G \text{ global TR iterations on } f \text{ (L-SR1, exact subproblem)}
            &&\text{(one all-reduce each)}
        \end{aligned}

    So an iteration costs exactly :math:`3 + G` all-reduces of :math:`n+1` numbers and
    :math:`2 + L + G` forward/backward passes over the rank's shard. The local phase
    keeps its own L-SR1 memory (``local_memory="keep"``: across iterations, as in the
    authors' code). With one rank (``comm=None`` or a world of one) the same code is
    L local TR iterations, the global test and G global TR iterations.

    After every trial point, accepted or rejected, the pair (step, gradient change) is
    offered to the L-SR1 memory it came from (``update_rejected``, APTS.md rule 4): in the
    local iterations, the global test and the global iterations.

    Args:
        params: parameters (one group; flattened internally into one vector).
        comm: keyword-only; a :class:`~apts.optim.comm.Communicator` (``world_size`` and
            an in-place ``all_reduce(tensor, op)``, e.g. the runner's counted
            :class:`apts.training.comm.Comm`) or ``None`` for one process.
        local_iters: L, local TR iterations per step (0 disables the local phase).
        global_iters: G, global TR iterations per step.
        foc: use the first-order-consistent local objective :math:`m_i` (else :math:`f_i`).
        order: ``"second"`` (L-SR1 model, exact OBS subproblem) or ``"first"`` (Cauchy).
        memory, gamma: L-SR1 pairs and initial curvature (number or ``"auto"``).
        local_memory: ``"keep"`` or ``"reset"`` the local L-SR1 memory every step.
        radius, min_radius, max_radius, eta1, eta2, dec, inc: trust-region constants
            (APTS.md, "Trust-region building block"); the local phase uses radius
            :math:`\Delta_k/N` and the same acceptance constants.
        update_rejected: offer rejected trial points' pairs too (default; False is the old
            acceptance-only rule).

    Every argument is checked here (``ValueError`` starting with ``<argument>=<value>``).
    State, the torch way: the options and the current Δ in the param group, and
    ``state[first parameter] = {"step", "global_lsr1", "local_lsr1"}`` (this rank's
    memories; see :class:`~apts.optim.trust_region.FlatLSR1Optimizer`).

    ``step(closure)``: ``closure`` zeroes the gradients, computes the mean loss of this
    rank's shard, calls ``backward`` and returns the loss. Returns the global loss at
    the accepted point. ``last_info`` holds the step's diagnostics.
    """

    # Its ranks' shards of a mini-batch may overlap (the runner's ``overlap``, APTS.md ω).
    uses_overlap = True

    _memories = ("global_lsr1", "local_lsr1")

    def __init__(
        self,
        params,
        *,
        comm=None,
        local_iters: int = 3,
        global_iters: int = 3,
        foc: bool = True,
        order: str = "second",
        memory: int = 10,
        gamma: float | str = 1e-3,
        local_memory: str = "keep",
        radius: float = 0.1,
        min_radius: float = 1e-4,
        max_radius: float = 1.0,
        eta1: float = 0.25,
        eta2: float = 0.75,
        dec: float = 0.5,
        inc: float = 2.0,
        update_rejected: bool = True,
        window: int = 1,
        momentum: float = 0.0,
        local_solver: str = "tr",
        batch_growth: float = 1.0,
        growth_window: int = 10,
        growth_tol: float = 0.01,
    ):
        comm = communicator(comm)
        defaults = dict(
            local_iters=check_int("local_iters", local_iters, 0),
            global_iters=check_int("global_iters", global_iters, 0),
            foc=check_bool("foc", foc),
            local_memory=check_choice("local_memory", local_memory, ("keep", "reset")),
            window=check_int("window", window, 1),
            momentum=check_number("momentum", momentum, 0.0, 1.0, hi_open=True),
            local_solver=check_choice("local_solver", local_solver, ("tr", "adam")),
            batch_growth=check_number("batch_growth", batch_growth, 1.0),
            growth_window=check_int("growth_window", growth_window, 1),
            growth_tol=check_number("growth_tol", growth_tol, 0.0),
            **self.check_options(
                radius=radius,
                min_radius=min_radius,
                max_radius=max_radius,
                eta1=eta1,
                eta2=eta2,
                dec=dec,
                inc=inc,
                order=order,
                memory=memory,
                gamma=gamma,
                update_rejected=update_rejected,
            ),
        )
        super().__init__(params, defaults, comm)
        self.world_size = self.comm.world_size
        self.last_info: dict[str, Any] = {}
        self._init_variants()

    def _init_variants(self) -> None:
        like = torch.zeros(self._numel, dtype=self._dtype, device=self._device)
        init_state(self._state, self.param_groups[0], like)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._init_variants()

    @property
    def batch_size_factor(self) -> float:
        """The factor by which the mini-batch should now be larger than at the start
        (``batch_growth``; 1.0 while it is off). The training loop reads it before each
        mini-batch; it is part of the state, so a resumed run continues with it."""
        return float(self._state["batch_factor"])

    @property
    def global_hess(self) -> LSR1 | None:
        """The global L-SR1 memory (None for ``order="first"``)."""
        return self._lsr1.get("global_lsr1")

    @property
    def local_hess(self) -> LSR1 | None:
        """This rank's local L-SR1 memory (None for ``order="first"``)."""
        return self._lsr1.get("local_lsr1")

    @property
    def radius(self) -> float:
        """The current global trust radius Δ_k (kept in the param group, so saved)."""
        return self.param_groups[0]["radius"]

    @radius.setter
    def radius(self, value: float) -> None:
        self.param_groups[0]["radius"] = float(value)

    # -- evaluations -------------------------------------------------------------
    def _local_eval(self, closure, x: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """f_i and ∇f_i of this rank's shard at x (the current parameters if None)."""
        if x is not None:
            set_flat_params_(self._params, x)
        loss = closure()
        return torch.as_tensor(loss).detach(), flat_grad(self._params)

    def _global_eval(self, closure, x: Tensor) -> tuple[Tensor, Tensor]:
        """f and ∇f over the whole mini-batch at x: ONE all-reduce of [∇f_i, f_i]."""
        set_flat_params_(self._params, x)
        return self._evaluate(closure)

    def local_objective(self, closure, theta: Tensor, g_k: Tensor, g_i: Tensor):
        r"""This rank's local objective as ``x -> (m_i(x), ∇m_i(x))``.

        :math:`m_i(x) = f_i(x) + \langle g_k - g_i, x - \theta_k\rangle` with ``g_i`` the
        shard gradient at :math:`\theta_k` (``foc=True``), so that
        :math:`\nabla m_i(\theta_k) = g_k` and :math:`\sum_i m_i = N f`; else :math:`f_i`.
        """
        if not self.param_groups[0]["foc"]:
            return lambda x: self._local_eval(closure, x)
        c = g_k - g_i

        def fg(x: Tensor) -> tuple[Tensor, Tensor]:
            f, g = self._local_eval(closure, x)
            return f + torch.dot(c, x - theta), g.add_(c)

        return fg

    # -- the iteration, phase by phase -----------------------------------------------
    @torch.no_grad()
    def step(self, closure):  # type: ignore[override]
        if closure is None:
            raise ValueError("APTS.step needs a closure that returns the loss of this shard")
        closure = torch.enable_grad()(closure)
        group, st = self.param_groups[0], self._state
        theta_k = flat_params(self._params)
        start = self._global_gradient(closure, theta_k)
        track_stall(st, group, start.f)
        x, f_x, local_done = self._local_phase(closure, theta_k, start)
        test = self._global_test(closure, theta_k, start, x, f_x)
        theta, f, global_accepted = self._global_pass(closure, *test.point)

        set_flat_params_(self._params, theta)
        remember_loss(st, group["window"], f)
        if group["momentum"] > 0.0:
            torch.sub(theta, theta_k, out=st["velocity"])
        st["step"] += 1
        self._sync_state()
        self.last_info = {
            "radius": self.radius,
            "rho": test.rho,
            "accepted": test.accepted,
            "pred": test.pred,
            "ared": test.ared,
            "local_iters": local_done,
            "global_accepted": global_accepted,
        }
        if group["batch_growth"] > 1.0:
            self.last_info["batch_factor"] = self.batch_size_factor
        return f

    def _global_gradient(self, closure, theta: Tensor) -> _Start:
        """Step 1: f_i, ∇f_i at θ_k, and ONE all-reduce (mean) of [∇f_i, f_i] -> f_k, g_k."""
        f_i, g_i = self._local_eval(closure)
        buf = self._buffer()
        buf[:-1] = g_i
        buf[-1] = f_i
        f_k, g_k = self._reduce(buf, "mean")
        return _Start(f_i, g_i, f_k, g_k)

    def _local_phase(self, closure, theta: Tensor, start: _Start) -> tuple[Tensor, Tensor, int]:
        """Steps 2-3, no communication: up to L TR iterations on m_i from θ_k, the iterate
        kept in ‖x − θ_k‖ ≤ Δ_k/N, stopping once on that ball's boundary. Returns x, m_i(x)
        (f_i(x) without ``foc``) and the number of iterations done."""
        group = self.param_groups[0]
        local_fg = self.local_objective(closure, theta, start.g, start.g_i)
        x, fx = theta, start.f_i
        gx = start.g if group["foc"] else start.g_i
        ball = self.radius / self.world_size
        rules = rules_from_group(
            group, radius=ball, min_radius=group["min_radius"] / self.world_size, max_radius=ball
        )
        if self.local_hess is not None and group["local_memory"] == "reset":
            self.local_hess.reset()
        r = ball
        done = 0
        for _ in range(group["local_iters"]):
            dist = torch.linalg.vector_norm(x - theta).item() if done else 0.0
            budget = ball - dist
            # Stop once on the ball's boundary (authors' rule). A step that ended on it
            # measures ‖x − θ_k‖ a rounding error short of Δ_k/N: a relative 1e-3 tolerance
            # spares a useless trial evaluation of a vanishing step.
            if budget <= _BOUNDARY_TOL * ball:
                break
            if group["local_solver"] == "adam":
                res = adam_iteration(self._state, local_fg, x, fx, gx, r, budget, rules)
            else:
                res = tr_iteration(
                    local_fg, x, fx, gx, r, self.local_hess, rules,
                    radius_cap=budget, update_rejected=group["update_rejected"],
                )  # fmt: skip
            done += 1
            r = res.radius
            x, fx, gx = res.x, res.f, res.g
        return x, fx, done

    def _global_test(self, closure, theta: Tensor, start: _Start, x: Tensor, fx) -> _Test:
        """Steps 4-6: ONE all-reduce (sum) of [s_i, r_i] -> s_k, pred_k; ONE all-reduce of
        [∇f_i, f_i] at the trial point θ_k + s_k; the TR test of ρ_k = (f_k − f⁺)/pred_k
        (pred_k ≤ 1e-12 or anything non-finite: reject), which updates Δ. Either way the
        pair (s_k, g⁺ − g_k) goes to the global memory (rule 4), unless f⁺ is not finite."""
        group = self.param_groups[0]
        buf = self._buffer()
        torch.sub(x, theta, out=buf[:-1])
        buf[-1] = start.f_i - fx
        pred_k, s_k = self._reduce(buf, "sum")
        # momentum (off: step is s_k itself) and the non-monotone reference (off: f_k)
        step, pred_k = momentum_proposal(
            self._state, group["momentum"], s_k, pred_k, start.g, self.global_hess
        )
        trial = theta + step
        f_t, g_t = self._global_eval(closure, trial)
        f_ref = reference_loss(self._state, group["window"], start.f)
        rules = rules_from_group(group, min_pred=_PRED_FLOOR)
        (accepted, self.radius, rho), ared, f_trial, pred = judge_trial(
            rules, f_ref, f_t, g_t, pred_k, torch.linalg.vector_norm(s_k), self.radius
        )
        offer_pair(
            self.global_hess, step, g_t - start.g, f_trial, accepted, group["update_rejected"]
        )
        point = (trial, f_t, g_t) if accepted else (theta, start.f, start.g)
        return _Test(point, accepted, rho, pred, ared)

    def _global_pass(self, closure, theta: Tensor, f, g: Tensor) -> tuple[Tensor, Any, int]:
        """Step 7: G TR iterations on f over the whole mini-batch with the global L-SR1
        memory, one all-reduce per trial point. Returns θ_{k+1}, f(θ_{k+1}) and the number
        of accepted iterations."""
        group = self.param_groups[0]
        accepted = 0
        for _ in range(group["global_iters"]):
            res = tr_iteration(
                lambda y: self._global_eval(closure, y), theta, f, g, self.radius,
                self.global_hess, rules_from_group(group),
                update_rejected=group["update_rejected"],
            )  # fmt: skip
            self.radius = res.radius
            accepted += int(res.accepted)
            theta, f, g = res.x, res.f, res.g
        return theta, f, accepted
