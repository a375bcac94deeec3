"""MNIST and Fashion-MNIST: the IDX format (LeCun's), raw or gzipped.

Layout (torchvision's): ``<data_dir>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``
(``FashionMNIST/raw`` for Fashion-MNIST); the files may also sit in ``<data_dir>/MNIST`` or
``<data_dir>`` itself, and Debian's ``dataset-fashion-mnist`` puts them in
``/usr/share/datasets/fashion-mnist``.
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import torch

from apts.data import Dataset, channel_stats
from apts.datasets import registry
from apts.datasets.download import fetch
from apts.datasets.registry import IDX_DIR, IDX_FILES, PRETTY, DataError


def _idx_candidates(key: str, root: Path | None) -> list[Path]:
    dirs: list[Path] = []
    if root is not None:
        sub = IDX_DIR[key]
        dirs += [root / sub / "raw", root / sub, root]
        if key == "fashion_mnist":
            dirs += [root / "fashion-mnist", root / "fashion_mnist"]
    dirs += [Path(d) for d in registry.SYSTEM_DIRS.get(key, [])]
    return dirs


def _find_idx(directory: Path, stem: str) -> Path | None:
    """The raw file if present (fast), else the .gz; also Kaggle's ``train-images.idx3-ubyte``."""
    dotted = stem.replace("-idx", ".idx")
    for fname in (stem, stem + ".gz", dotted, dotted + ".gz"):
        p = directory / fname
        if p.is_file():
            return p
    return None


def _locate_idx(key: str, root: Path | None, download: bool, urls: list[str]) -> dict[str, Path]:
    pretty = PRETTY[key]
    candidates = _idx_candidates(key, root)
    for d in candidates:
        found = {k: _find_idx(d, stem) for k, stem in IDX_FILES.items()}
        if all(found.values()):
            return found  # type: ignore[return-value]
    wanted = ", ".join(f"{s}[.gz]" for s in IDX_FILES.values())
    where = ", ".join(str(d) for d in candidates) or "(no data_dir given)"
    target = root / IDX_DIR[key] / "raw" if root is not None else None
    hint_dir = str(target) if target else f"<data_dir>/{IDX_DIR[key]}/raw"
    fix = (
        f"fetch the four .gz files from {urls[0] if urls else 'a mirror'} "
        f"into {hint_dir}, "
        f"or set dataset.data_dir to a folder that holds them"
    )
    if key == "fashion_mnist":
        fix += " (or run: apt-get install dataset-fashion-mnist)"
    if not download:
        raise DataError(
            f"{pretty} not found: looked in {where} for {wanted}; download is off: "
            f"set dataset.download=true, or {fix}"
        )
    if target is None:
        raise DataError(
            f"{pretty} not found (looked in {where} for {wanted}) and there is nowhere "
            f"to download it to: set dataset.data_dir=<folder for datasets>"
            + (" (or run: apt-get install dataset-fashion-mnist)" if key == "fashion_mnist" else "")
        )
    errors = []
    for stem in IDX_FILES.values():
        if _find_idx(target, stem) is None:
            err = fetch(stem + ".gz", target, urls, registry.MD5[key].get(stem + ".gz"))
            if err:
                errors.append(err)
                break  # the next files would fail the same way
    if errors:
        raise DataError(
            f"{pretty} not found (looked in {where} for {wanted}) and download failed "
            f"({'; '.join(errors)}): {fix}, or set APTS_DATA_MIRROR=<base URL of a mirror>"
        )
    return {k: _find_idx(target, stem) for k, stem in IDX_FILES.items()}  # type: ignore[misc]


def load_idx_dataset(key: str, root: Path | None, download: bool, urls: list[str]) -> Dataset:
    """MNIST or Fashion-MNIST from the four IDX files (see :func:`_idx_candidates`)."""
    files = _locate_idx(key, root, download, urls)
    train_x = _read_idx(files["train_x"], ndim=3)
    train_y = _read_idx(files["train_y"], ndim=1)
    test_x = _read_idx(files["test_x"], ndim=3)
    test_y = _read_idx(files["test_y"], ndim=1)
    for xs, ys, xf, yf in (
        (train_x, train_y, files["train_x"], files["train_y"]),
        (test_x, test_y, files["test_x"], files["test_y"]),
    ):
        if xs.shape[0] != ys.shape[0]:
            raise DataError(
                f"{xf} has {xs.shape[0]} images but {yf} has {ys.shape[0]} labels: "
                "the files come from different releases or are damaged; "
                "delete them and re-download"
            )
    num_classes = 10
    for yf, ys in ((files["train_y"], train_y), (files["test_y"], test_y)):
        if ys.numel() and int(ys.max()) >= num_classes:
            raise DataError(
                f"{yf} holds label {int(ys.max())} (expected 0..9): corrupt file; "
                "delete it and re-download"
            )
    train_x = train_x.unsqueeze(1)
    test_x = test_x.unsqueeze(1)
    mean, std = channel_stats(train_x)
    return Dataset(
        name=key,
        train_x=train_x,
        train_y=train_y.to(torch.int64),
        test_x=test_x,
        test_y=test_y.to(torch.int64),
        mean=mean,
        std=std,
        num_classes=num_classes,
    )


def _read_idx(path: Path, ndim: int) -> torch.Tensor:
    """Read one IDX file (gzip or raw) of unsigned bytes into a uint8 tensor.

    Format: 2 zero bytes, type code 0x08 (ubyte), number of dims, then one big-endian
    int32 per dim, then the data in C order.
    """
    fix = "delete it and download again (or set dataset.data_dir to a good copy)"
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                buf = bytearray(f.read())
        else:
            buf = bytearray(path.read_bytes())
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(
            f"cannot read {path} ({exc}): the file is corrupt or truncated; {fix}"
        ) from None
    if len(buf) < 4 or buf[0] != 0 or buf[1] != 0 or buf[2] != 0x08 or buf[3] != ndim:
        head = buf[:4].hex() or "empty"
        raise DataError(
            f"{path} is not an IDX file of unsigned bytes with {ndim} dims "
            f"(magic {head}, expected 000008{ndim:02x}); {fix}"
        )
    header = 4 + 4 * ndim
    if len(buf) < header:
        raise DataError(f"{path} is truncated (header incomplete, {len(buf)} bytes); {fix}")
    dims = [int.from_bytes(buf[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    expected = header + math.prod(dims)
    if len(buf) != expected:
        what = "truncated" if len(buf) < expected else "longer than its header says"
        raise DataError(
            f"{path} is {what}: {len(buf)} bytes, header {dims} needs {expected}; {fix}"
        )
    return torch.frombuffer(buf, dtype=torch.uint8, offset=header).view(*dims)
