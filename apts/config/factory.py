"""A config group's ``_target_`` as a factory (Hydra's ``instantiate``, partial), and what
the class it names says it needs. No torch here: importing this module is cheap; building
a factory imports the target's module."""

from __future__ import annotations

import functools
from collections.abc import Mapping


def group_factory(gcfg: Mapping) -> functools.partial:
    """The ``_target_`` of a config group (``optimizer``, ``model``) with its options bound
    (Hydra's ``instantiate``, partial): every key except ``name`` (the runner's label) is
    an argument, declared nowhere else; the callee checks its ranges and rejects unknown
    keys. The runner adds what only it knows: the parameters and ``comm``; the data's
    ``shape`` and ``num_classes``."""
    from hydra.utils import instantiate

    args = {k: v for k, v in gcfg.items() if k != "name"}
    return instantiate({**args, "_partial_": True}, _convert_="all")


def needs(factory: functools.partial, what: str) -> bool:
    """What the optimizer class says it needs, by a class attribute: ``requires_closure``
    (``step(closure)``), ``requires_comm`` (it issues its own collectives; the others are
    the data-parallel baselines, wrapped in DDP), ``uses_overlap`` (overlapping shards)."""
    return bool(getattr(factory.func, what, False))
