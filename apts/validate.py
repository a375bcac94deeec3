"""Config validation: every check that can fail before a rank starts.

Each failure is a :class:`ConfigError` whose message is one line saying what is
wrong and how to fix it; the CLI prints it and exits with status 2.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

DEVICES = ("cpu", "cuda", "auto")
OPTIMIZERS = ("sgd", "adam", "tr", "apts", "local_sgd", "local_adam")


class ConfigError(ValueError):
    """A config value a person must change; the message says which and how."""


def _get(cfg: Mapping, dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise ConfigError(f"missing config key '{dotted}'")
        node = node[part]
    return node


def _int(cfg: Mapping, key: str, lo: int = 1) -> int:
    v = _get(cfg, key)
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise ConfigError(f"{key}={v!r} must be an integer >= {lo}; e.g. {key}={max(lo, 1)}")
    return v


def _num(cfg: Mapping, key: str, lo: float, hi: float, lo_open=False, hi_open=False) -> float:
    v = _get(cfg, key)
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    if ok:
        ok = (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
    if not ok:
        interval = f"{'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
        raise ConfigError(f"{key}={v!r} must be a number in {interval}")
    return float(v)


def _choice(cfg: Mapping, key: str, choices: tuple[str, ...]) -> str:
    v = _get(cfg, key)
    if v not in choices:
        raise ConfigError(f"{key}={v!r} is not valid; choose one of: {', '.join(choices)}")
    return v


def validate(cfg: Mapping) -> None:
    """Raise :class:`ConfigError` on the first invalid value of a composed config."""
    _int(cfg, "epochs")
    _int(cfg, "seed", lo=0)
    batch = _int(cfg, "batch_size")
    n = _int(cfg, "subdomains")
    _int(cfg, "eval_batch_size")
    overlap = _num(cfg, "overlap", 0.0, 1.0, hi_open=True)
    device = _choice(cfg, "device", DEVICES)
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

    ds = _get(cfg, "dataset")
    if _get(cfg, "dataset.name") == "synthetic":
        _int(cfg, "dataset.n_train")
        _int(cfg, "dataset.n_test")
        _int(cfg, "dataset.num_classes", lo=2)
        shape = _get(cfg, "dataset.shape")
        if len(shape) != 3 or any(not isinstance(s, int) or s < 1 for s in shape):
            raise ConfigError(f"dataset.shape={list(shape)} must be three positive ints [C, H, W]")
    if ds.get("data_dir") is not None and (
        not isinstance(ds["data_dir"], str) or not ds["data_dir"]
    ):
        raise ConfigError("dataset.data_dir must be a directory path, or null for the default")

    opt = _choice(cfg, "optimizer.name", OPTIMIZERS)
    if opt != "apts" and overlap > 0:
        raise ConfigError(f"overlap={overlap} is only used by optimizer=apts; set overlap=0")
    check_optimizer(_get(cfg, "optimizer"))


def check_optimizer(ocfg: Mapping) -> None:
    """Build the configured optimizer on a dummy parameter: its constructor checks every
    option (ranges, unknown keys); a rejection becomes a one-line :class:`ConfigError`."""
    import inspect

    import torch
    from omegaconf import OmegaConf

    from apts.train import optimizer_factory

    name = ocfg["name"]
    plain = OmegaConf.to_container(ocfg, resolve=True) if OmegaConf.is_config(ocfg) else ocfg
    try:
        factory = optimizer_factory(dict(plain))
    except Exception as e:  # Hydra: a _target_ that does not import
        raise ConfigError(
            f"optimizer={name}: cannot load optimizer._target_: {_first_line(e)}"
        ) from None
    params = inspect.signature(factory.func).parameters
    unknown = sorted(set(factory.keywords) - set(params))
    if unknown and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        options = ", ".join(k for k in params if k not in ("params", "comm"))
        raise ConfigError(
            f"optimizer.{unknown[0]} is not an option of optimizer={name}; its options: {options}"
        )
    for key, value in factory.keywords.items():
        _check_type(f"optimizer.{key}", value, params[key].default)
    try:
        factory([torch.zeros(1, requires_grad=True)])
    except (ValueError, TypeError) as e:
        # a string where the default is a number is left to the constructor (gamma="auto")
        strings = [k for k, v in factory.keywords.items() if isinstance(v, str)]
        numeric = [k for k in strings if isinstance(params[k].default, (int, float))]
        if isinstance(e, TypeError) and numeric:
            raise ConfigError(
                f"optimizer.{numeric[0]}={factory.keywords[numeric[0]]!r} must be a number"
            ) from None
        msg = _first_line(e)
        key = msg.split("=", 1)[0] if "=" in msg else ""
        where = f"optimizer.{msg}" if key in factory.keywords else f"optimizer={name}: {msg}"
        raise ConfigError(f"{where}; fix it with optimizer.<key>=<value>") from None


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return " ".join(lines[0].split()) if lines else type(e).__name__


def _check_type(key: str, value: Any, default: Any) -> None:
    """A value must have the kind of its constructor default: a bool for a bool (Hydra
    gives ``maybe`` as a string), a number for a number, a list of numbers for a tuple."""
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{key}={value!r} must be true or false")
    elif isinstance(default, (int, float)) and not isinstance(value, str):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}={value!r} must be a number")
    elif isinstance(default, tuple):
        ok = isinstance(value, (list, tuple)) and len(value) == len(default)
        if not ok or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in value):
            raise ConfigError(f"{key}={value!r} must be a list of {len(default)} numbers")
