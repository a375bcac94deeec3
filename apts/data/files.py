"""Reading data files with their md5, and the checks every dataset passes at load time.

A file that cannot be opened, a corrupt one and a well-formed one with unusable
content (an empty split, labels that do not match the images) each end in a
:class:`DataError` that names the file, before any training starts.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from apts.data.dataset import Dataset, channel_stats
from apts.errors import DataError

_CHUNK = 1 << 20


def read_file(path: Path) -> tuple[bytearray, str]:
    """The bytes of ``path`` as they are on disk, and their md5 (hex), read in 1 MiB chunks.

    Raises :class:`DataError` ("cannot read ...") when the file cannot be opened or read:
    missing permissions, a folder in its place, an I/O error.
    """
    digest = hashlib.md5()
    buf = bytearray()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
                buf += chunk
    except OSError as exc:
        raise DataError(
            f"cannot read {path}: {exc.strerror or exc}; make it a readable file "
            "(e.g. chmod a+r), or set dataset.data_dir to a folder with a readable copy"
        ) from None
    return buf, digest.hexdigest()


def record(path: Path, md5: str) -> dict[str, str]:
    """One entry of :attr:`Dataset.source`: the absolute path (links kept) and its md5."""
    return {"path": os.path.abspath(path), "md5": md5}


@dataclass
class Split:
    """One split as read: uint8 images ``[N, C, H, W]``, int64 labels ``[N]``, and where
    each came from (a file, or a description of several), for the messages."""

    x: torch.Tensor
    y: torch.Tensor
    x_from: str
    y_from: str


def checked_dataset(
    name: str,
    train: Split,
    test: Split,
    num_classes: int,
    source: list[dict[str, str]],
    fix: str,
) -> Dataset:
    """A :class:`Dataset` from two splits that pass the checks training relies on.

    Each split has as many labels as images, at least one image with H, W > 0, and
    labels in 0..num_classes-1; both splits have the same image shape. Anything else
    is a :class:`DataError` naming the file(s) and ending in ``fix``.
    """
    for split, s in (("training", train), ("test", test)):
        n_x, n_y = s.x.shape[0], s.y.shape[0]
        if n_x != n_y:
            raise DataError(
                f"{s.x_from} has {n_x} images but {s.y_from} has {n_y} labels: the files "
                f"come from different releases or are damaged; {fix}"
            )
        if s.x.numel() == 0:
            shape = "x".join(str(d) for d in s.x.shape[1:])
            raise DataError(
                f"{s.x_from} holds no image data ({n_x} images of {shape}): "
                f"the {split} split is empty; {fix}"
            )
        lo, hi = int(s.y.min()), int(s.y.max())
        if lo < 0 or hi >= num_classes:
            bad = lo if lo < 0 else hi
            raise DataError(
                f"{s.y_from} holds label {bad}, expected 0..{num_classes - 1}: "
                f"the file is corrupt or from another dataset; {fix}"
            )
    if train.x.shape[1:] != test.x.shape[1:]:
        a, b = ("x".join(str(d) for d in s.x.shape[1:]) for s in (train, test))
        raise DataError(
            f"{train.x_from} holds {a} images but {test.x_from} holds {b} images: "
            f"the training and test files come from different datasets; {fix}"
        )
    mean, std = channel_stats(train.x)
    return Dataset(name, train.x, train.y, test.x, test.y, mean, std, num_classes, source=source)
