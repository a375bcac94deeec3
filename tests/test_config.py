"""Every config composes; bad values fail in one line with exit code 2, before any rank."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from apts.config.precheck import check_group_overrides, group_choices
from apts.config.validate import CONFIG_DIR, GROUPS, validate
from apts.errors import ConfigError


def _compose(*overrides: str):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        return compose(config_name="train", overrides=list(overrides))


@pytest.mark.parametrize(
    "group,choice",
    [(g, c) for g in GROUPS for c in group_choices(g)],
)
def test_every_group_choice_composes_and_validates(group, choice):
    cfg = _compose(f"{group}={choice}")
    validate(cfg)
    OmegaConf.to_container(cfg, resolve=True)


def test_optimizer_group_sets_its_batch_defaults():
    assert _compose("optimizer=apts").batch_size == 10000
    assert _compose("optimizer=apts").overlap == 0.05
    assert _compose("optimizer=adam").batch_size == 128
    # the command line wins over the group's default
    assert _compose("optimizer=apts", "batch_size=500").batch_size == 500


@pytest.mark.parametrize(
    "overrides,fragment",
    [
        (["epochs=0"], "epochs=0 must be an integer >= 1"),
        (["batch_size=-5"], "batch_size=-5"),
        (["subdomains=0"], "subdomains=0"),
        (["optimizer=apts", "overlap=1.0"], "overlap=1.0 must be a number in [0.0, 1.0)"),
        (["optimizer=apts", "overlap=-0.1"], "overlap=-0.1"),
        (["batch_size=4", "subdomains=8"], "subdomains=8 exceeds batch_size=4"),
        # optimizer options are checked by their constructors (torch's for sgd/adam)
        (["optimizer=adam", "optimizer.lr=-1"], "Invalid learning rate: -1"),
        (["optimizer=adam", "optimizer.lr=abc"], "optimizer.lr='abc' must be a number"),
        (["optimizer=adam", "optimizer.betas=[a,b]"], "optimizer.betas=['a', 'b'] must be a list"),
        (["optimizer=sgd", "optimizer.momentum=-0.5"], "Invalid momentum value: -0.5"),
        (["optimizer=sgd", "optimizer.nesterov=maybe"], "optimizer.nesterov='maybe' must be true"),
        (["optimizer=sgd", "optimizer.nesterov=true", "optimizer.momentum=0"], "Nesterov"),
        (["optimizer=apts", "optimizer.radius=5"], "radius"),
        (["optimizer=apts", "optimizer.order=third"], "'third'"),
        (["optimizer=apts", "optimizer.local_memory=forget"], "local_memory"),
        (["optimizer=apts", "optimizer.gamma=-1"], "gamma"),
        (["optimizer=apts", "optimizer.foc=maybe"], "optimizer.foc='maybe' must be true"),
        (["optimizer=apts", "optimizer.eta1=0.9", "optimizer.eta2=0.5"], "eta1"),
        (["optimizer=tr", "+optimizer.local_iters=2"], "optimizer.local_iters is not an option"),
        (["optimizer=adam", "overlap=0.1"], "only used by optimizer=apts"),
        (["device=tpu"], "device='tpu' must be 'cpu', 'cuda' or 'auto'"),
    ],
)
def test_invalid_values_raise_one_line(overrides, fragment):
    with pytest.raises(ConfigError) as e:
        validate(_compose(*overrides))
    assert fragment in str(e.value)
    assert "\n" not in str(e.value)


def test_unknown_group_choice_lists_valid_ones():
    with pytest.raises(
        ConfigError,
        match="unknown optimizer 'adamw' \\(did you mean 'adam'\\?\\); choose one of: adam, apts",
    ):
        check_group_overrides(["optimizer=adamw"])
    with pytest.raises(ConfigError, match="unknown dataset 'imagenet'"):
        check_group_overrides(["-m", "dataset=synthetic,imagenet"])
    check_group_overrides(["optimizer=sgd,adam", "optimizer.lr=0.1", "epochs=2"])


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "apts.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["optimizer=adamw"], "unknown optimizer 'adamw'"),
        (["overlap=2", "optimizer=apts"], "overlap=2"),
        (["dataset=mnist", "dataset.download=false", "dataset.data_dir=nowhere"], "nowhere"),
        # the check counts the training samples left after the validation split
        (["dataset.n_train=100", "dataset.val_size=10", "batch_size=500"], "exceeds the 90"),
        (["dataset.n_train=100"], "dataset.val_size=1000 leaves none of the 100 training"),
    ],
)
def test_cli_errors_exit_2_with_one_line_and_no_run(tmp_path, args, fragment):
    r = _cli(*args, f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("apts-train: error:"), r.stderr
    assert fragment in lines[0]
    assert "Traceback" not in r.stderr + r.stdout
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_validation_builds_optimizers_without_importing_dynamo():
    # torch._dynamo costs the launcher about as much as torch itself; it compiles nothing
    code = (
        "import sys, torch\n"
        "from apts.config.validate import check_optimizer\n"
        "check_optimizer({'name': 'apts', '_target_': 'apts.optim.APTS', '_partial_': True})\n"
        "check_optimizer({'name': 'adam', '_target_': 'torch.optim.Adam', '_partial_': True})\n"
        "assert 'torch._dynamo' not in sys.modules\n"
        "fn = torch.optim.Optimizer.add_param_group.__wrapped__\n"
        "assert not hasattr(fn, '__dynamo_disable')  # torch's own wrapper as it was\n"
        "torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)\n"
        "assert 'torch._dynamo' in sys.modules  # outside validation: torch's own path\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
