"""The docs say what the configs hold: every config group, choice, top-level key and
preset that README.md and docs/ list exists in configs/, and every one in configs/ is
listed."""

from __future__ import annotations

import fnmatch
import itertools
import re
from pathlib import Path

import pytest
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
OPERATIONS = ROOT / "docs" / "operations.md"
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def expand(pattern: str) -> list[str]:
    """Shell-style braces: ``paper_{mnist,cifar10}_apts`` -> the two names."""
    parts = re.split(r"\{([^{}]*)\}", pattern)
    options = [[p] if i % 2 == 0 else p.split(",") for i, p in enumerate(parts)]
    return ["".join(combo) for combo in itertools.product(*options)]


def choices_on_disk(group: str) -> set[str]:
    return {p.stem for p in (CONFIGS / group).glob("*.yaml")}


def group_rows() -> dict[str, set[str]]:
    """The config groups table of docs/operations.md: group -> the choices it lists."""
    rows = {}
    for line in OPERATIONS.read_text().splitlines():
        m = re.match(r"\| `([\w/]+)` \| (.*?) \|", line)
        if m:
            names = re.findall(r"`([^`]+)`", m.group(2))
            rows[m.group(1)] = {n for name in names for n in expand(name)}
    return rows


def test_expand():
    assert expand("a_{x,y}_{1,2}") == ["a_x_1", "a_x_2", "a_y_1", "a_y_2"]
    assert expand("smoke") == ["smoke"]


def test_every_config_group_is_listed_with_its_choices():
    rows = group_rows()
    groups = {p.name for p in CONFIGS.iterdir() if p.is_dir() and p.name != "hydra"}
    assert set(rows) - {"hydra/launcher"} == groups
    for group in groups:
        assert rows[group] == choices_on_disk(group), group
    # Hydra's own `basic` launcher has no file here
    assert rows["hydra/launcher"] - {"basic"} == choices_on_disk("hydra/launcher")


def test_top_level_keys_are_the_ones_train_yaml_declares():
    text = OPERATIONS.read_text()
    listed = re.search(r"Top-level keys: (.*?)\.\n\n", text, re.S)
    assert listed, "docs/operations.md lists the top-level keys"
    keys = set(re.findall(r"`(\w+)`", re.sub(r"\([^()]*\)", "", listed.group(1))))
    declared = {k for k in OmegaConf.load(CONFIGS / "train.yaml") if k not in ("defaults", "hydra")}
    assert keys == declared


PRESET = re.compile(r"`(?:experiment=)?((?:smoke|quick_|paper_|ablate_)[\w{},*]*)`")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_preset_named_in_the_docs_exists(doc):
    presets = choices_on_disk("experiment")
    for pattern in PRESET.findall(doc.read_text()):
        for name in expand(pattern):
            matched = fnmatch.filter(presets, name)
            assert matched, f"{doc.name} names preset {name!r}, not in configs/experiment/"


def test_the_readme_choices_are_the_config_files():
    """README's table of choices names every file of each group it lists."""
    text = (ROOT / "README.md").read_text()
    for group in ("optimizer", "dataset", "model", "experiment"):
        row = re.search(rf"\| `{group}=` \| (.*?) \|$", text, re.M)
        assert row, f"README lists the {group} choices"
        names = re.findall(r"`([^`]+)`", row.group(1))
        on_disk = choices_on_disk(group)
        covered = {c for n in names for c in fnmatch.filter(on_disk, n)}
        assert covered == on_disk, (group, on_disk - covered)
        assert all(fnmatch.filter(on_disk, n) for n in names), (group, names)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_relative_link_resolves(doc):
    for target in re.findall(r"\]\(([^)\s]+)\)", doc.read_text()):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        path = (doc.parent / target.split("#")[0]).resolve()
        assert path.exists(), f"{doc.name} links to {target}, which does not exist"
