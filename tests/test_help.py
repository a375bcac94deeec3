"""``apts-train --help``: the program's name, every config group with its choices, every key
of the configs with its meaning, five examples. The keys are listed here from the YAML
files by a YAML parser (not by apts.config.doc, which builds the help from their comments)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from clitools import cli

from apts.config.doc import read_configs

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
INTERNAL = {"_target_", "_partial_"}


def _leaves(d: dict, prefix: str = "") -> list[str]:
    out = []
    for k, v in d.items():
        if k in INTERNAL:
            continue
        if isinstance(v, dict) and v:
            out += _leaves(v, f"{prefix}{k}.")
        else:
            out.append(prefix + k)
    return out


def config_keys() -> set[str]:
    """Every key a user can set, from train.yaml and the group files."""
    train = yaml.safe_load((CONFIGS / "train.yaml").read_text())
    keys = set(_leaves({k: v for k, v in train.items() if k not in ("defaults", "hydra")}))
    for group in ("dataset", "model", "launcher", "optimizer", "hydra/launcher"):
        for f in (CONFIGS / group).glob("*.yaml"):
            text = f.read_text()
            body = yaml.safe_load(text) or {}
            if "@package _global_" in text:  # optimizer files: optimizer.* (+ train.yaml keys)
                keys |= set(_leaves({"optimizer": body["optimizer"]}))
            else:
                keys |= set(_leaves(body, group.replace("/", ".") + "."))
    return keys


def groups() -> dict[str, list[str]]:
    out = {
        g: sorted(f.stem for f in (CONFIGS / g).glob("*.yaml"))
        for g in ("dataset", "model", "optimizer", "launcher", "experiment", "hydra/launcher")
    }
    out["hydra/launcher"].append("basic")
    return out


@pytest.fixture(scope="module")
def help_out(tmp_path_factory):
    r = cli("--help", cwd=tmp_path_factory.mktemp("help"))
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


def test_help_names_the_program_and_has_five_examples(help_out):
    assert help_out.startswith("apts-train: ")
    assert "cli" not in help_out.split("\n", 1)[0]
    examples = help_out.split("== Examples ==", 1)[1]
    assert len(re.findall(r"^  apts-train ", examples, flags=re.M)) == 5


def test_help_lists_every_group_and_choice(help_out):
    section = help_out.split("== Config groups", 1)[1].split("== Keys", 1)[0]
    for group, choices in groups().items():
        assert re.search(rf"^{re.escape(group)}:$", section, flags=re.M), group
        body = section.split(f"\n{group}:\n", 1)[1]
        for c in choices:
            assert re.search(rf"^  [ *]{c}\b", body, flags=re.M), (group, c)


def test_every_config_key_appears_with_its_meaning(help_out):
    keys = config_keys()
    assert {"seed", "optimizer.local_iters", "dataset.data_dir", "hydra.launcher.partition"} <= keys
    section = help_out.split("== Keys", 1)[1].split("== Examples", 1)[0]
    listed = set(re.findall(r"^  ([\w.]+)(?:=|\s|$)", section, flags=re.M))
    assert keys <= listed, sorted(keys - listed)
    declared, _ = read_configs()
    no_meaning = sorted(k for k in keys if not declared[k].meanings)
    assert not no_meaning, f"add a `# meaning` comment to these keys in configs/: {no_meaning}"
