"""Check a command line before any job runs, so bad input costs one line and nothing else.

Hydra's own errors (a malformed override, a key that does not exist, an interpolation
that does not resolve) arrive as multi-line reports after it has set up a run; here the
same composition is done first, for every job of a sweep (the grid expanded as Hydra's
basic sweeper expands it, presets' ``hydra.sweeper.params`` included), and each job's
config goes through :func:`apts.config.validate.validate`. Any failure is a one-line
:class:`~apts.errors.ConfigError`.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from apts.config.doc import unknown_choice, unknown_key
from apts.config.validate import CONFIG_DIR, GROUPS, validate
from apts.errors import ConfigError

_MULTIRUN_FLAGS = ("-m", "--multirun")


def group_choices(group: str, config_dir: Path | None = None) -> list[str]:
    """The files of a config group (``optimizer`` -> adam, apts, ...)."""
    return sorted(p.stem for p in ((config_dir or CONFIG_DIR) / group).glob("*.yaml"))


def check_group_overrides(argv: list[str], config_dir: Path | None = None) -> None:
    """Reject unknown choices of a config group (``optimizer=adamw``) in one line that
    lists the valid ones."""
    for arg in argv:
        key, sep, value = arg.partition("=")
        key = key.lstrip("+~")
        if not sep or key not in GROUPS or value in ("", "null"):
            continue
        if "(" in value:  # choice(sgd,adam) and friends: left to Hydra
            continue
        valid = group_choices(key, config_dir)
        for choice in value.split(","):
            if choice not in valid:
                raise ConfigError(unknown_choice(key, choice, valid))


def _one_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    text = "; ".join(lines[:2]) if lines else type(e).__name__
    return " ".join(text.split())


def _compose_error(e: BaseException, overrides: list[str]) -> ConfigError:
    """Hydra's composition error as one line. An override of a key the config lacks comes
    with OmegaConf's error as its cause, naming the first missing part (``optimizer.foo``
    of ``optimizer.foo.bar=1``); the override it belongs to names the whole key."""
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError

    cause = e.__cause__
    if isinstance(cause, (ConfigAttributeError, ConfigKeyError)) and cause.full_key:
        missing = cause.full_key
        pairs = [o.lstrip("+~").partition("=") for o in overrides]
        keys = [k for k, sep, _ in pairs if sep and (k == missing or k.startswith(missing + "."))]
        chosen = {k: v for k, sep, v in pairs if sep and k in GROUPS}
        return ConfigError(unknown_key(keys[0] if keys else missing, chosen))
    return ConfigError(f"bad command line: {_one_line(e)}")


def _parse(overrides: list[str]):
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        return OverridesParser.create().parse_overrides(overrides)
    except HydraException as e:
        raise ConfigError(f"cannot parse the command line: {_one_line(e)}") from None


def _first_values(parsed) -> list[str]:
    """The overrides with every sweep replaced by its first value."""
    out = []
    for o in parsed:
        if o.is_sweep_override() and o.is_discrete_sweep():
            out.append(f"{o.get_key_element()}={next(iter(o.sweep_string_iterator()))}")
        elif o.is_sweep_override():
            raise ConfigError(f"'{o.input_line}': only comma-separated sweeps are supported")
        else:
            out.append(o.input_line)
    return out


def _compose(overrides: list[str]) -> DictConfig:
    from hydra import compose

    try:
        return compose(config_name="train", overrides=overrides, return_hydra_config=True)
    except Exception as e:
        raise _compose_error(e, overrides) from None


def jobs_of(argv_overrides: list[str], multirun: bool) -> list[list[str]]:
    """The override list of every job the command line asks for (inside a Hydra
    ``initialize_config_dir`` context)."""
    for arg in argv_overrides:
        if not arg.partition("=")[0].lstrip("+~"):
            raise ConfigError(f"cannot parse the command line: '{arg}' has no key")
    parsed = _parse(argv_overrides)
    if not multirun:
        sweeps = [o.input_line for o in parsed if o.is_sweep_override()]
        if sweeps:
            raise ConfigError(f"'{sweeps[0]}' is a sweep: add -m to run one job per value")
        return [argv_overrides]
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.errors import HydraException

    base = _compose(_first_values(parsed))
    params = OmegaConf.select(base, "hydra.sweeper.params") or {}
    conf = [f"{k}={v}" for k, v in params.items()] + list(argv_overrides)
    try:
        return BasicSweeper.split_arguments(_parse(conf), None)[0]
    except HydraException as e:
        raise ConfigError(f"cannot expand the sweep: {_one_line(e)}") from None


def _name_max() -> int:
    return os.pathconf("/", "PC_NAME_MAX") if hasattr(os, "pathconf") else 255


def _path_max() -> int:
    return os.pathconf("/", "PC_PATH_MAX") if hasattr(os, "pathconf") else 4096


def check_writable(path: Path) -> None:
    """``path`` can be created as a directory: its nearest existing ancestor is a
    writable directory (a file in the way or a read-only filesystem fail here)."""
    p = path.absolute()
    longest = max(p.parts, key=len)
    if len(longest) > _name_max() or len(str(p)) >= _path_max():
        raise ConfigError(
            f"cannot create run directory {p}: File name too long (at most {_name_max()} "
            f"characters a name, {_path_max() - 1} the path); choose a shorter directory"
        )
    if p.exists() and not p.is_dir():
        raise ConfigError(f"run directory {p} is a file; choose another directory")
    anc = p
    while not anc.exists():
        anc = anc.parent
    if not anc.is_dir():
        raise ConfigError(f"cannot create run directory {p}: {anc} is a file, not a directory")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise ConfigError(
            f"cannot create run directory {p}: {anc} is not writable (read-only filesystem or "
            "permissions); choose another directory"
        )


def check_job(cfg: DictConfig, multirun: bool) -> dict[str, Any]:
    """Resolve and validate one composed job; check where it will write."""
    from omegaconf import open_dict

    try:
        choices = OmegaConf.to_container(cfg.hydra.runtime.choices)
        where = str(cfg.hydra.sweep.dir if multirun else cfg.hydra.run.dir)
        with open_dict(cfg):
            cfg.pop("hydra")
        job = OmegaConf.to_container(cfg, resolve=True)
    except Exception as e:
        raise ConfigError(f"bad config value: {_one_line(e)}") from None
    validate(job, choices)
    check_writable(Path(job.get("out_dir") or str(where)))
    return job


SUBMITIT_PLUGIN = "hydra_plugins.hydra_submitit_launcher"


def has_submitit_plugin() -> bool:
    """hydra-submitit-launcher is installed (the ``cluster`` extra). find_spec imports the
    parent package, which is missing when no Hydra plugin at all is installed."""
    import importlib.util

    try:
        return importlib.util.find_spec(SUBMITIT_PLUGIN) is not None
    except ModuleNotFoundError:
        return False


def check_cluster_launcher(argv_overrides: list[str]) -> None:
    """``hydra/launcher=submitit_slurm|submitit_local`` needs the ``cluster`` extra (and SLURM)."""

    for arg in argv_overrides:
        key, _, value = arg.partition("=")
        if key.lstrip("+~") == "hydra/launcher" and value in ("submitit_slurm", "submitit_local"):
            if not has_submitit_plugin():
                raise ConfigError(
                    f"hydra/launcher={value} needs hydra-submitit-launcher: "
                    'pip install -e ".[cluster]" (or make install)'
                )
            if value == "submitit_slurm" and shutil.which("sbatch") is None:
                raise ConfigError(
                    "hydra/launcher=submitit_slurm submits SLURM jobs but sbatch is not on PATH: "
                    "run it on the cluster's login node, or try the jobs here with "
                    "hydra/launcher=submitit_local"
                )


def check_cluster_tasks(argv_overrides: list[str], subdomains: list[int]) -> None:
    """Under a submitit launcher (``hydra/launcher=submitit_slurm|submitit_local``) a job asks for
    one task per rank. Hydra resolves ``hydra.launcher`` once, from the config before the
    sweep, so every job of a sweep gets the same tasks: a job whose ``subdomains`` (one
    entry per job) differs is refused, unless ``hydra.launcher.tasks_per_node=1`` was
    asked for (each job then spawns its ranks inside its one task)."""
    parsed = _parse(argv_overrides)
    master = _compose([o.input_line for o in parsed if not o.is_sweep_override()])
    launcher = master.hydra.launcher
    if not str(launcher.get("_target_", "")).startswith(SUBMITIT_PLUGIN):
        return
    try:
        tasks = int(launcher.tasks_per_node) * int(launcher.nodes)
    except Exception as e:
        raise ConfigError(f"bad hydra.launcher value: {_one_line(e.__cause__ or e)}") from None
    one_task = tasks == 1 and any(
        o.get_key_element().lstrip("+~") == "hydra.launcher.tasks_per_node" for o in parsed
    )
    for n in subdomains:
        if tasks != n and not one_task:
            raise ConfigError(
                f"hydra.launcher asks every job for {tasks} tasks (tasks_per_node x nodes, from "
                f"the config before the sweep) but a job has subdomains={n}: Hydra gives all "
                "jobs of a sweep the same resources, so run one sweep per subdomains value "
                "(scripts/reproduce.py --launcher does), or set hydra.launcher.tasks_per_node=1 "
                "and each job spawns its ranks in one task"
            )


def precheck(
    argv: list[str],
    config_dir: Path,
    on_composed: Callable[[list[DictConfig]], None] | None = None,
) -> int:
    """Check every job of the command line ``argv``; returns the number of jobs.
    Hydra's own modes (``--help``, ``--cfg``, ...) are left to Hydra. ``on_composed`` gets
    the jobs' composed configs before they are validated (validating imports torch):
    the CLI starts the rank server there (:mod:`apts.runtime.prestart`)."""
    flags = [a for a in argv if a.startswith("-")]
    if any(f not in _MULTIRUN_FLAGS for f in flags):
        return 0
    from hydra import initialize_config_dir

    multirun = bool(flags)
    overrides = [a for a in argv if not a.startswith("-")]
    check_group_overrides(overrides, config_dir)
    check_cluster_launcher(overrides)
    with initialize_config_dir(config_dir=str(config_dir), version_base=None):
        jobs = jobs_of(overrides, multirun)
        composed = [_compose(job) for job in jobs]
        if on_composed is not None:
            on_composed(composed)
        ranks = [check_job(cfg, multirun)["subdomains"] for cfg in composed]
        if multirun:
            check_cluster_tasks(overrides, ranks)
    return len(jobs)
