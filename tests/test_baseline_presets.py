"""The presets of the newer baselines (DiLoCo, Prodigy, schedule-free AdamW) in
`make reproduce-quick` and `make reproduce`: every job validates; the tuning-free ones run at
their defaults at |B| = 10000 and 128 (the zero-tuning table), DiLoCo at Local Adam's
settings and H values."""

from __future__ import annotations

import pytest
from test_ablate_presets import _expanded

from apts.experiments.reproduce import PROFILES
from apts.report.groups import Group
from apts.report.zero_tuning import at_defaults

TUNING_FREE = ("prodigy", "schedulefree_adamw")
PRESETS = {
    "quick": [f"quick_{o}" for o in ("diloco", *TUNING_FREE)],
    "full": [f"paper_{d}_{o}" for d in ("mnist", "cifar10") for o in ("diloco", *TUNING_FREE)],
}


@pytest.mark.parametrize("profile", sorted(PRESETS))
def test_the_profiles_run_the_new_baselines(profile):
    assert set(PRESETS[profile]) <= set(PROFILES[profile]["presets"])


@pytest.mark.parametrize("preset", [p for ps in PRESETS.values() for p in ps])
def test_every_job_validates_at_the_settings_it_is_there_for(preset):
    jobs = _expanded(preset)
    opt = jobs[0]["optimizer.name"]
    seeds = sorted({j["seed"] for j in jobs})
    assert seeds == ([0] if preset.startswith("quick_") else [0, 1, 2])
    if opt in TUNING_FREE:  # the zero-tuning table: both batch sizes, at the defaults
        assert len(jobs) == 2 * len(seeds)
        assert sorted({j["batch_size"] for j in jobs}) == [128, 10000]
        assert all(at_defaults(Group(tuple(sorted(j.items())), [])) for j in jobs)
        assert {j["subdomains"] for j in jobs} == {2}
    else:  # DiLoCo where Local Adam runs: same N, |B|, lr and H values
        local = _expanded(preset.replace("diloco", "local_adam"))
        same = ("subdomains", "batch_size", "optimizer.lr", "optimizer.sync_every", "seed")
        assert sorted(tuple(j[k] for k in same) for j in jobs) == sorted(
            tuple(j[k] for k in same) for j in local
        )
        assert {(j["optimizer.outer_lr"], j["optimizer.outer_momentum"]) for j in jobs} == {
            (0.7, 0.9)
        }
