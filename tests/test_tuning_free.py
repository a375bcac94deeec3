"""The tuning-free baselines (Prodigy, schedule-free AdamW): the authors' optimizers unchanged
behind range checks, schedule-free's train/eval switch around evaluation and checkpoints,
and both under DDP in the runner."""

from __future__ import annotations

import copy
import pickle

import prodigyopt
import pytest
import schedulefree
import torch
from state_helpers import assert_plain, transport
from test_apts import make_problem
from test_config import _compose
from test_local_sgd import local_step
from test_runner import FCNN_PARAMS, SMALL, read_metrics, run_cli

from apts.config.validate import validate
from apts.errors import ConfigError
from apts.optim.flat import flat_params
from apts.optim.tuning_free import Prodigy, ScheduleFreeAdamW
from apts.training.loop import switch_mode

PAIRS = [
    (Prodigy, prodigyopt.Prodigy, dict(weight_decay=1e-2, d_coef=2.0)),
    (ScheduleFreeAdamW, schedulefree.AdamWScheduleFree, dict(lr=1e-2, weight_decay=1e-2)),
]


@pytest.mark.parametrize("ours,theirs,kw", PAIRS, ids=["prodigy", "schedulefree"])
def test_the_classes_are_the_authors_optimizers_bit_for_bit(ours, theirs, kw):
    model, x, y = make_problem(dtype=torch.float32)
    other = copy.deepcopy(model)
    a, b = ours(model.parameters(), **kw), theirs(other.parameters(), **kw)
    assert a.defaults == b.defaults  # the authors' defaults, nothing added
    for t in range(6):
        for m, opt in ((model, a), (other, b)):
            switch_mode(opt, "train")
            local_step(m, opt, x, y, 0, 1, t)
            switch_mode(opt, "eval")
        assert torch.equal(flat_params(model.parameters()), flat_params(other.parameters()))
    assert (flat_params(model.parameters()) - flat_params(make_problem()[0].parameters())).any()
    assert_plain(a.state_dict())


def test_schedule_free_resumed_from_an_eval_mode_save_continues_bit_for_bit():
    """The runner's turn at every epoch end: eval() (evaluate, save x), then train().
    A run restarted from the save computes the same y from x and z."""
    model, x, y = make_problem(dtype=torch.float32)
    opt = ScheduleFreeAdamW(model.parameters(), lr=1e-2)

    def epoch(m, o, t0):
        switch_mode(o, "train")
        for t in range(t0, t0 + 4):
            local_step(m, o, x, y, 0, 1, t)
        switch_mode(o, "eval")

    epoch(model, opt, 0)
    saved = pickle.loads(pickle.dumps((model.state_dict(), opt.state_dict())))
    assert saved[1]["param_groups"][0]["train_mode"] is False  # x is what was saved
    x_point = flat_params(model.parameters())
    switch_mode(opt, "train")
    assert not torch.equal(flat_params(model.parameters()), x_point)  # y differs from x
    switch_mode(opt, "eval")
    epoch(model, opt, 4)
    model2 = make_problem(dtype=torch.float32, seed=1)[0]
    opt2 = ScheduleFreeAdamW(model2.parameters(), lr=1e-2)
    model2.load_state_dict(saved[0])
    opt2.load_state_dict(transport(saved[1], "torch.save"))
    epoch(model2, opt2, 4)
    assert torch.equal(flat_params(model.parameters()), flat_params(model2.parameters()))


@pytest.mark.parametrize(
    "cls,kw,prefix",
    [
        (Prodigy, dict(lr=0.0), "lr=0.0 must be a number > 0"),
        (Prodigy, dict(d_coef=-1.0), "d_coef=-1.0 "),
        (Prodigy, dict(betas=(0.9, 1.0)), "betas=(0.9, 1.0) "),
        (Prodigy, dict(growth_rate=0.5), "growth_rate=0.5 "),
        (Prodigy, dict(slice_p=0), "slice_p=0 "),
        (ScheduleFreeAdamW, dict(lr=-1e-3), "lr=-0.001 "),
        (ScheduleFreeAdamW, dict(betas=[0.0, 0.999]), "betas=[0.0, 0.999] "),
        (ScheduleFreeAdamW, dict(warmup_steps=-1), "warmup_steps=-1 "),
        (ScheduleFreeAdamW, dict(weight_decay=float("inf")), "weight_decay=inf "),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(cls, kw, prefix):
    with pytest.raises(ValueError) as e:
        cls([torch.zeros(2, requires_grad=True)], **kw)
    assert str(e.value).startswith(prefix)


@pytest.mark.parametrize(
    "overrides,line",
    [
        (["optimizer=prodigy", "optimizer.d_coef=0"], "optimizer.d_coef=0 must be a number > 0"),
        (["optimizer=prodigy", "+optimizer.fsdp_in_use=true"], "optimizer.fsdp_in_use is not"),
        (["optimizer=schedulefree_adamw", "optimizer.lr=0"], "optimizer.lr=0 must be a number"),
        (["optimizer=schedulefree_adamw", "optimizer.warmup_steps=1.5"], "optimizer.warmup_steps"),
    ],
)
def test_config_errors_are_one_line(overrides, line):
    with pytest.raises(ConfigError) as e:
        validate(_compose(*overrides))
    assert str(e.value).startswith(line) and "\n" not in str(e.value)


@pytest.mark.parametrize("name", ["prodigy", "schedulefree_adamw"])
def test_configs_hold_the_authors_defaults(name):
    cfg = _compose(f"optimizer={name}")
    validate(cfg)
    cls = {"prodigy": prodigyopt.Prodigy, "schedulefree_adamw": schedulefree.AdamWScheduleFree}
    import inspect

    defaults = inspect.signature(cls[name]).parameters
    for key, value in cfg.optimizer.items():
        if key in ("name", "_target_", "_partial_"):
            continue
        want = defaults[key].default
        assert (list(want) if isinstance(want, tuple) else want) == value, key
    assert cfg.batch_size == 128 and cfg.overlap == 0


@pytest.mark.parametrize("name", ["prodigy", "schedulefree_adamw"])
def test_runner_trains_under_ddp_and_saves_the_evaluated_point(name, tmp_path):
    run_cli(
        *SMALL,
        f"optimizer={name}",
        "subdomains=2",
        "epochs=2",
        f"hydra.run.dir={tmp_path}/run",
        cwd=tmp_path,
    )
    rows = read_metrics(tmp_path / "run")
    for r in rows:  # fcnn's gradients fit one DDP bucket: one all-reduce per step
        assert r["comm_calls"] == r["steps"]
        assert r["comm_bytes"] == r["steps"] * FCNN_PARAMS * 4
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    states = [rank["optimizer"] for rank in ckpt["ranks"]]
    assert states[0]["param_groups"] == states[1]["param_groups"]  # DDP: the same steps
    if name == "schedulefree_adamw":  # saved in eval mode: the model holds x
        assert states[0]["param_groups"][0]["train_mode"] is False
        assert states[0]["param_groups"][0]["k"] == sum(r["steps"] for r in rows)
