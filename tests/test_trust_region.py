"""TR rules, tr_iteration and the TrustRegion optimizer."""

from __future__ import annotations

import copy
import inspect
import math

import pytest
import torch
from state_helpers import assert_plain, dcp_round_trip, transport

from apts.optim import (
    APTS,
    LSR1,
    TRRules,
    TrustRegion,
    flat_grad,
    flat_params,
    set_flat_params_,
    tr_iteration,
)

F64 = torch.float64


# small dense problems: intra-op threading only adds overhead (conftest.py)
pytestmark = pytest.mark.usefixtures("one_thread")


def rosenbrock(x: torch.Tensor) -> torch.Tensor:
    """Extended Rosenbrock Σ 100(x₂ᵢ − x₂ᵢ₋₁²)² + (1 − x₂ᵢ₋₁)², minimiser x = 1."""
    return (100 * (x[1::2] - x[::2] ** 2) ** 2 + (1 - x[::2]) ** 2).sum()


def rosen_setup(n: int, dtype=F64, device="cpu", **kw):
    x = torch.nn.Parameter(torch.tensor([-1.2, 1.0] * (n // 2), dtype=dtype, device=device))
    opt = TrustRegion([x], **kw)

    def closure():
        opt.zero_grad()
        loss = rosenbrock(x)
        loss.backward()
        return loss

    return x, opt, closure


# --------------------------------------------------------------------------- rules
def test_rules_decide() -> None:
    r = TRRules()
    assert r.decide(ared=0.1, pred=1.0, step_norm=0.1, radius=0.1) == (False, 0.05, 0.1)
    assert r.decide(1.0, 1.0, 0.095, 0.1) == (True, 0.2, 1.0)  # good and on the boundary
    assert r.decide(1.0, 1.0, 0.05, 0.1) == (True, 0.1, 1.0)  # good but interior
    assert r.decide(0.5, 1.0, 0.1, 0.1) == (True, 0.1, 0.5)  # acceptable
    assert r.decide(1.0, 1.0, 0.9, 0.9)[1] == 1.0  # capped at max_radius
    assert r.decide(-1.0, 1.0, 1e-4, 1e-4)[:2] == (False, 1e-4)  # floored at min_radius
    for ared, pred in [(math.nan, 1.0), (1.0, math.nan), (math.inf, 1.0), (1.0, 0.0), (1, -1)]:
        acc, rad, _ = r.decide(ared, pred, 0.1, 0.1)
        assert not acc and rad == 0.05
    assert not TRRules(min_pred=1e-12).decide(1e-13, 1e-13, 0.1, 0.1).accepted


class NoWorldSize:
    def all_reduce(self, tensor, op="sum"):
        return tensor

    def __repr__(self) -> str:
        return "NoWorldSize()"


def _param():
    return [torch.nn.Parameter(torch.ones(2))]


# (constructor, arguments, the message's start). Each message starts with the argument and
# its value and says what is allowed (apts/config/validate.py prefixes it with "optimizer.").
OPTION_ERRORS = [
    (
        TRRules,
        {"radius": 5.0},
        "radius=5.0 must be a number in [min_radius, max_radius] = [0.0001, 1.0]",
    ),
    (
        TRRules,
        {"radius": 0.0, "min_radius": 0.0},
        "radius=0.0 must be a number in [min_radius, max_radius] = (0.0, 1.0]",
    ),
    (TRRules, {"radius": math.nan}, "radius=nan must be a finite number"),
    (
        TRRules,
        {"min_radius": -1.0},
        "min_radius=-1.0 must be a number in [0, max_radius] = [0.0, 1.0]",
    ),
    (
        TRRules,
        {"min_radius": 0.5, "max_radius": 0.2, "radius": 0.3},
        "min_radius=0.5 must be a number in [0, max_radius] = [0.0, 0.2]",
    ),
    (TRRules, {"max_radius": 0.0}, "max_radius=0.0 must be a number > 0.0"),
    (TRRules, {"max_radius": math.inf}, "max_radius=inf must be a finite number"),
    (TRRules, {"eta1": 0.8, "eta2": 0.5}, "eta1=0.8 must be a number in [0, eta2] = [0.0, 0.5]"),
    (TRRules, {"eta1": -0.1}, "eta1=-0.1 must be a number in [0, eta2] = [0.0, 0.75]"),
    (TRRules, {"eta2": 1.5}, "eta2=1.5 must be a number in [0.0, 1.0]"),
    (TRRules, {"eta2": "x"}, "eta2='x' must be a finite number"),
    (TRRules, {"dec": 1.0}, "dec=1.0 must be a number in (0.0, 1.0)"),
    (TRRules, {"dec": True}, "dec=True must be a finite number"),
    (TRRules, {"inc": 0.5}, "inc=0.5 must be a number >= 1.0"),
    (TRRules, {"boundary": 0.0}, "boundary=0.0 must be a number in (0.0, 1.0]"),
    (TRRules, {"min_pred": -1.0}, "min_pred=-1.0 must be a number >= 0.0"),
    (LSR1, {"memory": 0}, "memory=0 must be an integer in [1, 128]"),
    (LSR1, {"memory": 10**9}, "memory=1000000000 must be an integer in [1, 128]"),
    (LSR1, {"memory": 2.5}, "memory=2.5 must be an integer in [1, 128]"),
    (LSR1, {"memory": True}, "memory=True must be an integer in [1, 128]"),
    (LSR1, {"gamma": -1}, "gamma=-1 must be a positive number or 'auto'"),
    (LSR1, {"gamma": math.inf}, "gamma=inf must be a positive number or 'auto'"),
    (LSR1, {"gamma": "big"}, "gamma='big' must be a positive number or 'auto'"),
    (LSR1, {"gamma": False}, "gamma=False must be a positive number or 'auto'"),
    (
        TrustRegion,
        {"radius": 5.0},
        "radius=5.0 must be a number in [min_radius, max_radius] = [0.0001, 1.0]",
    ),
    (TrustRegion, {"min_radius": 2.0}, "min_radius=2.0 must be a number in [0, max_radius]"),
    (TrustRegion, {"max_radius": -1.0}, "max_radius=-1.0 must be a number > 0.0"),
    (TrustRegion, {"eta1": 0.9}, "eta1=0.9 must be a number in [0, eta2] = [0.0, 0.75]"),
    (TrustRegion, {"eta2": 2}, "eta2=2 must be a number in [0.0, 1.0]"),
    (TrustRegion, {"dec": 0}, "dec=0 must be a number in (0.0, 1.0)"),
    (TrustRegion, {"inc": 0.9}, "inc=0.9 must be a number >= 1.0"),
    (TrustRegion, {"order": "third"}, "order='third' must be 'first' or 'second'"),
    (TrustRegion, {"memory": 10**9}, "memory=1000000000 must be an integer in [1, 128]"),
    (TrustRegion, {"gamma": -1}, "gamma=-1 must be a positive number or 'auto'"),
    (TrustRegion, {"update_rejected": "yes"}, "update_rejected='yes' must be true or false"),
    (TrustRegion, {"update_rejected": 1}, "update_rejected=1 must be true or false"),
    (TrustRegion, {"comm": "gloo"}, "comm='gloo' must be None or an object with all_reduce"),
    (TrustRegion, {"comm": NoWorldSize()}, "comm=NoWorldSize() must be None or an object with"),
    (
        APTS,
        {"comm": NoWorldSize()},
        "comm=NoWorldSize() must be None or an object with all_reduce(tensor, op) and an "
        "integer world_size >= 1",
    ),
    (APTS, {"local_iters": -1}, "local_iters=-1 must be an integer >= 0"),
    (APTS, {"local_iters": True}, "local_iters=True must be an integer >= 0"),
    (APTS, {"global_iters": 1.5}, "global_iters=1.5 must be an integer >= 0"),
    (APTS, {"foc": "maybe"}, "foc='maybe' must be true or false"),
    (APTS, {"order": "third"}, "order='third' must be 'first' or 'second'"),
    (APTS, {"memory": 0}, "memory=0 must be an integer in [1, 128]"),
    (APTS, {"gamma": "big"}, "gamma='big' must be a positive number or 'auto'"),
    (APTS, {"local_memory": "forget"}, "local_memory='forget' must be 'keep' or 'reset'"),
    (
        APTS,
        {"radius": 5.0},
        "radius=5.0 must be a number in [min_radius, max_radius] = [0.0001, 1.0]",
    ),
    (APTS, {"min_radius": -1.0}, "min_radius=-1.0 must be a number in [0, max_radius]"),
    (
        APTS,
        {"max_radius": 0.05},
        "radius=0.1 must be a number in [min_radius, max_radius] = [0.0001, 0.05]",
    ),
    (APTS, {"eta1": 0.8}, "eta1=0.8 must be a number in [0, eta2]"),
    (APTS, {"eta2": -1.0}, "eta2=-1.0 must be a number in [0.0, 1.0]"),
    (APTS, {"dec": 2.0}, "dec=2.0 must be a number in (0.0, 1.0)"),
    (APTS, {"inc": 0.0}, "inc=0.0 must be a number >= 1.0"),
    (APTS, {"update_rejected": None}, "update_rejected=None must be true or false"),
    (APTS, {"window": 0}, "window=0 must be an integer >= 1"),
    (APTS, {"momentum": 1.0}, "momentum=1.0 must be a number in [0.0, 1.0)"),
    (APTS, {"local_solver": "sgd"}, "local_solver='sgd' must be 'tr' or 'adam'"),
    (APTS, {"batch_growth": 0.5}, "batch_growth=0.5 must be a number >= 1.0"),
    (APTS, {"growth_window": 0}, "growth_window=0 must be an integer >= 1"),
    (APTS, {"growth_tol": -1}, "growth_tol=-1 must be a number >= 0.0"),
]


def _construct(cls, kw):
    return cls(_param(), **kw) if cls in (TrustRegion, APTS) else cls(**kw)


@pytest.mark.parametrize("cls, kw, message", OPTION_ERRORS)
def test_invalid_option_message(cls, kw, message) -> None:
    with pytest.raises(ValueError) as e:
        _construct(cls, kw)
    assert str(e.value).startswith(message), str(e.value)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("cls", [TRRules, LSR1, TrustRegion, APTS])
def test_every_constructor_argument_is_checked(cls) -> None:
    """Each argument has a row in OPTION_ERRORS (``params`` aside: torch checks it)."""
    names = set(inspect.signature(cls).parameters) - {"params"}
    covered = {k for c, kw, _ in OPTION_ERRORS if c is cls for k in kw}
    assert names <= covered, names - covered


@pytest.mark.parametrize(
    "cls, kw",
    [
        (TrustRegion, {"radius": 1.0, "min_radius": 0.0, "eta1": 0.0, "eta2": 1.0, "inc": 1}),
        (TrustRegion, {"memory": 128, "gamma": "auto", "update_rejected": False, "order": "first"}),
        (APTS, {"local_iters": 0, "global_iters": 0, "foc": False, "local_memory": "reset"}),
        (APTS, {"memory": 1, "gamma": 2, "comm": None}),
        (LSR1, {"memory": 128, "gamma": 1}),
    ],
)
def test_valid_edge_options_are_accepted(cls, kw) -> None:
    _construct(cls, kw)


def test_optimizer_structure_errors() -> None:
    p = torch.nn.Parameter(torch.ones(2))
    with pytest.raises(ValueError, match="single parameter group"):
        TrustRegion([{"params": [p]}, {"params": [torch.nn.Parameter(torch.ones(1))]}])
    with pytest.raises(ValueError, match="one dtype and device"):
        TrustRegion([p, torch.nn.Parameter(torch.ones(2, dtype=F64))])
    with pytest.raises(ValueError, match="requires a closure"):
        TrustRegion([p]).step(None)
    with pytest.raises(TypeError):  # comm is keyword-only
        TrustRegion([p], FakeComm())  # type: ignore[misc]
    with pytest.raises(TypeError):
        APTS([p], None)  # type: ignore[misc]


# ---------------------------------------------------------------- tr_iteration
def quad_fg(A: torch.Tensor, b: torch.Tensor):
    def fg(x):
        Ax = A @ x
        return float(0.5 * x @ Ax - b @ x), Ax - b

    return fg


def test_tr_iteration_accept_and_reject() -> None:
    gen = torch.Generator().manual_seed(0)
    n = 6
    A = torch.diag(torch.linspace(1.0, 4.0, n, dtype=F64))
    b = torch.randn(n, dtype=F64, generator=gen)
    fg = quad_fg(A, b)
    x = torch.zeros(n, dtype=F64)
    f, g = fg(x)
    H = LSR1(3, 1.0)
    res = tr_iteration(fg, x, f, g, 0.1, H, TRRules())
    assert res.accepted and res.rho == pytest.approx(res.ared / res.pred)
    assert res.step_norm == pytest.approx(0.1) and res.radius == 0.2
    assert res.hess_updated and len(H) == 1
    assert torch.equal(res.x, x + res.step) and res.f == res.f_trial

    def bad(v):
        return math.nan, torch.full_like(v, math.nan)

    H2 = LSR1(3, 1.0)
    res = tr_iteration(bad, x, f, g, 0.1, H2, TRRules())
    assert not res.accepted and res.radius == 0.05 and len(H2) == 0
    assert res.x is x and res.f is f and res.g is g

    # finite loss but non-finite gradient: still a rejection
    def inf_grad(v):
        return f - 1.0, torch.full_like(v, math.inf)

    res = tr_iteration(inf_grad, x, f, g, 0.1, None, TRRules())
    assert not res.accepted and res.x is x


def test_tr_iteration_radius_cap_and_first_order() -> None:
    n = 4
    A = torch.eye(n, dtype=F64)
    b = torch.ones(n, dtype=F64)
    fg = quad_fg(A, b)
    x = torch.zeros(n, dtype=F64)
    f, g = fg(x)
    res = tr_iteration(fg, x, f, g, 0.5, None, TRRules(), radius_cap=0.2)
    assert res.radius_used == 0.2 and float(res.step.norm()) == pytest.approx(0.2)
    assert res.accepted and res.radius == 0.4  # rules applied to the capped radius
    assert res.pred == pytest.approx(0.2 * float(g.norm()))


def test_tr_iteration_offers_rejected_pairs_by_default() -> None:
    # A model with far too little curvature (γ = 1e-3 against 10): the step is rejected.
    # By default (APTS.md rule 4) the pair still corrects the memory, to the exact secant
    # pair of this quadratic: B s = y = 10 s. update_rejected=False is the old rule.
    n = 3
    fg = quad_fg(10 * torch.eye(n, dtype=F64), torch.ones(n, dtype=F64))
    x = torch.zeros(n, dtype=F64)
    f, g = fg(x)
    for kw, expect in [({"update_rejected": False}, 0), ({}, 1), ({"update_rejected": True}, 1)]:
        H = LSR1(3, 1e-3)
        res = tr_iteration(fg, x, f, g, 1.0, H, TRRules(), **kw)
        assert not res.accepted and len(H) == expect and res.hess_updated == bool(expect)
        assert res.x is x and res.f is f and res.g is g
        if expect:
            torch.testing.assert_close(H.matvec(res.step), 10 * res.step, rtol=1e-12, atol=0)


def test_rejected_pair_with_non_finite_loss_is_not_offered() -> None:
    # The loss is not finite at the trial point but the gradient is: no pair (rule 4).
    x = torch.zeros(2, dtype=F64)
    g = torch.ones(2, dtype=F64)

    def fg(v):
        return math.inf, 3 * v

    H = LSR1(3, 1e-3)
    res = tr_iteration(fg, x, 0.0, g, 0.5, H, TRRules())
    assert not res.accepted and not res.hess_updated and len(H) == 0


def test_optimizer_update_rejected_option() -> None:
    """TrustRegion forwards update_rejected (kept in the param group, so saved): with it a
    rejected step leaves a pair in the memory, without it not."""
    for flag in (True, False):
        x, opt, closure = rosen_setup(2, radius=1.0, update_rejected=flag)
        assert opt.state_dict()["param_groups"][0]["update_rejected"] is flag
        opt.step(closure)  # from (-1.2, 1) with Δ = 1 and B = γI: a long, rejected step
        assert not opt.last_info["accepted"]
        assert opt.last_info["hess_updated"] is flag and len(opt.hess) == int(flag)


# ----------------------------------------------------------------- optimizer
@pytest.mark.parametrize("n, budget", [(2, 200), (100, 250)])
def test_rosenbrock_second_order_converges(n: int, budget: int) -> None:
    # Default constants (Δ₀ = 0.1, Δ_max = 1, m = 5, γ = 1e-3); measured: 102 steps (n = 2)
    # and 106 steps (n = 100) to reach ‖x − 1‖ < 1e-6.
    x, opt, closure = rosen_setup(n)
    losses = []
    for _ in range(budget):
        loss = opt.step(closure)
        if opt.last_info["accepted"]:
            losses.append(float(loss))
        if float((x.detach() - 1).norm()) < 1e-6:
            break
    assert float((x.detach() - 1).norm()) < 1e-6
    assert all(b <= a for a, b in zip(losses, losses[1:], strict=False))
    assert isinstance(loss, torch.Tensor) and loss.dim() == 0


def test_rosenbrock_first_order_monotone() -> None:
    x, opt, closure = rosen_setup(2, order="first")
    assert opt.hess is None
    start = float(rosenbrock(x.detach()))
    prev = start
    for _ in range(300):
        loss = float(opt.step(closure))
        assert loss <= prev
        prev = loss
    assert prev < 0.05 * start  # 24.2 → measured ≈ 0.3 after 300 steps


def make_mlp_problem(dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(64, 10, generator=gen, dtype=dtype)
    yc = torch.randint(0, 3, (64,), generator=gen)
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(10, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
    net = net.to(dtype)
    return net, X, yc


@pytest.mark.parametrize("order", ["second", "first"])
def test_mlp_loss_never_increases(order: str) -> None:
    net, X, yc = make_mlp_problem()
    opt = TrustRegion(net.parameters(), order=order)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(X), yc)
        loss.backward()
        return loss

    first = float(closure().detach())
    prev = first
    accepted = 0
    for _ in range(60):
        loss = float(opt.step(closure))
        assert loss <= prev
        accepted += opt.last_info["accepted"]
        prev = loss
    assert accepted > 10 and prev < 0.8 * first


def test_non_finite_trial_is_rejected_bit_identical() -> None:
    net, X, yc = make_mlp_problem(F64)
    opt = TrustRegion(net.parameters(), radius=0.5)
    calls = {"n": 0, "poison": None}

    def closure():
        calls["n"] += 1
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(X), yc)
        loss.backward()
        if calls["poison"] == "loss" and calls["n"] % 2 == 0:  # trial evaluations
            return loss * math.nan
        if calls["poison"] == "grad" and calls["n"] % 2 == 0:
            next(net.parameters()).grad[0, 0] = math.inf
        return loss

    for _ in range(5):
        opt.step(closure)
    for poison in ("loss", "grad"):
        calls["poison"] = poison
        before = [p.detach().clone() for p in net.parameters()]
        radius = opt.param_groups[0]["radius"]
        mem = len(opt.hess)
        loss = opt.step(closure)
        assert not opt.last_info["accepted"]
        assert all(torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))
        assert opt.param_groups[0]["radius"] == max(0.5 * radius, 1e-4)
        assert len(opt.hess) == mem and math.isfinite(float(loss))
        calls["poison"] = None
        opt.step(closure)  # recovers


def test_nan_region_is_never_entered() -> None:
    # The loss is nan for x₀ > 0.5: the optimizer must stay out (and not crash).
    x = torch.nn.Parameter(torch.tensor([-1.2, 1.0], dtype=F64))
    opt = TrustRegion([x], max_radius=10.0)

    def closure():
        opt.zero_grad()
        loss = rosenbrock(x)
        loss.backward()
        return loss * math.nan if float(x[0].detach()) > 0.5 else loss

    for _ in range(150):
        opt.step(closure)
        assert float(x[0].detach()) <= 0.5 and torch.isfinite(x).all()
    assert float(rosenbrock(x.detach())) < 1.0  # progress towards the boundary of the region


# ------------------------------------------------------------------- state
def run_mlp(net, opt, X, yc, steps):
    """``steps`` optimizer steps on a fixed batch; the losses and the final parameters."""

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(X), yc)
        loss.backward()
        return loss

    losses = [float(opt.step(closure)) for _ in range(steps)]
    return losses, [p.detach().clone() for p in net.parameters()]


def assert_same_run(a, b) -> None:
    """Two ``run_mlp`` results are bit-identical (losses and final parameters)."""
    assert a[0] == b[0]
    assert all(torch.equal(p, q) for p, q in zip(a[1], b[1], strict=True))


STATE_CASES = [
    ("second", 1e-3, F64),
    ("second", "auto", F64),
    ("first", 1e-3, F64),
    ("second", "auto", torch.float32),  # k×k float64 bookkeeping must survive the cast
    ("second", 1e-3, torch.float32),
]


@pytest.mark.parametrize("how", ["deepcopy", "torch.save"])
@pytest.mark.parametrize("order, gamma, dtype", STATE_CASES)
def test_continue_after_load_equals_uninterrupted(order, gamma, dtype, how) -> None:
    """k steps, state_dict → checkpoint → fresh model and optimizer → k more steps equals
    2k uninterrupted steps bit for bit."""
    k = 8
    net, X, yc = make_mlp_problem(dtype)
    opt = TrustRegion(net.parameters(), order=order, gamma=gamma)
    run_mlp(net, opt, X, yc, k)
    sd = opt.state_dict()
    assert_plain(sd)
    saved = transport({"model": net.state_dict(), "opt": sd}, how)
    ref_losses, ref_params = run_mlp(net, opt, X, yc, k)  # uninterrupted: steps k+1 … 2k

    net2, _, _ = make_mlp_problem(dtype, seed=1)  # other weights and a different radius:
    net2.load_state_dict(saved["model"])  # everything must come from the checkpoint
    opt2 = TrustRegion(net2.parameters(), order=order, gamma=gamma, radius=0.3)
    opt2.load_state_dict(saved["opt"])
    st = opt2.state[next(net2.parameters())]
    assert st["step"] == k and opt2.param_groups[0]["radius"] == sd["param_groups"][0]["radius"]
    if order == "second":
        assert len(opt2.hess) == len(saved["opt"]["state"][0]["lsr1"]["slots"]) > 0
        assert opt2.hess._Z.dtype == dtype
    assert_same_run(run_mlp(net2, opt2, X, yc, k), (ref_losses, ref_params))
    assert st["step"] == 2 * k == opt.state[next(net.parameters())]["step"]


@pytest.mark.parametrize("drop", ["lsr1", "state"])
def test_load_without_lsr1_entries_gives_an_empty_memory(drop) -> None:
    """A state dict without the L-SR1 entries (or without any state) loads without a
    KeyError as an empty memory: it continues like a fresh optimizer at the saved radius."""
    net, X, yc = make_mlp_problem(F64)
    opt = TrustRegion(net.parameters(), gamma="auto")
    run_mlp(net, opt, X, yc, 6)
    sd = copy.deepcopy(opt.state_dict())
    if drop == "lsr1":
        del sd["state"][0]["lsr1"]
    else:
        sd["state"] = {}
    radius = sd["param_groups"][0]["radius"]
    assert radius != 0.1 and len(opt.hess) > 0

    net2 = copy.deepcopy(net)
    opt2 = TrustRegion(net2.parameters(), gamma="auto")
    opt2.load_state_dict(sd)
    assert len(opt2.hess) == 0 and opt2.param_groups[0]["radius"] == radius
    net3 = copy.deepcopy(net)
    fresh = TrustRegion(net3.parameters(), gamma="auto", radius=radius)
    assert_same_run(run_mlp(net2, opt2, X, yc, 6), run_mlp(net3, fresh, X, yc, 6))


@pytest.mark.parametrize("gamma", [1e-3, "auto"])
def test_distributed_checkpoint_round_trip(tmp_path, gamma) -> None:
    """torch.distributed.checkpoint (one process, no process group) keeps the memory:
    continuing after dcp.save/dcp.load is bit-exact."""
    net, X, yc = make_mlp_problem(torch.float32)
    opt = TrustRegion(net.parameters(), gamma=gamma)
    run_mlp(net, opt, X, yc, 6)
    net2, _, _ = make_mlp_problem(torch.float32, seed=1)
    opt2 = TrustRegion(net2.parameters(), gamma=gamma, radius=0.5)
    dcp_round_trip(net, opt, net2, opt2, tmp_path)
    assert len(opt2.hess) == len(opt.hess) > 0
    assert_same_run(run_mlp(net2, opt2, X, yc, 6), run_mlp(net, opt, X, yc, 6))


def test_loaded_state_lands_on_the_parameters_dtype() -> None:
    """A float64 checkpoint loaded into a float32 model: the memory's vectors follow the
    parameters (torch casts the state's tensors; the k×k float64 lists are untouched)."""
    net, X, yc = make_mlp_problem(F64)
    opt = TrustRegion(net.parameters(), gamma="auto")
    run_mlp(net, opt, X, yc, 6)
    saved = transport(opt.state_dict(), "torch.save")
    net32, X32, _ = make_mlp_problem(torch.float32)
    net32.load_state_dict(net.state_dict())
    opt32 = TrustRegion(net32.parameters(), gamma="auto")
    opt32.load_state_dict(saved)
    assert opt32.hess._Z.dtype == torch.float32 and opt32.hess._W.dtype == torch.float32
    assert opt32.hess.gamma == opt.hess.gamma and len(opt32.hess) == len(opt.hess)
    v = torch.randn(opt32.hess._Z.shape[1], dtype=F64)
    torch.testing.assert_close(
        opt32.hess.matvec(v.float()).double(), opt.hess.matvec(v), rtol=1e-4, atol=1e-4
    )
    losses, _ = run_mlp(net32, opt32, X32, yc, 3)
    assert all(math.isfinite(v) for v in losses)


def test_state_of_another_model_is_refused() -> None:
    net, X, yc = make_mlp_problem(F64)
    opt = TrustRegion(net.parameters())
    run_mlp(net, opt, X, yc, 2)
    other = torch.nn.Parameter(torch.zeros(7, dtype=F64))  # one parameter, like net's first
    sd = opt.state_dict()
    sd["param_groups"][0]["params"] = [0]
    sd["state"] = {0: sd["state"][0]}
    # the MLP has 10·16 + 16 + 16·3 + 3 = 227 parameters
    with pytest.raises(ValueError, match="holds vectors of size 227, but the parameters have 7"):
        TrustRegion([other]).load_state_dict(sd)


class FakeComm:
    """Records all_reduce calls; identity mean (one rank)."""

    world_size = 1

    def __init__(self) -> None:
        self.calls: list[tuple[int, str]] = []

    def all_reduce(self, tensor: torch.Tensor, op: str) -> None:
        self.calls.append((tensor.numel(), op))


def test_comm_two_flat_all_reduces_per_step() -> None:
    net, X, yc = make_mlp_problem(F64)
    net_ref = copy.deepcopy(net)
    comm = FakeComm()
    n = sum(p.numel() for p in net.parameters())
    opt = TrustRegion(net.parameters(), comm=comm)
    opt_ref = TrustRegion(net_ref.parameters())

    def closure_for(model, o):
        def closure():
            o.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(X), yc)
            loss.backward()
            return loss

        return closure

    for k in range(1, 6):
        a = opt.step(closure_for(net, opt))
        b = opt_ref.step(closure_for(net_ref, opt_ref))
        assert len(comm.calls) == 2 * k
        assert float(a) == float(b)
    assert all(c == (n + 1, "mean") for c in comm.calls)
    for p, q in zip(net.parameters(), net_ref.parameters(), strict=True):
        assert torch.equal(p, q)


def test_comm_averages_are_used() -> None:
    # A comm that "averages" with a second rank whose gradient and loss are zero: the
    # optimizer must use the reduced buffer (half the loss, half the gradient).
    class HalfComm(FakeComm):
        def all_reduce(self, tensor, op):
            super().all_reduce(tensor, op)
            tensor.mul_(0.5)  # in place: the contract ignores the return value

    x, opt, closure = rosen_setup(2, order="first", comm=HalfComm())
    loss = opt.step(closure)
    if opt.last_info["accepted"]:
        assert float(loss) == pytest.approx(0.5 * float(rosenbrock(x.detach())))
    assert opt.last_info["pred"] == pytest.approx(0.1 * 0.5 * 232.86768, rel=1e-4)


def test_flat_helpers() -> None:
    a = torch.nn.Parameter(torch.arange(6.0).reshape(2, 3))
    b = torch.nn.Parameter(torch.ones(4).as_strided((2, 2), (1, 2)))  # non-contiguous
    c = torch.nn.Parameter(torch.zeros(3))
    ps = [a, b, c]
    v = flat_params(ps)
    assert v.shape == (13,) and not v.requires_grad
    set_flat_params_(ps, torch.arange(13.0))
    assert torch.equal(a, torch.arange(6.0).reshape(2, 3))
    assert torch.equal(b.reshape(-1), torch.arange(6.0, 10.0))
    (a.sum() * 2 + b.sum()).backward()
    gflat = flat_grad(ps)
    assert torch.equal(gflat, torch.tensor([2.0] * 6 + [1.0] * 4 + [0.0] * 3))
    out = torch.full((14,), 7.0)
    flat_grad(ps, out=out[:13])
    assert torch.equal(out[:13], gflat) and out[13] == 7.0
    with pytest.raises(ValueError):
        set_flat_params_(ps, torch.zeros(12))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_cuda_matches_cpu(dtype) -> None:
    xs, losses = [], []
    for device in ("cpu", "cuda"):
        x, opt, closure = rosen_setup(10, dtype=dtype, device=device)
        for _ in range(30):
            loss = opt.step(closure)
        assert loss.device.type == device
        xs.append(x.detach().cpu())
        losses.append(float(loss))
    tol = 1e-3 if dtype == torch.float32 else 1e-8
    assert torch.allclose(xs[0], xs[1], atol=tol)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")
def test_cpu_checkpoint_lands_on_the_cuda_parameters() -> None:
    """State saved on the CPU and loaded into an optimizer on CUDA parameters: the memory
    is on the GPU and continuing there follows the CPU run (float64, to rounding)."""
    x, opt, closure = rosen_setup(10, gamma="auto")
    for _ in range(20):
        opt.step(closure)
    saved = transport(opt.state_dict(), "torch.save")
    x2, opt2, closure2 = rosen_setup(10, device="cuda", gamma="auto")
    with torch.no_grad():
        x2.copy_(x)
    opt2.load_state_dict(saved)
    assert opt2.hess._Z.device.type == "cuda" and opt2.hess._W.device.type == "cuda"
    for _ in range(10):
        opt.step(closure)
        opt2.step(closure2)
    torch.testing.assert_close(x2.detach().cpu(), x.detach(), rtol=1e-8, atol=1e-10)
