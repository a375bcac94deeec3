r"""Trust-region iteration (functional core) and the :class:`TrustRegion` optimizer.

One TR iteration on an objective φ over a flat vector x with radius Δ and model
q(p) = φ(x) + gᵀp + ½pᵀBp:

1. solve min q(p) s.t. ‖p‖ ≤ Δ (:func:`~apts.optim.subproblem.solve_subproblem`);
2. pred = q(0) − q(p), ared = φ(x) − φ(x + p), ρ = ared/pred;
3. ρ < η₁ or ared/pred not finite: reject, Δ ← max(dec·Δ, Δ_min);
   ρ > η₂ and ‖p‖ ≥ 0.9Δ: accept, Δ ← min(inc·Δ, Δ_max); otherwise accept, Δ kept;
4. after every trial point, accepted or rejected, offer (s, y) = (p, ∇φ(x + p) − ∇φ(x))
   to the L-SR1 memory (Nocedal & Wright, Alg. 6.2; its skip rule drops unusable pairs).
   Updating on acceptance only leaves a wrong model uncorrected: at Δ = Δ_min the same
   step would be rejected forever (``update_rejected=False`` keeps that old behaviour).

A non-finite loss or gradient at the trial point is a rejection, never a crash, and its
pair is not offered. :func:`tr_iteration` does this for any ``fg(x) -> (φ(x), ∇φ(x))`` —
APTS reuses it for its local and global iterations; :class:`TrustRegion` wraps it as a
torch optimizer. :class:`FlatLSR1Optimizer` is what TrustRegion and APTS share: one flat
parameter vector, the options checked in the constructor, the L-SR1 memories kept in
``Optimizer.state`` so that torch's ``state_dict``/``load_state_dict`` carry them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor
from torch.optim import Optimizer

from apts.checks import check_bool, check_choice, check_number

from .comm import Communicator, communicator
from .flat import check_flat_params, flat_grad, flat_params, num_params, set_flat_params_
from .lsr1 import LSR1
from .subproblem import solve_subproblem_detailed

__all__ = [
    "FlatLSR1Optimizer",
    "TRDecision",
    "TRResult",
    "TRRules",
    "TrustRegion",
    "judge_trial",
    "offer_pair",
    "rules_from_group",
    "tr_iteration",
]


class TRDecision(NamedTuple):
    """Outcome of the acceptance test: ``accepted, radius, rho = rules.decide(...)``."""

    accepted: bool
    radius: float
    rho: float


@dataclass(frozen=True)
class TRRules:
    """Acceptance test and radius update of a trust-region method (APTS.md, step 3).

    Attributes:
        radius: initial radius Δ₀ (used by callers that start from the rules).
        min_radius, max_radius: Δ stays in [min_radius, max_radius].
        eta1: reject when ρ < η₁. eta2: grow when ρ > η₂ and the step reached the boundary.
        dec: shrink factor on rejection. inc: growth factor.
        boundary: a step with ‖p‖ ≥ boundary·Δ counts as on the boundary (0.9).
        min_pred: reject when pred ≤ min_pred (the model must predict a decrease; APTS's
            global test uses 1e-12).
    """

    radius: float = 0.1
    min_radius: float = 1e-4
    max_radius: float = 1.0
    eta1: float = 0.25
    eta2: float = 0.75
    dec: float = 0.5
    inc: float = 2.0
    boundary: float = 0.9
    min_pred: float = 0.0

    def __post_init__(self) -> None:
        # Messages start with "<field>=<value!r>": the fields are the optimizers' arguments.
        for name in self.__dataclass_fields__:
            check_number(name, getattr(self, name))
        check_number("max_radius", self.max_radius, 0.0, lo_open=True)
        check_number("min_radius", self.min_radius, 0.0, self.max_radius, where="[0, max_radius]")
        # Δ must be positive: with min_radius = 0 the interval is open on the left.
        where = "[min_radius, max_radius]"
        lo_open = self.min_radius == 0.0
        check_number("radius", self.radius, self.min_radius, self.max_radius, lo_open=lo_open,
                     where=where)  # fmt: skip
        check_number("eta2", self.eta2, 0.0, 1.0)
        check_number("eta1", self.eta1, 0.0, self.eta2, where="[0, eta2]")
        check_number("dec", self.dec, 0.0, 1.0, lo_open=True, hi_open=True)
        check_number("inc", self.inc, 1.0)
        check_number("boundary", self.boundary, 0.0, 1.0, lo_open=True)
        check_number("min_pred", self.min_pred, 0.0)

    def shrink(self, radius: float) -> float:
        """Radius after a rejection: max(dec·Δ, Δ_min)."""
        return max(self.dec * radius, self.min_radius)

    def decide(self, ared: float, pred: float, step_norm: float, radius: float) -> TRDecision:
        """Accept or reject a step and update the radius (ρ = ared/pred, nan if undefined)."""
        ared, pred = float(ared), float(pred)
        if not (math.isfinite(ared) and math.isfinite(pred)) or pred <= self.min_pred:
            return TRDecision(False, self.shrink(radius), math.nan)
        rho = ared / pred
        if not math.isfinite(rho) or rho < self.eta1:
            return TRDecision(False, self.shrink(radius), rho)
        if rho > self.eta2 and step_norm >= self.boundary * radius:
            return TRDecision(True, min(self.inc * radius, self.max_radius), rho)
        return TRDecision(True, radius, rho)


def judge_trial(
    rules: TRRules, f: Any, f_trial: Any, g_trial: Tensor, pred: Any, step_norm: Any, radius: float
) -> tuple[TRDecision, float, float, float]:
    """The acceptance test of a trial point: ``rules.decide`` on ρ = (f − f_trial)/pred, and a
    rejection when the trial gradient is not finite (a finite loss with a non-finite gradient
    is still no place to move to). Values may be floats or 0-d tensors on any device; they are
    read with one host sync, in float64. Returns the decision, ared, f_trial and pred as
    floats."""
    vals = [f, f_trial, pred, step_norm, torch.isfinite(g_trial).all()]
    f, ft, pred, step_norm, finite = torch.stack(
        [torch.as_tensor(v, dtype=torch.float64, device=g_trial.device) for v in vals]
    ).tolist()
    ared = f - ft
    decision = rules.decide(ared, pred, step_norm, radius)
    if decision.accepted and not finite:
        decision = TRDecision(False, rules.shrink(radius), decision.rho)
    return decision, ared, ft, pred


@dataclass
class TRResult:
    """Result of :func:`tr_iteration`.

    ``x, f, g`` are the new point, its objective value and gradient: the trial point's on
    acceptance, the very objects passed in on rejection. ``radius`` is the updated radius.
    Diagnostics: ``accepted, rho, pred, ared, step_norm, f_trial`` (float φ(x + p), maybe
    non-finite), ``step`` (the subproblem solution p), ``sigma`` (its Lagrange multiplier),
    ``radius_used`` (the radius of the subproblem) and ``hess_updated`` (whether the L-SR1
    memory stored the pair).
    """

    x: Tensor
    f: Any
    g: Tensor
    radius: float
    accepted: bool
    rho: float
    pred: float
    ared: float
    step_norm: float
    f_trial: float
    step: Tensor
    sigma: float
    radius_used: float
    hess_updated: bool = False


FG = Callable[[Tensor], tuple[Any, Tensor]]


def offer_pair(
    hess: LSR1 | None, s: Tensor, y: Tensor, f_trial: float, accepted: bool, update_rejected: bool
) -> bool:
    """Rule 4 of the TR building block: after a trial point offer (s, y) to ``hess``.

    Always after an acceptance; after a rejection only with ``update_rejected`` and a
    finite trial loss (a pair measured where the loss is not finite is no information).
    :meth:`LSR1.update` skips non-finite and unusable pairs itself. Returns whether the
    memory stored the pair.
    """
    if hess is None or not (accepted or (update_rejected and math.isfinite(f_trial))):
        return False
    return hess.update(s, y)


def tr_iteration(
    fg: FG,
    x: Tensor,
    f: Any,
    g: Tensor,
    radius: float,
    hess: LSR1 | None,
    rules: TRRules,
    *,
    radius_cap: float | None = None,
    update_rejected: bool = True,
) -> TRResult:
    """One trust-region iteration from (x, φ(x), ∇φ(x)) on the objective ``fg``.

    Args:
        fg: ``fg(x) -> (φ(x), ∇φ(x))`` on a flat vector (φ a float or 0-d tensor; any
            side effects such as writing x into a model are the caller's). Non-finite values
            are a rejection. It is called exactly once (also when the step is degenerate,
            so collective communication inside ``fg`` stays in step across ranks).
        x, f, g: current point, φ(x), ∇φ(x) (1-D tensors of equal size; f float or tensor).
        radius: current radius Δ.
        hess: the L-SR1 model (second order; updated in place) or None (first order, B = 0).
        rules: acceptance test and radius update (:class:`TRRules`; ``rules.radius`` is not
            used here).
        radius_cap: optional cap for this iteration, e.g. the distance to the edge of
            APTS's local ball: the subproblem and the rules then use Δ = min(radius, cap).
        update_rejected: offer the pair of a rejected step to ``hess`` too (APTS.md rule 4,
            Nocedal & Wright Alg. 6.2). False is the old rule (acceptance only), under which
            a wrong model at Δ = Δ_min is never corrected.

    Returns:
        :class:`TRResult`; on rejection ``x, f, g`` are the objects passed in (bit-identical).
    """
    delta = float(radius) if radius_cap is None else min(float(radius), float(radius_cap))
    sol = solve_subproblem_detailed(g, hess, delta)
    x_trial = x + sol.p
    f_trial, g_trial = fg(x_trial)
    (accepted, new_radius, rho), ared, ft, _ = judge_trial(
        rules, f, f_trial, g_trial, sol.pred, sol.step_norm, delta
    )
    updated = offer_pair(hess, sol.p, g_trial - g, ft, accepted, update_rejected)
    keep = (x_trial, f_trial, g_trial) if accepted else (x, f, g)
    return TRResult(
        x=keep[0],
        f=keep[1],
        g=keep[2],
        radius=new_radius,
        accepted=accepted,
        rho=rho,
        pred=sol.pred,
        ared=ared,
        step_norm=sol.step_norm,
        f_trial=ft,
        step=sol.p,
        sigma=sol.sigma,
        radius_used=delta,
        hess_updated=updated,
    )


TR_OPTIONS = ("radius", "min_radius", "max_radius", "eta1", "eta2", "dec", "inc")


def rules_from_group(group: dict[str, Any], **changes: float) -> TRRules:
    """The :class:`TRRules` of a param group (``radius`` is the current Δ), with ``changes``."""
    return TRRules(**{**{k: group[k] for k in TR_OPTIONS}, **changes})


class FlatLSR1Optimizer(Optimizer):
    """Base of :class:`TrustRegion` and :class:`~apts.optim.APTS`: one parameter group seen
    as one flat vector θ, trust-region options checked at construction, L-SR1 memories in
    ``Optimizer.state``.

    State, the torch way (as :class:`torch.optim.LBFGS`): everything lives in the param
    group (the options and the current radius) and in ``self.state[first parameter]`` =
    ``{"step": int, <name>: LSR1.state_dict() for each memory name}``, so the inherited
    ``state_dict``/``load_state_dict`` and ``torch.distributed.checkpoint`` carry it. The
    memory's n-vectors are the live buffers (like ``exp_avg`` in Adam), allocated at
    construction in the parameters' dtype and device with a fixed shape, so a fresh
    optimizer's ``state_dict()`` has the layout a checkpoint loads into; the small float64
    matrices are plain nested lists (torch casts every tensor of the state to the
    parameters' dtype on load, which would round them for a float32 model). The live
    :class:`LSR1` objects are rebuilt from ``self.state`` after a load; a state without the
    memory entries loads as an empty memory. The other parameters have empty entries.

    With ``torch.distributed.checkpoint`` use its optimizer helpers, which key the state by
    parameter name (``dcp`` turns every key into a string, so the integer keys of a plain
    ``state_dict()`` would not find their way back for non-tensor values)::

        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
        model_sd, optim_sd = get_state_dict(model, optimizer)
        dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=path)
        # ... later, with a freshly constructed model and optimizer:
        model_sd, optim_sd = get_state_dict(model, optimizer)
        sd = {"model": model_sd, "optim": optim_sd}
        dcp.load(sd, checkpoint_id=path)
        set_state_dict(model, optimizer, model_state_dict=sd["model"], optim_state_dict=sd["optim"])
    """

    # What a runner must give it: step(closure) (the loss of this rank's shard, re-evaluated
    # at trial points), and the collectives it issues itself (a ``comm``, no DDP).
    requires_closure = True
    requires_comm = True

    _memories: tuple[str, ...] = ()  # names of the L-SR1 memories in the state

    def __init__(self, params: Any, defaults: dict[str, Any], comm: Communicator) -> None:
        super().__init__(params, defaults)
        if len(self.param_groups) != 1:
            raise ValueError(f"{type(self).__name__} supports a single parameter group")
        self._params: list[Tensor] = self.param_groups[0]["params"]
        self._dtype, self._device = check_flat_params(self._params)
        self._numel = num_params(self._params)
        self.comm = comm
        self._build_memories()

    # -- evaluations and collectives ------------------------------------------------
    def _buffer(self) -> Tensor:
        """A communication buffer [vector (n) | scalar (1)] in the parameters' dtype."""
        return torch.empty(self._numel + 1, dtype=self._dtype, device=self._device)

    def _reduce(self, buf: Tensor, op: str) -> tuple[Tensor, Tensor]:
        """ONE all-reduce of ``buf`` = [vector | scalar] in place; returns (scalar, vector)."""
        self.comm.all_reduce(buf, op=op)
        return buf[-1], buf[:-1]

    def _evaluate(self, closure: Callable[[], Any]) -> tuple[Tensor, Tensor]:
        """Run the closure at the current parameters; return (f, ∇f) averaged over the
        ranks: one flat buffer [∇f_i, f_i], a single collective instead of one per tensor."""
        loss = closure()
        buf = self._buffer()
        flat_grad(self._params, out=buf[:-1])
        buf[-1] = torch.as_tensor(loss).detach()
        return self._reduce(buf, "mean")

    @staticmethod
    def check_options(
        *,
        radius: float,
        min_radius: float,
        max_radius: float,
        eta1: float,
        eta2: float,
        dec: float,
        inc: float,
        order: str,
        memory: int,
        gamma: float | str,
        update_rejected: bool,
    ) -> dict[str, Any]:
        """Check the options common to TrustRegion and APTS; return them as group defaults."""
        rules = TRRules(radius, min_radius, max_radius, eta1, eta2, dec, inc)
        check_choice("order", order, ("first", "second"))
        LSR1.check_options(memory, gamma)
        check_bool("update_rejected", update_rejected)
        return {
            **{k: getattr(rules, k) for k in TR_OPTIONS},
            "order": order,
            "memory": int(memory),
            "gamma": gamma if gamma == "auto" else float(gamma),
            "update_rejected": update_rejected,
        }

    # -- state ----------------------------------------------------------------------
    @property
    def _state(self) -> dict[str, Any]:
        return self.state[self._params[0]]

    def _build_memories(self) -> None:
        """(Re)build the live L-SR1 memories from ``self.state`` (empty where absent)."""
        group, st = self.param_groups[0], self._state
        for p in self._params[1:]:
            # An (empty) entry per trainable parameter: the optimizer-state helpers of
            # torch.distributed.checkpoint expect one for each.
            self.state[p].clear()
        step = st.get("step", 0)
        st["step"] = int(step.item() if isinstance(step, Tensor) else step)
        self._lsr1: dict[str, LSR1] = {}
        for name in self._memories:
            saved = st.pop(name, None)
            if group["order"] != "second":
                continue
            hess = LSR1(group["memory"], group["gamma"])
            if saved is not None:
                hess.load_state_dict(saved, device=self._device, dtype=self._dtype)
                if saved["n"] not in (None, self._numel):
                    raise ValueError(
                        f"the state's {name} memory holds vectors of size {saved['n']}, but "
                        f"the parameters have {self._numel} numbers: it is another model's state"
                    )
            hess.allocate(self._numel, self._dtype, self._device)
            self._lsr1[name] = hess
        self._sync_state()

    def _sync_state(self) -> None:
        st = self._state
        for name, hess in self._lsr1.items():
            st[name] = hess.state_dict()

    def state_dict(self) -> dict[str, Any]:
        """torch's ``state_dict`` (the memories' tensors are references to live buffers, as
        torch's are: copy or save it before stepping on if you need a snapshot)."""
        self._sync_state()
        return super().state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """torch's ``load_state_dict`` (tensors moved to the parameters' dtype and device),
        then the live L-SR1 memories rebuilt from the loaded state."""
        super().load_state_dict(state_dict)
        self._build_memories()


class TrustRegion(FlatLSR1Optimizer):
    r"""Trust-region optimizer with an L-SR1 model (or a first-order linear model).

    Each :meth:`step` is one TR iteration on the closure's loss f with all parameters
    as one flat vector θ:

    .. math::
        p = \arg\min_{\|p\| \le \Delta} f(\theta) + g^T p + \tfrac12 p^T B p,\qquad
        \rho = \frac{f(\theta) - f(\theta + p)}{-(g^T p + \frac12 p^T B p)},

    accept θ ← θ + p when ρ ≥ η₁ (and f, ∇f finite there), update Δ by the TR rules
    (:class:`TRRules`), and offer (p, ∇f(θ+p) − ∇f(θ)) to the L-SR1 memory, accepted or
    not (``update_rejected``). ``order="second"`` uses B = L-SR1 (exact OBS subproblem),
    ``order="first"`` B = 0 (p = −Δg/‖g‖).

    Args:
        params: parameters (one group; one floating dtype and one device).
        comm: keyword-only, a :class:`~apts.optim.comm.Communicator` for data
            parallelism, or None for one process: after every closure evaluation the
            buffer [∇f (n), f (1)] is averaged in place with one
            ``comm.all_reduce(buf, op="mean")``, so a step makes exactly two such calls.
        radius: initial Δ. min_radius, max_radius: bounds on Δ.
        eta1, eta2, dec, inc: TR constants (see :class:`TRRules`).
        order: ``"second"`` (default) or ``"first"``.
        memory, gamma: L-SR1 memory m and γ (number > 0 or ``"auto"``), second order only.
        update_rejected: offer the pairs of rejected steps to the memory too (default; False
            is the old acceptance-only rule).

    Every argument is checked here (``ValueError`` starting with ``<argument>=<value>``).
    The current radius lives in ``param_groups[0]["radius"]``, the step count and the
    L-SR1 memory in ``state[first parameter]`` (see :class:`FlatLSR1Optimizer`). After a
    step ``last_info`` holds its diagnostics (radius, radius_used, rho, accepted, pred,
    ared, step_norm, loss, loss_trial, sigma, hess_updated, memory, steps).
    """

    _memories = ("lsr1",)

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        *,
        comm: Communicator | None = None,
        radius: float = 0.1,
        min_radius: float = 1e-4,
        max_radius: float = 1.0,
        eta1: float = 0.25,
        eta2: float = 0.75,
        dec: float = 0.5,
        inc: float = 2.0,
        order: str = "second",
        memory: int = 10,
        gamma: float | str = 1e-3,
        update_rejected: bool = True,
    ) -> None:
        comm = communicator(comm)
        defaults = self.check_options(
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
        )
        super().__init__(params, defaults, comm)
        self.last_info: dict[str, Any] = {}

    @property
    def hess(self) -> LSR1 | None:
        """The L-SR1 memory (None for ``order="first"``)."""
        return self._lsr1.get("lsr1")

    @torch.no_grad()
    def step(self, closure: Callable[[], Any]) -> Tensor:  # type: ignore[override]
        """One TR iteration. Returns the loss at the point kept (a detached 0-d tensor).

        ``closure`` must zero the gradients, compute the loss, call ``backward()`` and
        return the loss (as for :class:`torch.optim.LBFGS`); it is called twice (current
        and trial point) with gradients enabled. After a rejection the parameters are
        bit-for-bit those before the step (``.grad`` holds the trial point's gradient).
        """
        if closure is None:
            raise ValueError("TrustRegion.step requires a closure")
        closure = torch.enable_grad()(closure)
        params = self._params
        x = flat_params(params)
        f, g = self._evaluate(closure)

        def fg(v: Tensor) -> tuple[Tensor, Tensor]:
            set_flat_params_(params, v)
            return self._evaluate(closure)

        group = self.param_groups[0]
        hess = self.hess
        res = tr_iteration(
            fg,
            x,
            f,
            g,
            group["radius"],
            hess,
            rules_from_group(group),
            update_rejected=group["update_rejected"],
        )
        if not res.accepted:
            set_flat_params_(params, x)  # exact copy back: bit-identical parameters
        group["radius"] = res.radius
        st = self._state
        st["step"] += 1
        self._sync_state()
        self.last_info = {
            "radius": res.radius,
            "radius_used": res.radius_used,
            "rho": res.rho,
            "accepted": res.accepted,
            "pred": res.pred,
            "ared": res.ared,
            "step_norm": res.step_norm,
            "loss": float(res.f),
            "loss_trial": res.f_trial,
            "sigma": res.sigma,
            "hess_updated": res.hess_updated,
            "memory": len(hess) if hess is not None else 0,
            "steps": st["step"],
        }
        return res.f
