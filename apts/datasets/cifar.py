"""CIFAR-10: the python pickles of ``cifar-10-python.tar.gz``.

Layout (torchvision's): ``<data_dir>/cifar-10-batches-py/{data_batch_1..5,test_batch}``; the
archive is downloaded into ``<data_dir>`` and extracted there.
"""

from __future__ import annotations

import os
import pickle
import shutil
import tarfile
import tempfile
import zlib
from pathlib import Path

import numpy as np
import torch

from apts.data import Dataset, channel_stats
from apts.datasets import registry
from apts.datasets.download import fetch
from apts.datasets.registry import CIFAR_DIR, CIFAR_TAR, CIFAR_TEST, CIFAR_TRAIN, DataError


def load_cifar10(root: Path | None, download: bool, urls: list[str]) -> Dataset:
    names = [*CIFAR_TRAIN, CIFAR_TEST]
    candidates = [root / CIFAR_DIR, root] if root is not None else []
    batch_dir = next((d for d in candidates if all((d / n).is_file() for n in names)), None)
    if batch_dir is None:
        where = ", ".join(str(d) for d in candidates) or "(no data_dir given)"
        wanted = f"{', '.join(CIFAR_TRAIN)}, {CIFAR_TEST}"
        if root is None:
            raise DataError(
                f"CIFAR-10 not found: no data_dir given; set dataset.data_dir=<folder that "
                f"holds {CIFAR_DIR}/> (downloads go there too)"
            )
        fix = (
            f"fetch {urls[0] if urls else '<mirror>/'}{CIFAR_TAR} and extract it in {root} "
            f"(giving {root / CIFAR_DIR}), "
            f"or set dataset.data_dir to a folder that holds {CIFAR_DIR}/"
        )
        tar = root / CIFAR_TAR
        if not tar.is_file():
            if not download:
                raise DataError(
                    f"CIFAR-10 not found: looked in {where} for {wanted} and for {tar}; "
                    f"download is off: set dataset.download=true, or {fix}"
                )
            err = fetch(CIFAR_TAR, root, urls, registry.MD5["cifar10"].get(CIFAR_TAR))
            if err:
                raise DataError(
                    f"CIFAR-10 not found (looked in {where} for {wanted}) and download failed "
                    f"({err}): {fix}, or set APTS_DATA_MIRROR=<base URL of a mirror>"
                )
        _extract_cifar(tar, root)
        batch_dir = root / CIFAR_DIR

    def read(fname: str) -> tuple[torch.Tensor, torch.Tensor]:
        path = batch_dir / fname
        try:
            with open(path, "rb") as f:
                d = pickle.load(f, encoding="bytes")
            data = np.asarray(d[b"data"], dtype=np.uint8)
            labels = np.asarray(d[b"labels"], dtype=np.int64)
        except Exception as exc:  # unpickling errors come in many types
            raise DataError(
                f"cannot read CIFAR-10 batch {path} ({type(exc).__name__}: {exc}); "
                f"delete {batch_dir} and extract {CIFAR_TAR} again"
            ) from None
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or labels.shape != (data.shape[0],):
            raise DataError(
                f"{path} has data {data.shape} and {labels.shape[0]} labels, expected "
                f"[N, 3072] and N labels; delete {batch_dir} and extract {CIFAR_TAR} again"
            )
        if labels.size and (labels.min() < 0 or labels.max() > 9):
            raise DataError(f"{path} holds labels outside 0..9; delete {batch_dir} and re-extract")
        return torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()), torch.from_numpy(labels)

    parts = [read(n) for n in CIFAR_TRAIN]
    train_x = torch.cat([p[0] for p in parts])
    train_y = torch.cat([p[1] for p in parts])
    test_x, test_y = read(CIFAR_TEST)
    mean, std = channel_stats(train_x)
    return Dataset("cifar10", train_x, train_y, test_x, test_y, mean, std, 10)


def _extract_cifar(tar: Path, root: Path) -> None:
    """Extract into a private temp folder, then move the batch folder into place."""
    target = root / CIFAR_DIR
    tmp = Path(tempfile.mkdtemp(prefix=".cifar-extract-", dir=root))
    try:
        try:
            with tarfile.open(tar, "r:gz") as tf:
                if hasattr(tarfile, "data_filter"):
                    tf.extractall(tmp, filter="data")
                else:  # Python < 3.10.12 without extraction filters
                    tf.extractall(tmp)
        except (OSError, EOFError, zlib.error, tarfile.TarError) as exc:
            raise DataError(
                f"cannot extract {tar} ({exc}): the archive is corrupt or truncated; "
                "delete it and download again"
            ) from None
        src = tmp / CIFAR_DIR
        if not src.is_dir():
            raise DataError(f"{tar} holds no {CIFAR_DIR}/ folder; delete it and download again")
        try:
            os.replace(src, target)
        except OSError:
            names = [*CIFAR_TRAIN, CIFAR_TEST]
            if not all((target / n).is_file() for n in names):  # not a concurrent extraction
                raise DataError(
                    f"{target} exists but is incomplete; remove it so that {tar} can be "
                    "extracted there"
                ) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
