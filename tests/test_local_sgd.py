"""Local SGD / local Adam: counted averages every H steps on 2 and 4 gloo ranks, checked
against one-process references (gradient descent, N simulated Adams), plus the runner."""

from __future__ import annotations

import copy
import math
import pickle

import pytest
import torch
import torch.nn.functional as F
from dist_harness import gather, run_ranks
from state_helpers import assert_plain, dcp_round_trip, transport
from test_apts import BATCH, make_problem
from test_config import _compose
from test_runner import FCNN_PARAMS, SMALL, read_metrics, run_cli

from apts.config.validate import validate
from apts.data.dataset import shard
from apts.errors import ConfigError
from apts.experiments.reproduce import PROFILES
from apts.optim import DiLoCo, LocalAdam, LocalSGD
from apts.optim.flat import flat_params, set_flat_params_
from apts.training.comm import Comm

H, STEPS = 3, 7  # STEPS % H != 0: the epoch-end synchronize has work to do


def local_step(model, opt, x, y, rank: int, n: int, t: int) -> None:
    """One step on rank ``rank``'s shard of mini-batch t (a rotation of the fixed batch,
    so the shards change from step to step)."""
    idx = shard(torch.roll(torch.arange(BATCH), 13 * t), rank, n)
    opt.zero_grad()
    F.cross_entropy(model(x[idx]), y[idx]).backward()
    opt.step()


def averages(steps: int, h: int) -> int:
    """Collectives for ``steps`` steps then synchronize(): floor(steps/H), +1 unless the
    last step averaged."""
    return steps // h + (steps % h != 0)


# ------------------------------------------------------------------ N ranks (gloo)
def counts_and_identity(rank, n, cls=LocalAdam):
    """Steps and synchronize() calls of ``cls`` (LocalAdam, DiLoCo): the optimizer
    collectives so far and whether all ranks hold the same parameters, after each."""
    model, x, y = make_problem(dtype=torch.float32)
    comm = Comm(record_sizes=True)
    opt = cls(model.parameters(), comm=comm, sync_every=H, lr=1e-2)
    identical, calls = [], []

    def record():
        copies = gather(flat_params(model.parameters()))
        identical.append(all(torch.equal(c, copies[0]) for c in copies))
        calls.append(comm.calls["optimizer"])

    for t in range(STEPS):
        local_step(model, opt, x, y, rank, n, t)
        record()
    opt.synchronize()
    record()
    opt.synchronize()  # nothing was stepped since: free
    record()
    for t in range(STEPS, STEPS + H):  # a full period: averaged by its last step
        local_step(model, opt, x, y, rank, n, t)
        record()
    opt.synchronize()  # right after a periodic average: free
    record()
    return {
        "identical": identical,
        "calls": calls,
        "sizes": comm.sizes,
        "bytes": dict(comm.bytes),
        "n": sum(p.numel() for p in model.parameters()),
    }


def _gradient_descent(rank, n, steps, lr, wd):
    """H = 1, plain SGD: should be gradient descent on the union of the shards."""
    model, x, y = make_problem()
    opt = LocalSGD(model.parameters(), comm=Comm(), sync_every=1, lr=lr, weight_decay=wd)
    for t in range(steps):
        local_step(model, opt, x, y, rank, n, t)
    return flat_params(model.parameters())


def _local_adam(rank, n, steps, h, lr):
    model, x, y = make_problem()
    opt = LocalAdam(model.parameters(), comm=Comm(), sync_every=h, lr=lr, weight_decay=1e-3)
    for t in range(steps):
        local_step(model, opt, x, y, rank, n, t)
    opt.synchronize()
    return flat_params(model.parameters())


def _make(kind, params, comm):
    if kind == "sgd":
        return LocalSGD(params, comm=comm, sync_every=H, lr=0.1, momentum=0.9, nesterov=True)
    cls = DiLoCo if kind == "diloco" else LocalAdam
    return cls(params, comm=comm, sync_every=H, lr=1e-2, weight_decay=1e-2)


def resume_scenario(rank, n, kind):
    """5 steps, save (through pickle), 5 more + synchronize; then the same 5 + synchronize
    from the saved state in a fresh model and optimizer."""
    model, x, y = make_problem()
    comm = Comm()
    opt = _make(kind, model.parameters(), comm)
    for t in range(5):
        local_step(model, opt, x, y, rank, n, t)
    saved = pickle.loads(pickle.dumps((model.state_dict(), opt.state_dict())))
    out = {"local_steps": saved[1]["param_groups"][0]["local_steps"], "saved": saved[1]}
    for label in ("straight", "resumed"):
        if label == "resumed":
            model, _, _ = make_problem(seed=1)  # other initial weights: all must come from saved
            opt = _make(kind, model.parameters(), comm)
            model.load_state_dict(saved[0])
            opt.load_state_dict(copy.deepcopy(saved[1]))
        before = comm.calls["optimizer"]
        for t in range(5, 10):
            local_step(model, opt, x, y, rank, n, t)
        opt.synchronize()
        out[label] = (flat_params(model.parameters()), comm.calls["optimizer"] - before)
    return out


def _all_scenarios(rank, n):
    return {
        "counts": counts_and_identity(rank, n),
        "gd": _gradient_descent(rank, n, steps=5, lr=0.5, wd=1e-2),
        "adam": _local_adam(rank, n, steps=8, h=H, lr=1e-2),
        "resume": {kind: resume_scenario(rank, n, kind) for kind in ("sgd", "adam")},
    }


@pytest.fixture(scope="module", params=[2, 4], ids=["N2", "N4"])
def ranks(request):
    n = request.param
    return n, run_ranks(_all_scenarios, n)


def check_counts(counts: list[dict]) -> None:
    """Every rank's :func:`counts_and_identity`: one counted all-reduce of the n float32
    parameters per period and at a synchronize() with steps since the last one, nothing
    else, and bit-identical parameters exactly after each."""
    first = averages(STEPS, H)  # STEPS steps and synchronize
    calls = (
        [t // H for t in range(1, STEPS + 1)]
        + [first, first]  # synchronize, then synchronize again: free
        + [first + t // H for t in range(1, H + 1)]  # one full period
        + [first + averages(H, H)]  # synchronize right after a periodic average: free
    )
    assert calls[-1] == STEPS // H + 2
    # between averages the ranks' local steps on different shards really make them differ
    identical = (
        [t % H == 0 for t in range(1, STEPS + 1)]
        + [True, True]
        + [t % H == 0 for t in range(1, H + 1)]
        + [True]
    )
    for c in counts:
        assert c["calls"] == calls
        assert c["sizes"] == [("optimizer", c["n"])] * calls[-1]
        assert c["bytes"] == {"optimizer": calls[-1] * c["n"] * 4}
        assert c["identical"] == identical


def test_one_counted_average_per_period_and_ranks_identical_after_each(ranks):
    check_counts([r["counts"] for r in ranks[1]])


def test_h1_local_sgd_is_gradient_descent_on_the_whole_batch(ranks):
    # mean_i (θ - lr(∇f_i + wd θ)) = θ - lr(mean_i ∇f_i + wd θ): for equal shards the
    # full-batch gradient step, computed here in one process with torch.optim.SGD
    n, results = ranks
    assert BATCH % n == 0
    model, x, y = make_problem()
    opt = torch.optim.SGD(model.parameters(), lr=0.5, weight_decay=1e-2)
    for t in range(5):
        local_step(model, opt, x, y, 0, 1, t)
    ref = flat_params(model.parameters())
    assert (ref - flat_params(make_problem()[0].parameters())).norm() > 1e-2  # it moved
    for r in results:
        torch.testing.assert_close(r["gd"], ref, rtol=0, atol=1e-12)


def test_local_adam_equals_n_simulated_adams_averaged_every_h_steps(ranks):
    n, results = ranks
    base, x, y = make_problem()
    models = [copy.deepcopy(base) for _ in range(n)]
    opts = [torch.optim.Adam(m.parameters(), lr=1e-2, weight_decay=1e-3) for m in models]

    def average():
        mean = torch.stack([flat_params(m.parameters()) for m in models]).mean(0)
        for m in models:
            set_flat_params_(m.parameters(), mean)

    steps = 8
    for t in range(steps):
        for r in range(n):
            local_step(models[r], opts[r], x, y, r, n, t)
        if (t + 1) % H == 0:
            average()
    average()  # synchronize() at the end
    ref = flat_params(models[0].parameters())
    for r in results:
        torch.testing.assert_close(r["adam"], ref, rtol=0, atol=1e-12)


def test_state_dict_round_trip_continues_bit_for_bit(ranks):
    _, results = ranks
    for r in results:
        for kind, out in r["resume"].items():
            assert out["local_steps"] == 5 % H, kind
            (a, calls_a), (b, calls_b) = out["straight"], out["resumed"]
            assert torch.equal(a, b), kind
            # the period continues: averages after global steps 6 and 9, then synchronize
            assert calls_a == calls_b == 3, kind


# ------------------------------------------------------------------ one process
@pytest.mark.parametrize(
    "local_cls,plain_cls,kw",
    [
        (LocalSGD, torch.optim.SGD, dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-2)),
        (LocalAdam, torch.optim.Adam, dict(lr=1e-2, betas=(0.8, 0.99), weight_decay=1e-2)),
    ],
)
@pytest.mark.parametrize("comm", [None, Comm()], ids=["no-comm", "comm-without-group"])
def test_one_process_is_bit_identical_to_the_plain_optimizer(local_cls, plain_cls, kw, comm):
    model, x, y = make_problem(dtype=torch.float32)
    plain_model = copy.deepcopy(model)
    local = local_cls(model.parameters(), comm=comm, sync_every=4, **kw)
    plain = plain_cls(plain_model.parameters(), **kw)
    for t in range(5):
        local_step(model, local, x, y, 0, 1, t)
        local_step(plain_model, plain, x, y, 0, 1, t)
        if t == 2:
            local.synchronize()
        for p, q in zip(model.parameters(), plain_model.parameters(), strict=True):
            assert torch.equal(p, q)
    local_state, plain_state = local.state_dict(), plain.state_dict()
    assert local_state["param_groups"][0].pop("local_steps") == 2  # 3 steps, sync, 2 steps
    assert local_state["param_groups"] == plain_state["param_groups"]
    assert local_state["state"].keys() == plain_state["state"].keys()
    for i, state in plain_state["state"].items():
        assert state.keys() == local_state["state"][i].keys()
        assert all(torch.equal(v, local_state["state"][i][k]) for k, v in state.items())
    if comm is not None:
        assert comm.calls == {}


@pytest.mark.parametrize(
    "cls,kw,prefix",
    [
        (LocalSGD, dict(lr=-1.0), "lr=-1.0 "),
        (LocalSGD, dict(momentum=-0.5), "momentum=-0.5 "),
        (LocalSGD, dict(nesterov=True), "nesterov=True "),
        (LocalSGD, dict(weight_decay=float("nan")), "weight_decay=nan "),
        (LocalSGD, dict(sync_every=0), "sync_every=0 "),
        (LocalAdam, dict(sync_every=2.5), "sync_every=2.5 "),
        (LocalAdam, dict(sync_every=True), "sync_every=True "),
        (LocalAdam, dict(betas=[0.9, 1.0]), "betas=[0.9, 1.0] "),
        (LocalAdam, dict(betas=(0.9,)), "betas=(0.9,) "),
        (LocalAdam, dict(eps=-1e-8), "eps=-1e-08 "),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(cls, kw, prefix):
    with pytest.raises(ValueError) as e:
        cls([torch.zeros(2, requires_grad=True)], **kw)
    assert str(e.value).startswith(prefix)


def test_parameters_of_mixed_dtypes_are_rejected():
    params = [torch.zeros(2, requires_grad=True), torch.zeros(2, dtype=torch.float64)]
    with pytest.raises(ValueError, match="one dtype and device"):
        LocalAdam(params)


# ------------------------------------------------------------------ configs and runner
@pytest.mark.parametrize(
    "overrides,line",
    [
        (["optimizer.sync_every=0"], "optimizer.sync_every=0 must be an integer >= 1"),
        (["optimizer.lr=-0.1"], "optimizer.lr=-0.1 must be a number >= 0"),
        (["optimizer.betas=[0.9,1.5]"], "optimizer.betas=[0.9, 1.5] must be two numbers"),
        (["+optimizer.momentum=0.9"], "optimizer.momentum is not an option"),
    ],
)
def test_local_adam_config_errors_are_one_line(overrides, line):
    assert_config_error("local_adam", overrides, line)


def assert_config_error(optimizer: str, overrides: list[str], line: str) -> None:
    """``optimizer=<optimizer>`` with ``overrides`` fails validation with one line that
    starts with ``line``."""
    with pytest.raises(ConfigError) as e:
        validate(_compose(f"optimizer={optimizer}", *overrides))
    assert str(e.value).startswith(line) and "\n" not in str(e.value)


def test_reproduce_profiles_name_existing_local_presets():
    presets = [p for prof in PROFILES.values() for p in prof["presets"]]
    local = [p for p in presets if p.endswith(("_local_adam", "_local_sgd"))]
    assert sorted(local) == sorted(
        [f"quick_local_{o}" for o in ("adam", "sgd")]
        + [f"paper_{d}_local_{o}" for d in ("mnist", "cifar10") for o in ("adam", "sgd")]
    )
    for p in local:
        cfg = _compose(f"experiment={p}")
        validate(cfg)
        assert cfg.optimizer.name in ("local_adam", "local_sgd") and cfg.batch_size == 128


def run_every_h_steps(tmp_path, optimizer: str, h: int = 4) -> dict:
    """A 2-rank, 2-epoch run of ``optimizer`` with sync_every=h: one counted collective of
    the n parameters every h steps and at each epoch's end, nothing else but the metrics
    (and the checkpoint gather); its checkpoint, saved right after the epoch-end one."""
    run_cli(
        *SMALL,
        f"optimizer={optimizer}",
        f"optimizer.sync_every={h}",
        "subdomains=2",
        "epochs=2",
        f"hydra.run.dir={tmp_path}/run",
        cwd=tmp_path,
    )
    rows = read_metrics(tmp_path / "run")
    for r in rows:
        assert r["steps"] == math.ceil(1200 / 128) and r["steps"] % h != 0
        assert r["comm_calls"] == averages(r["steps"], h)  # no DDP: only the averages
        assert r["comm_bytes"] == r["comm_calls"] * FCNN_PARAMS * 4
        # the epoch's checkpoint gather is counted after its row is written
        assert r["comm_by_kind"]["calls"].keys() - {"checkpoint"} == {"optimizer", "metrics"}
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    for rank in ckpt["ranks"]:  # saved after the epoch-end average
        assert rank["optimizer"]["param_groups"][0]["local_steps"] == 0
    return ckpt


def test_runner_averages_every_h_steps_and_at_each_epoch_end(tmp_path):
    run_every_h_steps(tmp_path, "local_adam")


@pytest.mark.parametrize("cls", [LocalSGD, LocalAdam])
def test_period_counter_survives_plain_loads_and_distributed_checkpoint(cls, tmp_path):
    """The counter is an ordinary state-dict entry: torch.load(weights_only=True) and
    torch.distributed.checkpoint keep it, and a plain SGD/Adam state dict starts a period."""
    model, x, y = make_problem(dtype=torch.float32)
    opt = cls(model.parameters(), sync_every=H, lr=1e-2)
    for t in range(H + 2):
        local_step(model, opt, x, y, 0, 1, t)
    assert opt.local_steps == 2
    assert_plain(opt.state_dict())
    fresh = cls(make_problem(dtype=torch.float32)[0].parameters(), sync_every=H, lr=1e-2)
    fresh.load_state_dict(transport(opt.state_dict(), "torch.save"))
    assert fresh.local_steps == 2
    model2 = make_problem(dtype=torch.float32, seed=1)[0]
    opt2 = cls(model2.parameters(), sync_every=H, lr=1e-2)
    dcp_round_trip(model, opt, model2, opt2, tmp_path / "dcp")
    assert opt2.local_steps == 2
    plain = (torch.optim.SGD if cls is LocalSGD else torch.optim.Adam)(model.parameters(), lr=1e-2)
    fresh.load_state_dict(plain.state_dict())
    assert fresh.local_steps == 0
