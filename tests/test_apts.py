"""APTS (APTS.md, "One APTS iteration k") on 1, 2 and 4 gloo ranks, tiny model, fixed data."""

from __future__ import annotations

import copy
import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from dist_harness import gather, run_ranks
from state_helpers import assert_plain, dcp_round_trip, transport

from apts.data.dataset import shard
from apts.optim import APTS, LSR1, TRRules, TrustRegion, tr_iteration
from apts.optim.flat import flat_grad, flat_params, set_flat_params_
from apts.training.comm import Comm

DIM, CLASSES, BATCH = 8, 3, 96


def make_problem(seed: int = 0, dtype=torch.float64):
    """A tiny classifier and one fixed mini-batch, identical on every rank."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(BATCH, DIM, generator=g, dtype=dtype)
    w = torch.randn(DIM, CLASSES, generator=g, dtype=dtype)
    y = (x @ w + 0.5 * torch.randn(BATCH, CLASSES, generator=g, dtype=dtype)).argmax(1)
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Linear(DIM, 6), torch.nn.Tanh(), torch.nn.Linear(6, CLASSES)
    ).to(dtype)
    return model, x, y


def shard_closure(model, opt, x, y, rank, n, overlap=0.0):
    idx = shard(torch.arange(len(y)), rank, n, overlap)
    xs, ys = x[idx], y[idx]

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(model(xs), ys)
        loss.backward()
        return loss

    return closure, idx


def global_loss(model, x, y, n, overlap):
    """f = (1/N) Σ_i f_i, computed in one process from every shard (independent of comm)."""
    with torch.no_grad():
        losses = [
            F.cross_entropy(model(x[idx]), y[idx])
            for idx in (shard(torch.arange(len(y)), r, n, overlap) for r in range(n))
        ]
    return torch.stack(losses).mean().item()


# ---------------------------------------------------------------------------------------
def _local_gradient_at_start(model, opt, comm, closure):
    """∇m_i(θ_k) through the optimizer's local objective, with g_k from one all-reduce."""
    theta = flat_params(model.parameters())
    f_i, g_i = closure().detach(), flat_grad(model.parameters())
    buf = torch.cat([g_i, f_i.reshape(1)])
    comm.all_reduce(buf, op="mean", kind="test")
    _, grad_m = opt.local_objective(closure, theta, buf[:-1], g_i)(theta)
    return grad_m


def _iterate(rank, n, iters, kw, overlap):
    model, x, y = make_problem()
    comm = Comm(record_sizes=True)
    opt = APTS(model.parameters(), comm=comm, **kw)
    closure, _ = shard_closure(model, opt, x, y, rank, n, overlap)
    out = {"identical": [], "sizes": [], "losses": [], "ref_losses": [], "infos": []}
    out["local_grad"] = _local_gradient_at_start(model, opt, comm, closure)
    for _ in range(iters):
        before = len(comm.sizes)
        loss = opt.step(closure)
        out["sizes"].append(comm.sizes[before:])
        theta = flat_params(model.parameters())
        copies = gather(theta)
        out["identical"].append(all(torch.equal(c, copies[0]) for c in copies))
        out["losses"].append(float(loss))
        out["ref_losses"].append(global_loss(model, x, y, n, overlap))
        out["infos"].append(dict(opt.last_info))
    out["n"] = theta.numel()
    return out


@pytest.mark.parametrize("n", [2, 4])
def test_apts_iterations_on_n_ranks(n):
    G, overlap = 3, 0.05
    res = run_ranks(_iterate, n, 6, {"global_iters": G}, overlap)

    # first-order consistency: ∇m_i(θ_k) is the global gradient on every rank, against an
    # independent reference (one process, mean of the N shard gradients)
    model, x, y = make_problem()
    per_shard = []
    for r in range(n):
        idx = shard(torch.arange(len(y)), r, n, overlap)
        model.zero_grad()
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        per_shard.append(flat_grad(model.parameters()).clone())
    g_ref = torch.stack(per_shard).mean(0)
    assert not torch.allclose(per_shard[0], g_ref, atol=1e-3)  # shards really differ
    for r in res:
        torch.testing.assert_close(r["local_grad"], g_ref, rtol=1e-6, atol=1e-6)

    # parameters bit-identical on all ranks after every iteration; exactly 3 + G
    # all-reduces of n + 1 numbers per iteration, nothing else
    for r in res:
        assert all(r["identical"])
        for sizes in r["sizes"]:
            assert sizes == [("optimizer", r["n"] + 1)] * (3 + G)
    # the returned loss is the global loss f = mean_i f_i at the accepted point
    for loss, ref in zip(res[0]["losses"], res[0]["ref_losses"], strict=True):
        assert loss == pytest.approx(ref, rel=1e-10)
    # trust-region monotonicity on a fixed mini-batch: f never increases
    refs = res[0]["ref_losses"]
    assert all(b <= a * (1 + 1e-12) for a, b in zip(refs, refs[1:], strict=False))
    assert refs[-1] < refs[0]
    assert any(i["accepted"] for i in res[0]["infos"])


# ---------------------------------------------------------------------------------------
def _rejection(rank, n, order, jump, update_rejected):
    """Identical shards: every local step is Δ/N long (first order: along -g; second order
    from an empty memory, B = γI: the same), so the sum has norm Δ. Beyond 0.75Δ the loss
    is non-finite (jump = nan) or 10 higher (jump = 10): the global test must reject."""
    model, x, y = make_problem()
    radius = 0.1
    opt = APTS(
        model.parameters(),
        comm=Comm(),
        order=order,
        local_iters=1,
        global_iters=0,
        radius=radius,
        update_rejected=update_rejected,
    )
    theta0 = flat_params(model.parameters())

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        far = torch.linalg.vector_norm(flat_params(model.parameters()) - theta0) > 0.75 * radius
        return loss + jump if far else loss

    opt.step(closure)
    theta1 = flat_params(model.parameters())
    memory = len(opt.global_hess) if opt.global_hess is not None else None
    return torch.equal(theta1, theta0), dict(opt.last_info), memory


REJECTION_CASES = [  # order, trial loss jump, update_rejected, global memory after
    ("first", math.nan, True, None),
    ("second", math.nan, True, 0),  # a non-finite trial loss: no pair (rule 4)
    ("second", 10.0, True, 1),  # a finite rejected trial: its pair is stored
    ("second", 10.0, False, 0),  # the old acceptance-only rule
]


def _rejections(rank, n):
    return [_rejection(rank, n, *case[:3]) for case in REJECTION_CASES]


def test_rejected_global_test_leaves_parameters_bit_identical():
    for results in run_ranks(_rejections, 2):  # one spawn for all cases: spawning is slow
        for (same, info, mem), case in zip(results, REJECTION_CASES, strict=True):
            assert same, case
            assert info["accepted"] is False and info["local_iters"] == 1, case
            assert info["radius"] == pytest.approx(0.05), case  # Δ ← dec·Δ
            assert mem == case[3], case


# ---------------------------------------------------------------------------------------
def test_single_process_runs_without_a_process_group_and_decreases_the_loss():
    model, x, y = make_problem()
    opt = APTS(model.parameters())
    closure, _ = shard_closure(model, opt, x, y, 0, 1)
    f0 = global_loss(model, x, y, 1, 0.0)
    losses = [float(opt.step(closure)) for _ in range(10)]
    assert losses[-1] < f0
    assert all(b <= a for a, b in zip(losses, losses[1:], strict=False))
    assert losses[-1] == pytest.approx(global_loss(model, x, y, 1, 0.0), rel=1e-12)


def _run_apts(model, opt, closure, steps):
    """``steps`` APTS steps; the losses and the parameter vector after each."""
    out = []
    for _ in range(steps):
        loss = opt.step(closure)
        out.append((float(loss), flat_params(model.parameters())))
    return out


def _assert_same_runs(a, b):
    assert [f for f, _ in a] == [f for f, _ in b]
    assert all(torch.equal(t, u) for (_, t), (_, u) in zip(a, b, strict=True))


@pytest.mark.parametrize("how", ["deepcopy", "torch.save"])
@pytest.mark.parametrize("gamma, dtype", [(1e-3, torch.float64), ("auto", torch.float32)])
def test_continue_after_load_equals_uninterrupted(how, gamma, dtype):
    """N = 1: k steps, state_dict → checkpoint → fresh model and optimizer → k more steps
    equals 2k uninterrupted steps bit for bit (global and local memory, radius, step)."""
    k = 4
    model, x, y = make_problem(dtype=dtype)
    opt = APTS(model.parameters(), gamma=gamma)
    closure, _ = shard_closure(model, opt, x, y, 0, 1)
    _run_apts(model, opt, closure, k)
    sd = opt.state_dict()
    assert_plain(sd)
    st = sd["state"][0]
    # the memories and the step, beside the variants' counters (docs/APTS.md "Variants")
    assert {"step", "global_lsr1", "local_lsr1"} <= set(st) and st["step"] == k
    assert len(st["global_lsr1"]["slots"]) > 0 and len(st["local_lsr1"]["slots"]) > 0
    saved = transport({"model": model.state_dict(), "opt": sd}, how)
    ref = _run_apts(model, opt, closure, k)

    model2, _, _ = make_problem(seed=1, dtype=dtype)
    model2.load_state_dict(saved["model"])
    opt2 = APTS(model2.parameters(), gamma=gamma, radius=0.5)
    opt2.load_state_dict(saved["opt"])
    assert opt2.radius == saved["opt"]["param_groups"][0]["radius"]
    closure2, _ = shard_closure(model2, opt2, x, y, 0, 1)
    _assert_same_runs(_run_apts(model2, opt2, closure2, k), ref)


def test_load_without_lsr1_entries_and_dcp_round_trip(tmp_path):
    model, x, y = make_problem()
    opt = APTS(model.parameters(), gamma="auto")
    closure, _ = shard_closure(model, opt, x, y, 0, 1)
    _run_apts(model, opt, closure, 3)

    # a state dict without the memories: empty memories, no KeyError
    sd = copy.deepcopy(opt.state_dict())
    del sd["state"][0]["global_lsr1"], sd["state"][0]["local_lsr1"]
    model2 = copy.deepcopy(model)
    opt2 = APTS(model2.parameters(), gamma="auto")
    opt2.load_state_dict(sd)
    assert len(opt2.global_hess) == 0 and len(opt2.local_hess) == 0
    assert opt2.radius == opt.radius

    # torch.distributed.checkpoint, one process: continuing is bit-exact
    model3, _, _ = make_problem(seed=2)
    opt3 = APTS(model3.parameters(), gamma="auto")
    dcp_round_trip(model, opt, model3, opt3, tmp_path)
    assert len(opt3.local_hess) == len(opt.local_hess) > 0
    closure3, _ = shard_closure(model3, opt3, x, y, 0, 1)
    _assert_same_runs(_run_apts(model3, opt3, closure3, 3), _run_apts(model, opt, closure, 3))


def _resume_on_ranks(rank, n, k, how):
    """Each rank saves and loads its own optimizer state (its local memory is its own)."""
    model, x, y = make_problem()
    opt = APTS(model.parameters(), comm=Comm())
    closure, _ = shard_closure(model, opt, x, y, rank, n, 0.05)
    _run_apts(model, opt, closure, k)
    sd = opt.state_dict()
    saved = transport({"model": model.state_dict(), "opt": sd}, how)
    local_psi = sd["state"][0]["local_lsr1"]["psi"].clone()
    ref = _run_apts(model, opt, closure, k)

    model2, _, _ = make_problem(seed=1)
    model2.load_state_dict(saved["model"])
    opt2 = APTS(model2.parameters(), comm=Comm())
    opt2.load_state_dict(saved["opt"])
    closure2, _ = shard_closure(model2, opt2, x, y, rank, n, 0.05)
    resumed = _run_apts(model2, opt2, closure2, k)
    return ref, resumed, gather(local_psi)


def test_continue_after_load_on_two_ranks():
    k = 3
    for ref, resumed, local_psis in run_ranks(_resume_on_ranks, 2, k, "torch.save"):
        _assert_same_runs(resumed, ref)
        assert not torch.equal(local_psis[0], local_psis[1])  # the ranks' memories differ


def test_one_rank_equals_the_trust_region_sequence_it_reduces_to():
    """N = 1: L local TR iterations + the global test + G global TR iterations, here
    rebuilt from two plain TrustRegion optimizers (APTS.md: no special-casing). Every trial
    point's pair is offered to the memory it belongs to, accepted or not (rule 4); the
    run must contain rejections whose pairs were stored, or it would not test that."""
    model_a, x, y = make_problem(seed=3)
    model_b, _, _ = make_problem(seed=3)
    delta0 = 0.1
    apts = APTS(model_a.parameters(), local_iters=1, global_iters=2, radius=delta0)
    closure_a, _ = shard_closure(model_a, apts, x, y, 0, 1)
    params_b = list(model_b.parameters())
    local = TrustRegion(params_b, radius=delta0, max_radius=delta0)
    glob = TrustRegion(params_b, radius=delta0)
    closure_b, _ = shard_closure(model_b, local, x, y, 0, 1)

    def f_and_g():
        loss = closure_b()
        return loss.detach(), flat_grad(params_b)

    delta = delta0
    stored_after_rejection = 0
    for _ in range(12):
        apts.step(closure_a)

        theta0 = flat_params(params_b)
        f0, g0 = f_and_g()
        local.param_groups[0].update(radius=delta, max_radius=delta)
        local.step(closure_b)  # the local phase: one TR iteration on m = f
        info = local.last_info
        stored_after_rejection += info["hess_updated"] and not info["accepted"]
        s = flat_params(params_b) - theta0
        # the global test: trial = θ + s; pred = the local reduction, so ρ = 1 on progress
        f1, g1 = f_and_g()
        pred = (f0 - info["loss"]).item()
        if info["accepted"] and pred > 1e-12:
            if torch.linalg.vector_norm(s) >= 0.9 * delta:
                delta = min(2 * delta, 1.0)
        else:
            delta = max(0.5 * delta, 1e-4)
        glob.hess.update(s, g1 - g0)  # offered either way (s = 0 after a rejection: skipped)
        glob.param_groups[0]["radius"] = delta
        for _ in range(2):
            glob.step(closure_b)
            info = glob.last_info
            stored_after_rejection += info["hess_updated"] and not info["accepted"]
        delta = glob.param_groups[0]["radius"]

        assert torch.equal(flat_params(model_a.parameters()), flat_params(params_b))
        assert apts.radius == delta
    assert stored_after_rejection > 0


# ---------------------------------------------------------------------------------------
def simulate_apts(n, overlap, iters, L=3, G=3, delta=0.1):
    """APTS.md's iteration with all N subdomains in one process (an independent reference
    for the distributed optimizer): written from the spec on top of tr_iteration/LSR1."""
    model, x, y = make_problem()
    params = list(model.parameters())
    shards = [shard(torch.arange(len(y)), i, n, overlap) for i in range(n)]

    def fg_shard(i, v):
        set_flat_params_(params, v)
        model.zero_grad()
        loss = F.cross_entropy(model(x[shards[i]]), y[shards[i]])
        loss.backward()
        return loss.detach(), flat_grad(params)

    def fg_global(v):
        fs, gs = zip(*(fg_shard(i, v) for i in range(n)), strict=True)
        return torch.stack(fs).mean(), torch.stack(gs).mean(0)

    rules = TRRules(radius=delta)
    local_hess = [LSR1(10, 1e-3) for _ in range(n)]  # APTS.md: m = 10, γ = 1e-3
    global_hess = LSR1(10, 1e-3)
    theta = flat_params(params)
    trajectory = []
    rejections = 0
    for _ in range(iters):
        f0 = [fg_shard(i, theta) for i in range(n)]
        f_k = torch.stack([f for f, _ in f0]).mean()
        g_k = torch.stack([g for _, g in f0]).mean(0)
        steps, reductions = [], []
        ball = delta / n
        local_rules = TRRules(radius=ball, min_radius=1e-4 / n, max_radius=ball)
        for i in range(n):
            c = g_k - f0[i][1]

            def m(v, i=i, c=c, theta=theta):
                f, g = fg_shard(i, v)
                return f + c @ (v - theta), g + c

            xi, fx, gx, r = theta, f0[i][0], g_k, ball
            for _ in range(L):
                budget = ball - torch.linalg.vector_norm(xi - theta).item()
                if budget <= 1e-3 * ball:
                    break
                res = tr_iteration(m, xi, fx, gx, r, local_hess[i], local_rules, radius_cap=budget)
                xi, fx, gx, r = res.x, res.f, res.g, res.radius
            steps.append(xi - theta)
            reductions.append(f0[i][0] - fx)
        s = torch.stack(steps).sum(0)
        pred = torch.stack(reductions).sum().item()
        f_t, g_t = fg_global(theta + s)
        ok, delta, _ = replace(rules, min_pred=1e-12).decide(
            (f_k - f_t).item(), pred, torch.linalg.vector_norm(s).item(), delta
        )
        rejections += not ok
        global_hess.update(s, g_t - g_k)  # accepted or not (rule 4); all values finite here
        if ok:
            theta, f, g = theta + s, f_t, g_t
        else:
            f, g = f_k, g_k
        for _ in range(G):
            res = tr_iteration(fg_global, theta, f, g, delta, global_hess, rules)
            theta, f, g, delta = res.x, res.f, res.g, res.radius
        trajectory.append((theta.clone(), delta))
    return trajectory, rejections


def _thetas(rank, n, iters, overlap, radius):
    model, x, y = make_problem()
    opt = APTS(model.parameters(), comm=Comm(), radius=radius)
    closure, _ = shard_closure(model, opt, x, y, rank, n, overlap)
    out = []
    for _ in range(iters):
        opt.step(closure)
        out.append((flat_params(model.parameters()), opt.radius))
    return out


@pytest.mark.parametrize("n", [2, 4])
def test_distributed_apts_follows_a_single_process_simulation_of_the_spec(n):
    # Δ₀ = 0.5: the global test rejects within 5 iterations (with Δ₀ = 0.1 only after 10
    # at N = 2), so the run also checks that rejected trial points feed the global memory.
    iters, overlap, radius = 5, 0.05, 0.5
    ranks = run_ranks(_thetas, n, iters, overlap, radius)
    reference, rejections = simulate_apts(n, overlap, iters, delta=radius)
    assert rejections > 0  # the run exercises the global test's rejected pairs
    moved = False
    for (theta, delta), (theta_ref, delta_ref) in zip(ranks[0], reference, strict=True):
        torch.testing.assert_close(theta, theta_ref, rtol=1e-9, atol=1e-12)
        assert delta == pytest.approx(delta_ref)
        moved = moved or not torch.equal(theta, reference[0][0])
    assert moved
