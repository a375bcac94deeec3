"""A config group's ``_target_`` as a factory (Hydra's ``instantiate``, partial), and what
the class it names says it needs. No torch here: importing this module is cheap; building
a factory imports the target's module."""

from __future__ import annotations

import functools
from collections.abc import Mapping

# Keys a group file declares for the runner rather than for its ``_target_``: ``name`` (the
# label of runs and reports) and the dataset's ``augment`` (the training loop's) and
# ``val_size`` (the validation split the runner holds out of the training set).
RUNNER_KEYS = ("name", "augment", "val_size")


def group_factory(gcfg: Mapping) -> functools.partial:
    """The ``_target_`` of a config group (``optimizer``, ``model``, ``dataset``) with its
    options bound (Hydra's ``instantiate``, partial): every key but :data:`RUNNER_KEYS` is
    an argument, declared nowhere else; the callee checks its ranges and rejects unknown
    keys. The runner adds what only it knows: the parameters and ``comm``; the data's
    ``shape`` and ``num_classes``; a dataset gets nothing more."""
    from hydra.utils import instantiate

    args = {k: v for k, v in gcfg.items() if k not in RUNNER_KEYS}
    return instantiate({**args, "_partial_": True}, _convert_="all")


def needs(factory: functools.partial, what: str) -> bool:
    """What the optimizer class says it needs, by a class attribute: ``requires_closure``
    (``step(closure)``), ``requires_comm`` (it issues its own collectives; the others are
    the data-parallel baselines, wrapped in DDP), ``uses_overlap`` (overlapping shards)."""
    return bool(getattr(factory.func, what, False))
