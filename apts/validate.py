"""Config validation: every check that can fail before a rank starts.

Each failure is a :class:`ConfigError` whose message is one line saying what is
wrong and how to fix it; the CLI prints it and exits with status 2.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

DEVICES = ("cpu", "cuda", "auto")
OPTIMIZERS = ("sgd", "adam", "tr", "apts")


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
    inf = math.inf
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
    if not isinstance(ds.get("data_dir"), str) or not ds["data_dir"]:
        raise ConfigError("dataset.data_dir must be a directory path")

    opt = _choice(cfg, "optimizer.name", OPTIMIZERS)
    if opt in ("sgd", "adam"):
        _num(cfg, "optimizer.lr", 0.0, inf, lo_open=True)
        _num(cfg, "optimizer.weight_decay", 0.0, inf)
        if opt == "sgd":
            _num(cfg, "optimizer.momentum", 0.0, 1.0, hi_open=True)
        else:
            betas = _get(cfg, "optimizer.betas")
            if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
                raise ConfigError(f"optimizer.betas={list(betas)} must be two numbers in [0, 1)")
    else:
        _validate_trust_region(cfg)
    if opt != "apts" and overlap > 0:
        raise ConfigError(f"overlap={overlap} is only used by optimizer=apts; set overlap=0")


def _validate_trust_region(cfg: Mapping) -> None:
    inf = math.inf
    r0 = _num(cfg, "optimizer.radius", 0.0, inf, lo_open=True)
    rmin = _num(cfg, "optimizer.min_radius", 0.0, inf, lo_open=True)
    rmax = _num(cfg, "optimizer.max_radius", 0.0, inf, lo_open=True)
    if not rmin <= r0 <= rmax:
        raise ConfigError(
            f"need optimizer.min_radius <= optimizer.radius <= optimizer.max_radius, "
            f"got {rmin} <= {r0} <= {rmax}"
        )
    e1 = _num(cfg, "optimizer.eta1", 0.0, 1.0, hi_open=True)
    e2 = _num(cfg, "optimizer.eta2", 0.0, 1.0, hi_open=True)
    if e1 > e2:
        raise ConfigError(f"need optimizer.eta1 <= optimizer.eta2, got {e1} > {e2}")
    _num(cfg, "optimizer.dec", 0.0, 1.0, lo_open=True, hi_open=True)
    _num(cfg, "optimizer.inc", 1.0, inf)
    _choice(cfg, "optimizer.order", ("first", "second"))
    _int(cfg, "optimizer.memory")
    gamma = _get(cfg, "optimizer.gamma")
    if gamma != "auto":
        _num(cfg, "optimizer.gamma", 0.0, inf, lo_open=True)
    if _get(cfg, "optimizer.name") == "apts":
        _int(cfg, "optimizer.local_iters", lo=0)
        _int(cfg, "optimizer.global_iters", lo=0)
        _choice(cfg, "optimizer.local_memory", ("keep", "reset"))
        if not isinstance(_get(cfg, "optimizer.foc"), bool):
            raise ConfigError("optimizer.foc must be true or false")
