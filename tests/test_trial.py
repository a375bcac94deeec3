"""The trial step before any rank starts (:mod:`apts.training.trial`): what only torch knows
about a model and an optimizer's options is one line, exit 2, nothing written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from clitools import SMALL, cli, error_lines
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from apts.config.validate import CONFIG_DIR
from apts.data.dataset import make_synthetic
from apts.errors import ConfigError
from apts.training.trial import trial_step

ROOT = Path(__file__).resolve().parents[1]
OPTIMIZERS = sorted(p.stem for p in (CONFIG_DIR / "optimizer").glob("*.yaml"))
MODELS = sorted(p.stem for p in (CONFIG_DIR / "model").glob("*.yaml"))


def _cfg(*overrides: str) -> dict:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        cfg = compose(config_name="train", overrides=["dataset=synthetic", *overrides])
    return OmegaConf.to_container(cfg, resolve=True)


def _data(shape=(1, 8, 8)):
    return make_synthetic(n_train=16, n_test=8, shape=shape, seed=0)


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_every_shipped_optimizer_passes_and_leaves_the_rng_alone(optimizer):
    torch.manual_seed(123)
    before = torch.get_rng_state()
    trial_step(_cfg(f"optimizer={optimizer}"), _data(), step=True)
    assert torch.equal(torch.get_rng_state(), before)


@pytest.mark.parametrize("model", MODELS)
def test_every_shipped_model_takes_images_it_can_take(model):
    trial_step(_cfg(f"model={model}", "optimizer=sgd"), _data((3, 8, 8)))


# what the yaml does not know and torch refuses: at construction or at the first step
REFUSED = [
    (["optimizer=adam", "+optimizer.capturable=true"], (1, 8, 8), "optimizer=adam does not"),
    (["optimizer=sgd", "+optimizer.fused=true", "+optimizer.foreach=true"], (1, 8, 8), "fused"),
    (["model=cnn"], (1, 2, 2), "model=cnn cannot take synthetic's images (shape [1, 2, 2]"),
    (["model=fcnn", "model.hidden=[0]"], (1, 8, 8), "model=fcnn cannot take"),
]


@pytest.mark.parametrize("overrides,shape,fragment", REFUSED)
def test_what_torch_refuses_is_one_line(overrides, shape, fragment):
    with pytest.raises(ConfigError) as e:
        trial_step(_cfg(*overrides), _data(shape))  # steps: options beyond the yaml, or none
    assert fragment in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_the_shipped_options_cost_the_launcher_no_dynamo_import():
    # building a torch optimizer or stepping it imports torch._dynamo (about 2 s); a
    # launcher checks the model only, unless an option beyond the yaml asks for a step
    code = (
        "import sys\n"
        "from test_trial import _cfg, _data\n"
        "from apts.training.trial import trial_step\n"
        "trial_step(_cfg('optimizer=adam'), _data())\n"
        "assert 'torch._dynamo' not in sys.modules\n"
        "trial_step(_cfg('optimizer=adam', '+optimizer.maximize=true'), _data())\n"
        "assert 'torch._dynamo' in sys.modules\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT / "tests",
    )
    assert r.returncode == 0, r.stderr[-2000:]


def test_the_cli_refuses_before_any_rank_starts(tmp_path):
    run = tmp_path / "run"
    r = cli(
        *SMALL, "subdomains=2", "+optimizer.capturable=true", f"hydra.run.dir={run}", cwd=tmp_path
    )
    assert r.returncode == 2, r.stderr[-3000:]
    lines = error_lines(r.stderr)
    assert len(lines) == 1 and "capturable=True" in lines[0], r.stderr[-3000:]
    assert "Traceback" not in r.stderr and not run.exists()
