"""MNIST and Fashion-MNIST: the IDX format (LeCun's), raw or gzipped.

Layout (torchvision's): ``<data_dir>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte``
with or without ``.gz`` (``FashionMNIST/raw`` for Fashion-MNIST); the files may also sit in
``<data_dir>/MNIST`` or in ``<data_dir>`` itself. Debian's ``dataset-fashion-mnist`` puts
them in ``/usr/share/datasets/fashion-mnist`` (``registry.SYSTEM_DIRS``).
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import torch

from apts.data.dataset import Dataset
from apts.data import registry
from apts.data.download import fetch
from apts.data.files import Split, checked_dataset, read_file, record
from apts.data.registry import IDX_DIR, IDX_FILES, PRETTY
from apts.errors import DataError

_FIX = "delete it and download again (or set dataset.data_dir to a good copy)"


def _find_idx(directory: Path, stem: str) -> Path | None:
    """The raw file if present (fast), else the .gz; also Kaggle's ``train-images.idx3-ubyte``.

    Anything at that name counts (a folder, an unreadable file): reading it then says what
    is wrong with it, where skipping it would only say the data is missing.
    """
    dotted = stem.replace("-idx", ".idx")
    for fname in (stem, stem + ".gz", dotted, dotted + ".gz"):
        p = directory / fname
        if p.exists():
            return p
    return None


class IdxFiles:
    """Where the four IDX files of ``key`` (``mnist``/``fashion_mnist``) are, and how to
    get and read them (the interface :func:`apts.data.load.load_dataset` locates with)."""

    def __init__(self, key: str):
        self.key = key
        self.pretty = PRETTY[key]
        self.wanted = ", ".join(f"{s}[.gz]" for s in IDX_FILES.values())

    def candidates(self, root: Path) -> list[Path]:
        sub = IDX_DIR[self.key]
        dirs = [root / sub / "raw", root / sub, root]
        if self.key == "fashion_mnist":
            dirs += [root / "fashion-mnist", root / "fashion_mnist"]
        return dirs

    def find(self, directory: Path) -> dict[str, Path] | None:
        found = {k: _find_idx(directory, stem) for k, stem in IDX_FILES.items()}
        return found if all(found.values()) else None  # type: ignore[return-value]

    def unpack(self, root: Path) -> None:
        """Nothing to unpack: the .gz files are read as they are."""

    def manual_fix(self, root: Path, urls: list[str]) -> str:
        mirror = urls[0] if urls else "a mirror"
        return (
            f"fetch the four .gz files from {mirror} into {root / IDX_DIR[self.key] / 'raw'}, "
            "or set dataset.data_dir to a folder that holds them"
        )

    def download(self, root: Path, urls: list[str]) -> str | None:
        """Fetch the missing .gz files into ``<root>/<MNIST|FashionMNIST>/raw``."""
        target = root / IDX_DIR[self.key] / "raw"
        for stem in IDX_FILES.values():
            if _find_idx(target, stem) is None:
                fname = stem + ".gz"
                err = fetch(fname, target, urls, registry.MD5[self.key].get(fname))
                if err:
                    return err  # the next files would fail the same way
        return None

    def read(self, files: dict[str, Path]) -> Dataset:
        """The dataset in the four files, with their md5s as its ``source``."""
        arrays, source = {}, []
        for k, path in files.items():
            arrays[k], md5 = read_idx(path, ndim=3 if k.endswith("_x") else 1)
            source.append(record(path, md5))

        def split(s: str) -> Split:
            x, y = arrays[f"{s}_x"].unsqueeze(1), arrays[f"{s}_y"].to(torch.int64)
            return Split(x, y, str(files[f"{s}_x"]), str(files[f"{s}_y"]))

        fix = "delete the files and download them again (or set dataset.data_dir to a good copy)"
        return checked_dataset(self.key, split("train"), split("test"), 10, source, fix)


def read_idx(path: Path, ndim: int) -> tuple[torch.Tensor, str]:
    """One IDX file (gzip or raw) of unsigned bytes as a uint8 tensor, and the file's md5.

    Format: 2 zero bytes, type code 0x08 (ubyte), number of dims, then one big-endian
    int32 per dim, then the data in C order.
    """
    buf, md5 = read_file(path)
    if path.name.endswith(".gz"):
        try:
            buf = bytearray(gzip.decompress(buf))
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{path} is corrupt or truncated ({exc}); {_FIX}") from None
    if len(buf) < 4 or buf[0] != 0 or buf[1] != 0 or buf[2] != 0x08 or buf[3] != ndim:
        head = buf[:4].hex() or "empty"
        raise DataError(
            f"{path} is not an IDX file of unsigned bytes with {ndim} dims "
            f"(magic {head}, expected 000008{ndim:02x}); {_FIX}"
        )
    header = 4 + 4 * ndim
    if len(buf) < header:
        raise DataError(f"{path} is truncated (header incomplete, {len(buf)} bytes); {_FIX}")
    dims = [int.from_bytes(buf[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    expected = header + math.prod(dims)
    if len(buf) != expected:
        what = "truncated" if len(buf) < expected else "longer than its header says"
        raise DataError(
            f"{path} is {what}: {len(buf)} bytes, header {dims} needs {expected}; {_FIX}"
        )
    if expected == header:  # no data (frombuffer refuses an empty view)
        return torch.empty(dims, dtype=torch.uint8), md5
    return torch.frombuffer(buf, dtype=torch.uint8, offset=header).view(*dims), md5
