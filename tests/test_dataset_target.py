"""A dataset config names its loader in ``_target_``, as models and optimizers do: the
runner calls it with the config's options (augment and val_size aside) and the run's
seed, with no branch on the dataset's name."""

from __future__ import annotations

import pytest
import torch
from datasets_files import assert_matches, fake_mnist, write_mnist
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from apts.config.paths import CONFIG_DIR
from apts.config.validate import group_files, validate
from apts.data.dataset import Dataset, make_synthetic
from apts.errors import ConfigError
from apts.rundir.claim import config_differences, saved_config
from apts.runtime.launch import load_data

CALLS: list[dict] = []


def tiny(data_dir=None, download=True, seed=0, size: int = 6) -> Dataset:
    """A loader of one's own: records how it was called."""
    CALLS.append(dict(data_dir=data_dir, download=download, seed=seed, size=size))
    return make_synthetic(n_train=size, n_test=2, shape=(1, 4, 4), seed=seed)


def _cfg(*overrides: str) -> dict:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        cfg = compose(config_name="train", overrides=list(overrides))
    validate(cfg)
    return OmegaConf.to_container(cfg, resolve=True)


def test_every_dataset_file_names_a_loader_in_apts_data_load():
    for name in group_files("dataset"):
        d = OmegaConf.load(CONFIG_DIR / "dataset" / f"{name}.yaml")
        assert d.name == name and d._target_ == f"apts.data.load.{name}"


def test_the_synthetic_config_builds_what_the_generator_builds():
    cfg = _cfg("dataset=synthetic", "seed=5", "dataset.n_train=300", "dataset.val_size=0")
    ds = load_data(cfg)
    ref = make_synthetic(n_train=300, n_test=2000, seed=5)
    assert torch.equal(ds.train_x, ref.train_x) and torch.equal(ds.test_x, ref.test_x)


def test_a_file_dataset_reads_its_data_dir(tmp_path):
    arrays = fake_mnist(n_train=12, n_test=5)
    write_mnist(tmp_path, arrays, gz=True)
    cfg = _cfg("dataset=mnist", f"dataset.data_dir={tmp_path}", "dataset.val_size=0")
    assert_matches(load_data(cfg, download=False), arrays)


def test_a_loader_of_ones_own_gets_its_options_and_the_seed():
    cfg = _cfg("dataset=synthetic", "seed=7", "dataset.val_size=2")
    cfg["dataset"] = {**cfg["dataset"], "_target_": f"{__name__}.tiny"}
    for key in ("n_train", "n_test", "shape", "num_classes"):
        del cfg["dataset"][key]
    cfg["dataset"]["size"] = 9
    CALLS.clear()
    ds = load_data(cfg, download=True)
    assert CALLS == [dict(data_dir=None, download=True, seed=7, size=9)]
    assert len(ds.train_y) == 7 and len(ds.val_y) == 2  # the runner held out val_size


def test_a_run_saved_before_the_target_resumes_with_the_loader_its_name_names(tmp_path):
    cfg = _cfg("dataset=synthetic", "dataset.n_train=40", "dataset.val_size=0", "resume=auto")
    old = {**cfg, "dataset": {k: v for k, v in cfg["dataset"].items() if k != "_target_"}}
    (tmp_path / "config.yaml").write_text(OmegaConf.to_yaml(old))
    saved = saved_config(tmp_path)
    assert saved["dataset"]["_target_"] == "apts.data.load.synthetic"
    assert config_differences(saved, cfg) == []  # resume=auto: the same run
    validate(saved)  # resume=DIR: its own config
    assert len(load_data(saved).train_y) == 40
    other = _cfg("dataset=synthetic", "dataset.n_train=40", "dataset.val_size=0", "seed=1")
    assert config_differences(saved, other) == ["seed"]


def test_an_option_out_of_range_is_one_line_naming_the_key():
    cfg = _cfg("dataset=synthetic", "dataset.num_classes=1")
    with pytest.raises(ConfigError, match=r"^dataset.num_classes=1 must be an integer >= 2$"):
        load_data(cfg)
