"""Config validation: every check that can fail before a rank starts.

Each failure is a :class:`ConfigError` whose message is one line saying what is
wrong and how to fix it; the CLI prints it and exits with status 2.
"""

from __future__ import annotations

import functools
import math
import os
import warnings
from collections.abc import Callable, Mapping
from contextlib import contextmanager
from typing import Any

from apts.checks import check_bool, check_choice, check_int, check_number
from apts.config.doc import did_you_mean, help_template, owners, unknown_key
from apts.config.factory import group_factory, needs
from apts.config.paths import CONFIG_DIR
from apts.errors import ConfigError, OptionError
from apts.runtime.env import torchrun_env

GROUPS = ("dataset", "model", "optimizer", "launcher", "experiment")


def _register_resolvers() -> None:
    """``${apts_uid:}`` in run directory names (configs/train.yaml): random, and fixed
    for the life of this process, so two runs started in the same second never meet.
    ``${apts_gpus:${device}}`` and ``${apts_per_node:...}`` (configs/hydra/launcher/): a
    cluster task's GPUs (1 with ``device=cuda``, else none) and the tasks on each node;
    ``${apts_help:}``: the text of ``apts-train --help``."""
    import secrets

    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("apts_uid"):
        OmegaConf.register_new_resolver("apts_uid", lambda: secrets.token_hex(3), use_cache=True)
    if not OmegaConf.has_resolver("apts_gpus"):
        OmegaConf.register_new_resolver("apts_gpus", lambda device: 1 if device == "cuda" else None)
    if not OmegaConf.has_resolver("apts_per_node"):
        OmegaConf.register_new_resolver("apts_per_node", _tasks_per_node)
    if not OmegaConf.has_resolver("apts_help"):
        OmegaConf.register_new_resolver("apts_help", _help_template)


def _help_template() -> str:
    """``${apts_help:}``: hydra.help.template (``apts-train --help``), see apts.config.doc."""
    return help_template()


def _tasks_per_node(subdomains: int, nodes: int) -> int:
    """``${apts_per_node:${subdomains},${.nodes}}``: one cluster task per rank, spread
    evenly over the job's nodes."""
    if nodes < 1 or subdomains % nodes:
        raise ValueError(
            f"subdomains={subdomains} cannot be spread evenly over hydra.launcher.nodes={nodes}"
        )
    return subdomains // nodes


_register_resolvers()
# configs/hydra/launcher/submitit_{slurm,local}.yaml take the names of the submitit plugin's
# own configs on purpose (the names users know, with one task per rank); Hydra validates
# them against the plugin's schema of the same name and warns that this matching is
# deprecated. The files carry every key themselves, so they work with or without it.
warnings.filterwarnings(
    "ignore", message=r"\s*'hydra/launcher/submitit_\w+' is validated against ConfigStore"
)
DEVICES = ("cpu", "cuda", "auto")


def _get(cfg: Mapping, dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise ConfigError(f"missing config key '{dotted}'")
        node = node[part]
    return node


def _checked(check: Callable, key: str, value: Any, *args: Any, **kw: Any) -> Any:
    """``check(key, value, ...)``, one of :mod:`apts.checks` (the optimizers' checks too):
    its :class:`OptionError` becomes a :class:`ConfigError` with the same line."""
    try:
        return check(key, value, *args, **kw)
    except OptionError as e:
        raise ConfigError(str(e)) from None


def _int(cfg: Mapping, key: str, lo: int = 1) -> int:
    return _checked(check_int, key, _get(cfg, key), lo)


def _int_or_auto(cfg: Mapping, key: str) -> int | str:
    v = _get(cfg, key)
    if v == "auto":
        return v
    try:
        return check_int(key, v, 1)  # the integer rule of apts.checks, "auto" beside it
    except OptionError:
        raise ConfigError(f"{key}={v!r} must be auto or an integer >= 1; e.g. {key}=auto") from None


def _num(cfg: Mapping, key: str, lo: float, hi: float, lo_open=False, hi_open=False) -> float:
    value = _get(cfg, key)
    return _checked(check_number, key, value, lo, hi, lo_open=lo_open, hi_open=hi_open)


def _choice(cfg: Mapping, key: str, choices: tuple[str, ...]) -> str:
    return _checked(check_choice, key, _get(cfg, key), choices)


def _bool(cfg: Mapping, key: str) -> bool:
    return _checked(check_bool, key, _get(cfg, key))


def _optional(cfg: Mapping, key: str, check, *args) -> Any:
    """``check(cfg, key, *args)`` unless the value is null."""
    return None if _get(cfg, key) is None else check(cfg, key, *args)


def _text(cfg: Mapping, key: str) -> str:
    v = _get(cfg, key)
    if not isinstance(v, str) or not v:
        raise ConfigError(f"{key}={v!r} must be a non-empty string")
    return v


# The largest seed torch.manual_seed takes without wrapping around.
MAX_SEED = 2**63 - 1


def local_rank_limit() -> int:
    """How many ranks one machine may spawn: more processes than cores only wait on each
    other (twice the cores, at least 8, so small machines still run the paper's N)."""
    return max(8, 2 * (os.cpu_count() or 1))


def validate(cfg: Mapping, choices: Mapping[str, Any] | None = None) -> None:
    """Raise :class:`ConfigError` on the first invalid value of a composed config.

    ``choices`` (Hydra's ``runtime.choices``: group -> chosen file) enables the check for
    keys that no config file declares (``+foo=1``, ``+dataset.colour=red``).
    """
    if choices is not None:
        check_known_keys(cfg, choices)
    _validate_run(cfg)
    _validate_dataset(cfg)
    _validate_launcher(cfg)
    factory = check_optimizer(_get(cfg, "optimizer"))
    overlap = _get(cfg, "overlap")
    if overlap > 0 and not needs(factory, "uses_overlap"):
        raise ConfigError(
            f"overlap={overlap} is only used by optimizer=apts (overlapping shards); set overlap=0"
        )


def check_environment() -> None:
    """The environment variables the runner reads: ``OMP_NUM_THREADS`` (threads per rank),
    and the torchrun/SLURM world (:func:`apts.runtime.env.torchrun_env`)."""
    threads = os.environ.get("OMP_NUM_THREADS")
    if threads is not None and not (threads.strip().isdigit() and int(threads) >= 1):
        raise ConfigError(
            f"OMP_NUM_THREADS={threads!r} in the environment must be a positive integer; "
            "unset it (each rank then takes its share of the cores) or set e.g. OMP_NUM_THREADS=1"
        )
    torchrun_env()


def _validate_run(cfg: Mapping) -> None:
    _int(cfg, "epochs")
    seed = _int(cfg, "seed", lo=0)
    if seed > MAX_SEED:
        raise ConfigError(f"seed={seed} is too large; use 0 <= seed <= {MAX_SEED}")
    batch = _int(cfg, "batch_size")
    n = _int(cfg, "subdomains")
    if "micro_batch" in cfg:  # runs made before micro-batches lack it (one chunk)
        _optional(cfg, "micro_batch", _int_or_auto)
    _int_or_auto(cfg, "eval_batch_size")
    overlap = _num(cfg, "overlap", 0.0, 1.0, hi_open=True)
    device = _choice(cfg, "device", DEVICES)
    for key in ("progress", "checkpoint"):
        _bool(cfg, key)
    _optional(cfg, "max_loss", _num, 0.0, math.inf, True)
    _optional(cfg, "out_dir", _text)
    _optional(cfg, "study", _text)
    resume = _get(cfg, "resume")
    if resume not in (None, "auto"):
        raise ConfigError(
            f"resume={resume!r}: resume a run directory on its own (`apts-train resume=DIR`, "
            "with epochs=N at most), or use resume=auto in a sweep"
        )
    if n > batch:
        raise ConfigError(
            f"subdomains={n} exceeds batch_size={batch}: every rank needs at least one sample "
            f"of each mini-batch; use batch_size>={n} or fewer subdomains"
        )
    if overlap > 0 and n > 1 and math.ceil(overlap * batch / n) > batch - math.ceil(batch / n):
        raise ConfigError(f"overlap={overlap} asks for more samples than the other shards hold")
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("device=cuda but no CUDA device is visible; use device=cpu")


def _validate_dataset(cfg: Mapping) -> None:
    # a group's name labels runs and reports: one of its files, whatever _target_ builds;
    # the loader's options are checked against its signature here, their ranges when it
    # runs (apts.runtime.launch.load_data, before the run directory is claimed); a config
    # saved before dataset._target_ existed has it from apts.rundir.claim.saved_config
    _choice(cfg, "dataset.name", group_files("dataset"))
    _bool(cfg, "dataset.download")
    _bool(cfg, "dataset.augment")
    _optional(cfg, "dataset.data_dir", _text)
    if "val_size" in _get(cfg, "dataset"):  # runs made before the validation split lack it
        _val_size(cfg)
    check_target("dataset", _get(cfg, "dataset"), ("seed",))
    _choice(cfg, "model.name", group_files("model"))
    check_target("model", _get(cfg, "model"), ("shape", "num_classes"))


def group_files(group: str) -> tuple[str, ...]:
    """The choices of a config group: its files' names (``configs/<group>/*.yaml``)."""
    return tuple(sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml")))


def _val_size(cfg: Mapping) -> None:
    v = _get(cfg, "dataset.val_size")
    count = isinstance(v, int) and not isinstance(v, bool) and v >= 0
    if not (count or (isinstance(v, float) and 0 < v < 1)):
        raise ConfigError(
            f"dataset.val_size={v!r} must be a number of training samples (>= 0; 0: no "
            "validation split) or a fraction in (0, 1); e.g. dataset.val_size=5000"
        )


def _validate_launcher(cfg: Mapping) -> None:
    check_environment()
    _num(cfg, "launcher.timeout_s", 0.0, math.inf, True)
    _num(cfg, "launcher.heartbeat_s", 1.0, math.inf)
    _optional(cfg, "launcher.master_addr", _text)
    n = _get(cfg, "subdomains")
    if torchrun_env() is None and n > local_rank_limit():
        raise ConfigError(
            f"subdomains={n} would start {n} processes on this machine "
            f"({os.cpu_count()} cores); use at most {local_rank_limit()}, or torchrun/SLURM "
            "to spread the ranks over machines"
        )


def check_known_keys(cfg: Mapping, choices: Mapping[str, Any]) -> None:
    """Every key must be declared by train.yaml or the chosen group file (or be an
    optimizer's constructor argument, checked by :func:`check_optimizer`)."""
    from omegaconf import OmegaConf

    base = OmegaConf.load(CONFIG_DIR / "train.yaml")
    top = {k for k in base if k not in ("defaults", "hydra")} | set(GROUPS)
    for key in cfg:
        if key not in top and key != "hydra":
            raise ConfigError(unknown_key(key, dict(choices)))
    for group in ("dataset", "model", "launcher"):
        choice = choices.get(group)
        if choice is None:
            continue
        declared = set(OmegaConf.load(CONFIG_DIR / group / f"{choice}.yaml"))
        for key in _get(cfg, group):
            if key not in declared:
                raise ConfigError(
                    unknown_key(f"{group}.{key}", dict(choices))
                    + f"; {group}={choice} has: {', '.join(sorted(declared))}"
                )


def check_target(group: str, gcfg: Mapping, given: tuple[str, ...]):
    """Load a group's ``_target_`` and check its keys against the callee's signature: each
    must be an argument (``given`` are the ones the runner passes) of its default's kind.
    Returns the factory (see :func:`group_factory`) and the signature's parameters."""
    import inspect

    from omegaconf import OmegaConf

    name = _text(gcfg, "name")
    plain = OmegaConf.to_container(gcfg, resolve=True) if OmegaConf.is_config(gcfg) else gcfg
    try:
        factory = group_factory(dict(plain))
    except Exception as e:  # Hydra: a _target_ that does not import
        raise ConfigError(
            f"{group}={name}: cannot load {group}._target_: {_first_line(e)}"
        ) from None
    params = inspect.signature(factory.func).parameters
    unknown = sorted(set(factory.keywords) - set(params))
    if unknown and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        options = [k for k in params if k not in given]
        key = f"{group}.{unknown[0]}"
        elsewhere = [o for o in owners(key) if o != name]
        hint = (
            f" (it belongs to {group}={', '.join(elsewhere)})"
            if elsewhere
            else did_you_mean(unknown[0], options)
        )
        raise ConfigError(
            f"{key} is not an option of {group}={name}{hint}; its options: {', '.join(options)}"
        )
    for key, value in factory.keywords.items():
        _check_type(f"{group}.{key}", value, params[key].default)
    return factory, params


def check_optimizer(ocfg: Mapping) -> functools.partial:
    """Build the configured optimizer on a dummy parameter: its constructor checks every
    option (ranges, unknown keys); a rejection becomes a one-line :class:`ConfigError`.
    Returns the optimizer's factory."""

    import torch

    name = ocfg["name"]
    factory, params = check_target("optimizer", ocfg, ("params", "comm"))
    try:
        with _no_dynamo_import():
            factory([torch.zeros(1, requires_grad=True)])
    except (ValueError, TypeError) as e:
        # a string where the default is a number is left to the constructor (gamma="auto")
        strings = [k for k, v in factory.keywords.items() if isinstance(v, str)]
        numeric = [k for k in strings if isinstance(params[k].default, (int, float))]
        if isinstance(e, TypeError) and numeric:
            raise ConfigError(
                f"optimizer.{numeric[0]}={factory.keywords[numeric[0]]!r} must be a number"
            ) from None
        # an OptionError names the configured key; any other error (torch's own checks:
        # "Invalid learning rate: -1") is quoted as the optimizer's
        named = isinstance(e, OptionError) and e.option in factory.keywords
        where = f"optimizer.{e}" if named else f"optimizer={name}: {_first_line(e)}"
        raise ConfigError(f"{where}; fix it with optimizer.<key>=<value>") from None
    return factory


@contextmanager
def _no_dynamo_import():
    """Build an optimizer without importing torch._dynamo. ``Optimizer.add_param_group``
    is wrapped by ``torch._disable_dynamo``, whose first call imports torch._dynamo (as
    long as importing torch itself: about a sixth of ``experiment=smoke``'s wall time, paid
    by the launcher, which compiles nothing) and caches the result on the wrapped function
    as ``__dynamo_disable``. While this context lasts, that cache holds the plain method.
    With another torch, where the wrapper differs, the import just happens as before."""
    import torch

    fn = getattr(torch.optim.Optimizer.add_param_group, "__wrapped__", None)
    if fn is None or hasattr(fn, "__dynamo_disable"):
        yield
        return
    setattr(fn, "__dynamo_disable", fn)  # noqa: B010 (not name-mangled: torch's own spelling)
    try:
        yield
    finally:
        delattr(fn, "__dynamo_disable")  # noqa: B043


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return " ".join(lines[0].split()) if lines else type(e).__name__


def _check_type(key: str, value: Any, default: Any) -> None:
    """A value must have the kind of its constructor default: a bool for a bool (Hydra
    gives ``maybe`` as a string), a number for a number, a list of numbers for a tuple."""
    if isinstance(default, bool):
        _checked(check_bool, key, value)
    elif isinstance(default, (int, float)) and not isinstance(value, str):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}={value!r} must be a number")
        # torch takes NaN and infinities and trains on them until the loss is NaN
        if math.isfinite(default) and not math.isfinite(value):
            raise ConfigError(f"{key}={value!r} must be a finite number")
    elif isinstance(default, tuple):
        ok = isinstance(value, (list, tuple)) and len(value) == len(default)
        if not ok or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in value):
            raise ConfigError(f"{key}={value!r} must be a list of {len(default)} numbers")
        if not all(math.isfinite(v) for v in value):
            raise ConfigError(f"{key}={value!r} must be a list of {len(default)} finite numbers")
