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

from apts.data.dataset import Dataset
from apts.data import registry
from apts.data.download import fetch
from apts.data.files import Split, checked_dataset, read_file, record
from apts.data.registry import CIFAR_DIR, CIFAR_TAR, CIFAR_TEST, CIFAR_TRAIN
from apts.errors import DataError

_NAMES = (*CIFAR_TRAIN, CIFAR_TEST)


class CifarFiles:
    """Where the six CIFAR-10 batches are, and how to get and read them (the interface
    :func:`apts.data.load.load_dataset` locates with)."""

    key = "cifar10"
    pretty = "CIFAR-10"
    wanted = f"{', '.join(CIFAR_TRAIN)}, {CIFAR_TEST}"

    def candidates(self, root: Path) -> list[Path]:
        return [root / CIFAR_DIR, root]

    def find(self, directory: Path) -> dict[str, Path] | None:
        # anything at a batch's name counts: reading it says what is wrong with it
        files = {n: directory / n for n in _NAMES}
        return files if all(p.exists() for p in files.values()) else None

    def unpack(self, root: Path) -> None:
        """Extract ``<root>/cifar-10-python.tar.gz`` when it is there (no network needed)."""
        if (root / CIFAR_TAR).exists():
            _extract_cifar(root / CIFAR_TAR, root)

    def manual_fix(self, root: Path, urls: list[str]) -> str:
        mirror = urls[0] if urls else "<mirror>/"
        return (
            f"fetch {mirror}{CIFAR_TAR} into {root} (it is extracted to {root / CIFAR_DIR}), "
            f"or set dataset.data_dir to a folder that holds {CIFAR_DIR}/"
        )

    def download(self, root: Path, urls: list[str]) -> str | None:
        """Fetch the archive into ``root`` and extract it there."""
        err = fetch(CIFAR_TAR, root, urls, registry.MD5["cifar10"].get(CIFAR_TAR))
        if err is None:
            _extract_cifar(root / CIFAR_TAR, root)
        return err

    def read(self, files: dict[str, Path]) -> Dataset:
        """The dataset in the six batches, with their md5s as its ``source``."""
        batch_dir = files[CIFAR_TEST].parent
        fix = f"delete {batch_dir} and extract {CIFAR_TAR} again"
        parts, source = {}, []
        for name, path in files.items():
            buf, md5 = read_file(path)
            parts[name] = _parse_batch(path, buf, fix)
            source.append(record(path, md5))
        train = Split(
            torch.cat([parts[n][0] for n in CIFAR_TRAIN]),
            torch.cat([parts[n][1] for n in CIFAR_TRAIN]),
            f"{batch_dir}/data_batch_1..5",
            f"{batch_dir}/data_batch_1..5",
        )
        test = Split(*parts[CIFAR_TEST], str(files[CIFAR_TEST]), str(files[CIFAR_TEST]))
        return checked_dataset(self.key, train, test, 10, source, fix)


def _parse_batch(path: Path, buf: bytes, fix: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``[N, 3, 32, 32]`` and labels of one batch: a pickled dict whose ``data`` is
    ``[N, 3072]`` uint8 (the R, G and B planes of each image, row-major) and ``labels`` N ints."""
    try:
        d = pickle.loads(buf, encoding="bytes")
        data = np.asarray(d[b"data"], dtype=np.uint8)
        labels = np.asarray(d[b"labels"], dtype=np.int64)
    except Exception as exc:  # unpickling errors come in many types
        raise DataError(
            f"{path} is not a CIFAR-10 batch, it is corrupt or truncated "
            f"({type(exc).__name__}: {exc}); {fix}"
        ) from None
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or labels.shape != (data.shape[0],):
        raise DataError(
            f"{path} has data {data.shape} and {labels.shape[0]} labels, expected "
            f"[N, 3072] and N labels; {fix}"
        )
    if labels.size and (labels.min() < 0 or labels.max() > 9):  # name the batch, not the split
        bad = labels.min() if labels.min() < 0 else labels.max()
        raise DataError(f"{path} holds label {bad}, expected 0..9: the file is corrupt; {fix}")
    return torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()), torch.from_numpy(labels)


def _extract_cifar(tar: Path, root: Path) -> None:
    """Extract into a private temp folder, then move the batch folder into place."""
    target = root / CIFAR_DIR
    try:
        tmp = Path(tempfile.mkdtemp(prefix=".cifar-extract-", dir=root))
    except OSError as exc:
        raise DataError(
            f"cannot extract {tar}: cannot write in {root} ({exc.strerror or exc}); "
            f"extract it elsewhere and set dataset.data_dir to that folder"
        ) from None
    try:
        try:
            with tarfile.open(tar, "r:gz") as tf:
                if hasattr(tarfile, "data_filter"):
                    tf.extractall(tmp, filter="data")
                else:  # Python < 3.10.12 without extraction filters
                    tf.extractall(tmp)
        except OSError as exc:
            if exc.errno is None:  # gzip's BadGzipFile: bad bytes, not a system error
                raise DataError(
                    f"{tar} is corrupt or truncated ({exc}); delete it and download again"
                ) from None
            raise DataError(
                f"cannot read {tar} or write its contents into {root}: "
                f"{exc.strerror or exc}; check the permissions and free space there"
            ) from None
        except (EOFError, zlib.error, tarfile.TarError) as exc:
            raise DataError(
                f"{tar} is corrupt or truncated ({exc}); delete it and download again"
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
