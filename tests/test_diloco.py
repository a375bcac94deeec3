"""DiLoCo: one counted all-reduce per outer step on 2 and 4 gloo ranks, checked against a
one-process simulation of N workers (N Adams, the outer Nesterov step by hand), plus its
state (plain loads, torch.distributed.checkpoint, resume) and the runner."""

from __future__ import annotations

import copy

import pytest
import torch
from dist_harness import run_ranks
from state_helpers import assert_plain, dcp_round_trip, transport
from test_apts import make_problem
from test_config import _compose
from test_local_sgd import (
    H,
    assert_config_error,
    check_counts,
    counts_and_identity,
    local_step,
    resume_scenario,
    run_every_h_steps,
)

from apts.optim import DiLoCo, LocalAdam
from apts.optim.flat import flat_params, set_flat_params_
from apts.training.comm import Comm

LR, WD, ETA, MU = 1e-2, 1e-3, 0.7, 0.9


def simulate(n: int, steps: int, h: int, eta: float = ETA, mu: float = MU) -> torch.Tensor:
    """DiLoCo by hand in one process: N independent ``torch.optim.Adam`` trajectories on
    the N shards, and after every h steps and at the end the outer step of Douillard et al.
    (2023), Algorithm 1, with Nesterov momentum as torch.optim.SGD defines it."""
    base, x, y = make_problem()  # float64
    models = [copy.deepcopy(base) for _ in range(n)]
    opts = [torch.optim.Adam(m.parameters(), lr=LR, weight_decay=WD) for m in models]
    anchor = flat_params(base.parameters())
    momentum = torch.zeros_like(anchor)

    def outer_step():
        nonlocal anchor, momentum
        worker_deltas = [anchor - flat_params(m.parameters()) for m in models]
        delta = sum(worker_deltas) / n
        momentum = mu * momentum + delta
        anchor = anchor - eta * (delta + mu * momentum)
        for m in models:
            set_flat_params_(m.parameters(), anchor)

    for t in range(steps):
        for r in range(n):
            local_step(models[r], opts[r], x, y, r, n, t)
        if (t + 1) % h == 0:
            outer_step()
    if steps % h:
        outer_step()  # synchronize() at the end
    return anchor


# ------------------------------------------------------------------ N ranks (gloo)
def _run(rank, n, steps, h, eta=ETA, mu=MU, cls=DiLoCo):
    model, x, y = make_problem()
    kw = {} if cls is LocalAdam else {"outer_lr": eta, "outer_momentum": mu}
    opt = cls(model.parameters(), comm=Comm(), sync_every=h, lr=LR, weight_decay=WD, **kw)
    for t in range(steps):
        local_step(model, opt, x, y, rank, n, t)
    opt.synchronize()
    return flat_params(model.parameters())


def _all_scenarios(rank, n):
    return {
        "counts": counts_and_identity(rank, n, DiLoCo),
        "diloco": _run(rank, n, steps=8, h=H),
        "diloco_h1": _run(rank, n, steps=4, h=1),
        "eta1_mu0": _run(rank, n, steps=8, h=H, eta=1.0, mu=0.0),
        "local_adam": _run(rank, n, steps=8, h=H, cls=LocalAdam),
        "resume": resume_scenario(rank, n, "diloco"),
    }


@pytest.fixture(scope="module", params=[2, 4], ids=["N2", "N4"])
def ranks(request):
    n = request.param
    return n, run_ranks(_all_scenarios, n)


def test_one_counted_flat_all_reduce_per_outer_step_and_ranks_identical_after_each(ranks):
    # Local Adam's pattern exactly: an outer step wherever Local Adam averages
    check_counts([r["counts"] for r in ranks[1]])


@pytest.mark.parametrize("key,steps,h", [("diloco", 8, H), ("diloco_h1", 4, 1)])
def test_diloco_equals_a_one_process_simulation_of_n_workers(ranks, key, steps, h):
    n, results = ranks
    ref = simulate(n, steps, h)
    start = flat_params(make_problem()[0].parameters())
    assert (ref - start).norm() > 1e-2  # it moved
    for r in results:
        torch.testing.assert_close(r[key], ref, rtol=0, atol=1e-12)


def test_outer_momentum_matters_and_eta1_mu0_is_local_adam(ranks):
    # θ ← anchor − 1·(anchor − mean θ_i) is the average: Local Adam up to rounding
    _, results = ranks
    for r in results:
        torch.testing.assert_close(r["eta1_mu0"], r["local_adam"], rtol=0, atol=1e-12)
        assert (r["diloco"] - r["local_adam"]).norm() > 1e-3


def test_state_dict_round_trip_continues_bit_for_bit(ranks):
    _, results = ranks
    for r in results:
        out = r["resume"]
        state = out["saved"]["state"][0]  # after the outer step at step 3: a real anchor and b
        assert {"outer_anchor", "outer_momentum", "exp_avg", "exp_avg_sq", "step"} <= set(state)
        assert state["outer_momentum"].abs().sum() > 0
        (a, calls_a), (b, calls_b) = out["straight"], out["resumed"]
        assert torch.equal(a, b)
        # the period continues: outer steps after global steps 6 and 9, then synchronize
        assert calls_a == calls_b == 3
        assert out["local_steps"] == 5 % H


# ------------------------------------------------------------------ one process
@pytest.mark.parametrize("comm", [None, Comm()], ids=["no-comm", "comm-without-group"])
def test_one_process_is_diloco_with_one_worker(comm):
    model, x, y = make_problem()
    opt = DiLoCo(model.parameters(), comm=comm, sync_every=H, lr=LR, weight_decay=WD)
    for t in range(8):
        local_step(model, opt, x, y, 0, 1, t)
    opt.synchronize()
    got = flat_params(model.parameters())
    torch.testing.assert_close(got, simulate(1, 8, H), rtol=0, atol=1e-12)
    if comm is not None:
        assert comm.calls == {}


def test_outer_state_survives_plain_loads_and_distributed_checkpoint(tmp_path):
    model, x, y = make_problem(dtype=torch.float32)
    opt = DiLoCo(model.parameters(), sync_every=H, lr=LR)
    for t in range(H + 2):
        local_step(model, opt, x, y, 0, 1, t)
    assert opt.local_steps == 2
    assert_plain(opt.state_dict())
    want = opt.state_dict()

    def same_state(other):
        got = other.state_dict()
        assert got["param_groups"] == want["param_groups"]
        for i, st in want["state"].items():
            assert st.keys() == got["state"][i].keys()
            assert all(torch.equal(v, got["state"][i][k]) for k, v in st.items())

    fresh = DiLoCo(make_problem(dtype=torch.float32)[0].parameters(), sync_every=H, lr=LR)
    fresh.load_state_dict(transport(opt.state_dict(), "torch.save"))
    same_state(fresh)
    model2 = make_problem(dtype=torch.float32, seed=1)[0]
    opt2 = DiLoCo(model2.parameters(), sync_every=H, lr=LR)
    dcp_round_trip(model, opt, model2, opt2, tmp_path / "dcp")
    same_state(opt2)
    assert torch.equal(flat_params(model.parameters()), flat_params(model2.parameters()))
    # both continue alike
    for t in range(H + 2, 2 * H + 2):
        local_step(model, opt, x, y, 0, 1, t)
        local_step(model2, opt2, x, y, 0, 1, t)
    assert torch.equal(flat_params(model.parameters()), flat_params(model2.parameters()))


def test_a_plain_adam_state_starts_an_outer_period_at_the_current_parameters():
    model, x, y = make_problem()
    plain = torch.optim.Adam(model.parameters(), lr=LR)
    for t in range(2):
        local_step(model, plain, x, y, 0, 1, t)
    here = flat_params(model.parameters())
    opt = DiLoCo(model.parameters(), sync_every=H, lr=LR)
    opt.load_state_dict(plain.state_dict())
    assert opt.local_steps == 0
    local_step(model, opt, x, y, 0, 1, 2)
    anchors = torch.cat([opt.state[p]["outer_anchor"].reshape(-1) for p in model.parameters()])
    assert torch.equal(anchors, here)
    assert all(not opt.state[p]["outer_momentum"].any() for p in model.parameters())
    assert opt.state[model[0].weight]["step"] == 3  # Adam's count went on


@pytest.mark.parametrize(
    "kw,prefix",
    [
        (dict(outer_lr=0.0), "outer_lr=0.0 "),
        (dict(outer_lr=-0.7), "outer_lr=-0.7 "),
        (dict(outer_momentum=1.0), "outer_momentum=1.0 "),
        (dict(outer_momentum=float("nan")), "outer_momentum=nan "),
        (dict(sync_every=0), "sync_every=0 "),
        (dict(lr=-1.0), "lr=-1.0 "),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(kw, prefix):
    with pytest.raises(ValueError) as e:
        DiLoCo([torch.zeros(2, requires_grad=True)], **kw)
    assert str(e.value).startswith(prefix)


# ------------------------------------------------------------------ configs and runner
@pytest.mark.parametrize(
    "overrides,line",
    [
        (["optimizer.outer_lr=0"], "optimizer.outer_lr=0 must be a number > 0"),
        (["optimizer.outer_momentum=1.5"], "optimizer.outer_momentum=1.5 must be a number in"),
        (["optimizer.sync_every=0"], "optimizer.sync_every=0 must be an integer >= 1"),
        (["+optimizer.nesterov=true"], "optimizer.nesterov is not an option"),
    ],
)
def test_diloco_config_errors_are_one_line(overrides, line):
    assert_config_error("diloco", overrides, line)


def test_defaults_are_the_papers_and_local_adams():
    cfg = _compose("optimizer=diloco")
    local = _compose("optimizer=local_adam")
    assert (cfg.optimizer.outer_lr, cfg.optimizer.outer_momentum) == (0.7, 0.9)
    for key in ("lr", "betas", "weight_decay", "sync_every"):
        assert cfg.optimizer[key] == local.optimizer[key], key
    assert cfg.batch_size == local.batch_size == 128


def test_runner_takes_one_outer_step_every_h_steps_and_at_each_epoch_end(tmp_path):
    ckpt = run_every_h_steps(tmp_path, "diloco")
    model = list(ckpt["model"].values())
    for rank in ckpt["ranks"]:  # the anchor is the point every rank holds after the step
        state = rank["optimizer"]["state"]
        anchors = [state[i]["outer_anchor"] for i in sorted(state)]
        assert all(torch.equal(a, p) for a, p in zip(anchors, model, strict=True))
