"""Datasets from files: MNIST and Fashion-MNIST (IDX), CIFAR-10 (python pickles).

:func:`load_dataset` finds the files on disk (torchvision's layout, see :mod:`.idx` and
:mod:`.cifar`), or downloads them from mirrors with md5 checks (:mod:`.download`), and
returns an in-memory :class:`apts.data.Dataset`; ``synthetic`` is generated instead
(:func:`apts.data.make_synthetic`). Everything that goes wrong is a one-line
:class:`DataError` that names the file and the fix.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from apts.data import Dataset, make_synthetic
from apts.datasets.cifar import load_cifar10
from apts.datasets.download import mirror_list
from apts.datasets.idx import load_idx_dataset
from apts.datasets.registry import DATASETS, DataError, canonical_name

# The mirrors, md5 sums and system folders are module globals of .registry (patch them there).
__all__ = ["DATASETS", "DataError", "load_dataset"]


def load_dataset(
    name: str,
    data_dir: str | os.PathLike | None,
    *,
    download: bool = True,
    seed: int = 0,
    mirrors: Sequence[str] | None = None,
    **synthetic_kwargs,
) -> Dataset:
    """Load ``mnist``, ``fashion_mnist``, ``cifar10`` or ``synthetic`` into memory.

    Local files are looked for first (see the module docstring); when absent and
    ``download`` is true they are fetched into ``data_dir`` from ``mirrors`` (base URLs,
    tried first), ``$APTS_DATA_MIRROR`` (comma-separated base URLs), then
    ``registry.MIRRORS``, and checked against ``registry.MD5``. ``seed`` and ``synthetic_kwargs``
    (``n_train``, ``n_test``, ``shape``, ``num_classes``, ``noise``) are used by
    ``synthetic`` only. Raises :class:`DataError` when data is missing or corrupt.
    """
    key = canonical_name(name)
    if key == "synthetic":
        return make_synthetic(seed=seed, **synthetic_kwargs)
    if synthetic_kwargs:
        raise ValueError(
            f"options {sorted(synthetic_kwargs)} only apply to the synthetic dataset, not {key}"
        )
    root = Path(data_dir).expanduser() if data_dir not in (None, "") else None
    urls = mirror_list(key, mirrors)
    if key == "cifar10":
        return load_cifar10(root, download, urls)
    return load_idx_dataset(key, root, download, urls)
