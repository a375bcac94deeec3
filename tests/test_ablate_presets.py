"""The ablation presets (configs/experiment/ablate_*, `make ablate`): each one varies
exactly its own factor over the values of the study, at APTS's defaults otherwise, and
every job of every sweep validates before anything runs."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from apts.config.precheck import check_job, jobs_of
from apts.config.validate import CONFIG_DIR
from apts.experiments.reproduce import PROFILES

# study -> (config key, the values the issue asks for, in the order given there)
FACTORS = {
    "local_iters": ("optimizer.local_iters", [0, 1, 3, 5]),
    "global_iters": ("optimizer.global_iters", [0, 1, 3, 5]),
    "batch_size": ("batch_size", [2500, 5000, 10000, 20000]),
    "overlap": ("overlap", [0, 0.05, 0.2]),
    "memory": ("optimizer.memory", [3, 5, 10]),
    "gamma": ("optimizer.gamma", [1e-4, 1e-3, 1e-2, "auto"]),
    "foc": ("optimizer.foc", [True, False]),
    "local_memory": ("optimizer.local_memory", ["keep", "reset"]),
    "subdomains": ("subdomains", [1, 2, 4, 6, 8]),
    "window": ("optimizer.window", [1, 3, 5]),
    "momentum": ("optimizer.momentum", [0.0, 0.5]),
    "local_solver": ("optimizer.local_solver", ["tr", "adam"]),
    "batch_growth": ("optimizer.batch_growth", [1.0, 1.5]),
}
SEEDS = [0, 1, 2]


def _profile() -> list[str]:
    return PROFILES["ablate"]["presets"]


def _flat(cfg: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in cfg.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _expanded(preset: str) -> list[dict]:
    """Every job of ``apts-train -m experiment=<preset>``, composed and validated."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        jobs = jobs_of([f"experiment={preset}"], multirun=True)
        return [
            _flat(check_job(compose("train", overrides=j, return_hydra_config=True), True))
            for j in jobs
        ]


@pytest.fixture(scope="module")
def reference() -> dict:
    """A plain APTS run at the study's base point, composed without any preset."""
    overrides = ["dataset=fashion_mnist", "model=fcnn", "optimizer=apts", "epochs=20"]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        cfg = compose("train", overrides=[*overrides, "subdomains=2", "progress=false"])
    return _flat(OmegaConf.to_container(cfg, resolve=True))


def test_the_ablate_profile_runs_every_study_the_n_study_first():
    presets = _profile()
    assert sorted(presets) == sorted(f"ablate_{s}" for s in FACTORS)
    assert presets[0] == "ablate_subdomains"  # it carries the accuracy targets
    assert all((CONFIG_DIR / "experiment" / f"{p}.yaml").is_file() for p in presets)


@pytest.mark.parametrize("study", sorted(FACTORS))
def test_each_preset_sweeps_its_factor_and_seeds_at_the_defaults(study, reference):
    key, values = FACTORS[study]
    jobs = _expanded(f"ablate_{study}")
    assert len(jobs) == len(values) * len(SEEDS)
    grid = sorted((str(j[key]), j["seed"]) for j in jobs)
    assert grid == sorted((str(v), s) for v in values for s in SEEDS)
    for job in jobs:
        assert job["study"] == study
        # everything but the factor, the seed and the label is the plain APTS run's
        differ = {k for k in reference if job.get(k) != reference[k]}
        assert differ <= {key, "seed", "study"}, differ
        assert set(job) == set(reference)
