"""APTS variants (docs/APTS.md, "Variants"): each off by default and equal to the paper's
algorithm there; on, checked against independent references (hand-made loss sequences, a
dense matrix, Adam's first step written out) and resumed bit for bit."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from state_helpers import dcp_round_trip, transport

from apts.optim import APTS
from apts.optim.flat import flat_grad, flat_params
from apts.optim.variants import track_stall

F64 = torch.float64


def problem(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(192, 6, generator=g, dtype=F64)
    y = (x @ torch.randn(6, 3, generator=g, dtype=F64)).argmax(1)
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))
    return model.double(), x, y


def closure_for(model, opt, x, y, k):
    """The closure of mini-batch k (four batches of 48, in turn: losses differ by batch)."""
    xb, yb = x[48 * (k % 4) : 48 * (k % 4 + 1)], y[48 * (k % 4) : 48 * (k % 4 + 1)]

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        return loss

    return closure


def run(model, opt, x, y, steps, start=0, batch=None):
    out = []
    for k in range(start, start + steps):
        loss = opt.step(closure_for(model, opt, x, y, k if batch is None else batch))
        out.append((float(loss), dict(opt.last_info), flat_params(model.parameters())))
    return out


VARIANTS = {
    "window": {"window": 4},
    "momentum": {"momentum": 0.5},
    "adam": {"local_solver": "adam"},
    "growth": {"batch_growth": 1.5, "growth_window": 2, "growth_tol": 0.5},
}


@pytest.mark.parametrize("off", [{"window": 1}, {"momentum": 0.0}, {"local_solver": "tr"},
                                 {"batch_growth": 1.0}])  # fmt: skip
def test_switched_off_is_the_paper_algorithm(off):
    """W = 1, β = 0, the TR local solver and growth factor 1 give the default run bit for bit."""
    runs = []
    for kw in ({}, off):
        model, x, y = problem()
        runs.append(run(model, APTS(model.parameters(), **kw), x, y, 8))
    for (la, ia, pa), (lb, ib, pb) in zip(*runs, strict=True):
        assert la == lb and ia == ib and torch.equal(pa, pb)


def test_nonmonotone_test_measures_rho_from_the_largest_recent_loss():
    """N = 1, G = 0: the point kept is the trial point when accepted, so f⁺ is the returned
    loss; f_k is the closure at θ_k, evaluated here independently. ared must be
    max(f_k, last W − 1 returned losses) − f⁺, and the history must have set the reference
    on some accepted step (else the window did nothing here)."""
    W = 3
    model, x, y = problem(1)
    opt = APTS(model.parameters(), window=W, global_iters=0, radius=0.5)
    returned: list[float] = []
    from_history = 0
    for k in range(16):
        closure = closure_for(model, opt, x, y, k)
        with torch.enable_grad():
            f_k = float(closure())
        loss = float(opt.step(closure))
        info = opt.last_info
        if info["accepted"]:
            f_ref = max([f_k, *returned[-(W - 1) :]])
            assert info["ared"] == pytest.approx(f_ref - loss, rel=1e-12, abs=1e-15)
            from_history += f_ref > f_k
        returned.append(loss)
    assert from_history > 0


def test_momentum_adds_beta_v_priced_by_the_dense_global_model():
    """From one state, a step with β and one with β = 0 share the local phase: the trial
    points differ by βv (v = θ_k − θ_{k−1}) and pred by −(gᵀm + ½mᵀBm + sᵀBm), B the global
    L-SR1 matrix formed densely column by column. One mini-batch throughout, so that the
    last displacement is a descent direction the model prices as one."""
    beta = 0.1
    model, x, y = problem(2)
    opt = APTS(model.parameters(), momentum=beta, global_iters=0, radius=0.02, max_radius=0.02)
    hist = run(model, opt, x, y, 5, batch=0)
    v = hist[-1][2] - hist[-2][2]
    assert v.abs().sum() > 0
    model0 = copy.deepcopy(model)
    opt0 = APTS(model0.parameters(), momentum=beta, global_iters=0, radius=0.02, max_radius=0.02)
    opt0.load_state_dict(copy.deepcopy(opt.state_dict()))
    model1 = copy.deepcopy(model)
    opt1 = APTS(model1.parameters(), momentum=beta, global_iters=0, radius=0.02, max_radius=0.02)
    opt1.load_state_dict(copy.deepcopy(opt.state_dict()))
    opt1.param_groups[0]["momentum"] = 0.0
    opt0.param_groups[0]["global_iters"] = opt1.param_groups[0]["global_iters"] = 0
    n = v.numel()
    B = torch.stack([opt0.global_hess.matvec(e) for e in torch.eye(n, dtype=F64)], 1)
    theta = flat_params(model.parameters())
    closure = closure_for(model, opt, x, y, 0)
    with torch.enable_grad():
        closure()
    g = flat_grad(model.parameters())
    opt0.step(closure_for(model0, opt0, x, y, 0))
    opt1.step(closure_for(model1, opt1, x, y, 0))
    i0, i1 = opt0.last_info, opt1.last_info
    assert i0["accepted"] and i1["accepted"], (i0, i1)
    s = flat_params(model1.parameters()) - theta
    m = beta * v
    extra = -(g @ m + 0.5 * m @ B @ m + s @ B @ m)
    assert extra > 0
    assert i0["pred"] == pytest.approx(i1["pred"] + float(extra), rel=1e-9)
    torch.testing.assert_close(flat_params(model0.parameters()) - theta, s + m, rtol=0, atol=1e-12)


def test_adam_local_step_is_the_radius_scaled_adam_direction():
    """N = 1, L = 1, G = 0, fresh moments: Adam's first direction is g/(|g| + ε) (bias
    corrections cancel), so an accepted step is θ − Δ·d/‖d‖ with Δ the radius."""
    model, x, y = problem(3)
    radius = 0.05
    opt = APTS(model.parameters(), local_solver="adam", local_iters=1, global_iters=0,
               radius=radius)  # fmt: skip
    theta = flat_params(model.parameters())
    closure = closure_for(model, opt, x, y, 0)
    with torch.enable_grad():
        closure()
    g = flat_grad(model.parameters())
    d = g / (g.abs() + 1e-8)
    opt.step(closure)
    assert opt.last_info["accepted"] and opt.last_info["local_iters"] == 1
    expected = theta - radius * d / d.norm()
    torch.testing.assert_close(flat_params(model.parameters()), expected, rtol=0, atol=1e-14)


def test_stall_rule_on_a_hand_made_loss_sequence():
    """Window 2, tol 0.01: means 1.0, 0.9 (fell), 0.895 (stalled: grow), 0.80 (fell),
    0.80 (stalled: grow again); the factor is 1.5², the state says so."""
    group = {"batch_growth": 1.5, "growth_window": 2, "growth_tol": 0.01}
    st = {"batch_factor": torch.ones((), dtype=F64), "stall": torch.tensor([0.0, 0, math.nan])}
    st["stall"] = st["stall"].to(F64)
    grew = [track_stall(st, group, torch.tensor(f, dtype=F64))
            for f in [1.0, 1.0, 0.9, 0.9, 0.89, 0.9, 0.8, 0.8, 0.81, 0.79]]  # fmt: skip
    assert grew == [False, False, False, False, False, True, False, False, False, True]
    assert float(st["batch_factor"]) == 2.25


def test_batch_factor_is_exposed_and_grows():
    model, x, y = problem(4)
    opt = APTS(model.parameters(), **VARIANTS["growth"])
    assert opt.batch_size_factor == 1.0
    run(model, opt, x, y, 8)
    assert opt.batch_size_factor > 1.0
    assert opt.last_info["batch_factor"] == opt.batch_size_factor


@pytest.mark.parametrize("how", ["torch.save", "dcp"])
def test_every_variant_on_resumes_bit_for_bit(how, tmp_path):
    """All four variants at once: save after 5 steps, load into a fresh optimizer (torch.save
    with weights_only, or torch.distributed.checkpoint), continue 5 steps: the same as
    never stopping."""
    kw = {k: v for d in VARIANTS.values() for k, v in d.items()}
    model, x, y = problem(5)
    opt = APTS(model.parameters(), **kw)
    run(model, opt, x, y, 5)
    model2, _, _ = problem(6)
    opt2 = APTS(model2.parameters(), **kw)
    if how == "dcp":
        dcp_round_trip(model, opt, model2, opt2, tmp_path / "ckpt")
    else:
        saved = transport({"model": model.state_dict(), "opt": opt.state_dict()}, how)
        model2.load_state_dict(saved["model"])
        opt2.load_state_dict(saved["opt"])
    ref = run(model, opt, x, y, 5, start=5)
    resumed = run(model2, opt2, x, y, 5, start=5)
    for (la, ia, pa), (lb, ib, pb) in zip(ref, resumed, strict=True):
        assert la == lb and ia == ib and torch.equal(pa, pb)
    assert opt2.batch_size_factor == opt.batch_size_factor


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"window": 0}, "window=0 must be an integer >= 1"),
        ({"momentum": 1.0}, "momentum=1.0 must be a number in [0.0, 1.0)"),
        ({"local_solver": "sgd"}, "local_solver='sgd' must be 'tr' or 'adam'"),
        ({"batch_growth": 0.5}, "batch_growth=0.5 must be a number >= 1.0"),
        ({"growth_window": 0}, "growth_window=0 must be an integer >= 1"),
        ({"growth_tol": -1}, "growth_tol=-1 must be a number >= 0.0"),
    ],
)
def test_variant_options_are_checked(kw, message):
    with pytest.raises(ValueError) as e:
        APTS([torch.nn.Parameter(torch.ones(2))], **kw)
    assert str(e.value).startswith(message), str(e.value)


def test_runner_honours_batch_growth_and_resumes_exactly(tmp_path):
    """The loop reads ``batch_size_factor`` before every mini-batch. 1200 training samples,
    |B| = 200, growth ×2 at the end of every one-step window after the first (tol 100: always
    stalled): epoch 1 takes 200, 200 (grown during it), 400, then the 400 left; epochs 2-3 one
    batch of all 1200. Stopped after epoch 2 and resumed, the run logs what one that never
    stopped does."""
    from clitools import SMALL, cli, read_metrics, without_timings

    args = [*SMALL, "optimizer=apts", "subdomains=1", "batch_size=200",
            "optimizer.batch_growth=2.0", "optimizer.growth_window=1",
            "optimizer.growth_tol=100"]  # fmt: skip
    for name, epochs in (("full", 3), ("cut", 2)):
        r = cli(*args, f"epochs={epochs}", f"hydra.run.dir={tmp_path}/{name}", cwd=tmp_path)
        assert r.returncode == 0, r.stderr[-2000:]
    r = cli(f"resume={tmp_path}/cut", "epochs=3", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    full = read_metrics(tmp_path / "full")
    assert [row["steps"] for row in full] == [4, 1, 1]
    assert [row["batch_factor"] for row in full][1:] == [16.0, 32.0]
    assert without_timings(read_metrics(tmp_path / "cut")) == without_timings(full)
