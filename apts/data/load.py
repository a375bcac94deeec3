"""Datasets from files: MNIST and Fashion-MNIST (IDX), CIFAR-10 (python pickles).

:func:`load_dataset` finds the files on disk (torchvision's layout, see :mod:`.idx` and
:mod:`.cifar`), or downloads them from mirrors with md5 checks (:mod:`.download`), and
returns an in-memory :class:`apts.data.Dataset` whose ``source`` lists the files read
and their md5s (``synthetic`` is generated instead: :func:`apts.data.dataset.make_synthetic`).
:data:`mnist`, :data:`fashion_mnist`, :data:`cifar10` and :data:`synthetic` are the
``_target_`` of their configs (``configs/dataset/<name>.yaml``). Everything that goes
wrong is a one-line :class:`DataError` naming the file and the fix.

Where the files are looked for:

- ``data_dir=None`` (auto, the configs' default): ``$APTS_DATA_DIR``, else ``./data``,
  then the copy a system package installed (``registry.SYSTEM_DIRS``: Debian's
  ``dataset-fashion-mnist``); a download goes into ``$APTS_DATA_DIR`` or ``./data``.
- an explicit ``data_dir``: that folder alone, plus a download into it. A system copy is
  not used behind the user's back (the error says it exists and how to use it).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from apts.data.dataset import Dataset, make_synthetic
from apts.data import registry
from apts.data.cifar import CifarFiles
from apts.data.download import mirror_list
from apts.data.idx import IdxFiles
from apts.data.registry import DATASETS, canonical_name
from apts.errors import DataError

# The mirrors, md5 sums and system folders are module globals of .registry (patch them there).
__all__ = [
    "DATASETS",
    "auto_data_dir",
    "cifar10",
    "fashion_mnist",
    "load_dataset",
    "mnist",
    "synthetic",
]


class _Files(Protocol):
    """How one dataset sits on disk (:class:`.idx.IdxFiles`, :class:`.cifar.CifarFiles`)."""

    key: str
    pretty: str
    wanted: str  # the file names, for messages

    def candidates(self, root: Path) -> list[Path]: ...  # folders under root, in order
    def find(self, directory: Path) -> dict[str, Path] | None: ...  # all files, or None
    def unpack(self, root: Path) -> None: ...  # local work that may produce the files
    def manual_fix(self, root: Path, urls: list[str]) -> str: ...  # how to get them by hand
    def download(self, root: Path, urls: list[str]) -> str | None: ...  # error or None
    def read(self, files: dict[str, Path]) -> Dataset: ...


def auto_data_dir() -> Path:
    """Where ``data_dir=None`` reads from first and downloads into: ``$APTS_DATA_DIR`` or ./data."""
    return Path(os.environ.get("APTS_DATA_DIR") or "data").expanduser()


def load_dataset(
    name: str,
    data_dir: str | os.PathLike | None = None,
    *,
    download: bool = True,
    mirrors: Sequence[str] | None = None,
    seed: int = 0,
) -> Dataset:
    """Load ``mnist``, ``fashion_mnist`` or ``cifar10`` into memory.

    Local files are looked for first (``data_dir``: see the module docstring); when absent
    and ``download`` is true they are fetched from ``mirrors`` (base URLs, tried first),
    ``$APTS_DATA_MIRROR`` (comma-separated base URLs), then ``registry.MIRRORS``, and
    checked against ``registry.MD5``. ``seed`` is unused (the files fix the samples): every
    dataset's ``_target_`` takes the run's seed, which the synthetic set is generated from.
    Raises :class:`DataError` when data is missing, unreadable, corrupt or unusable (an
    empty split, labels that do not match the images), or ``download`` is not a bool.
    """
    key = canonical_name(name)
    if not isinstance(download, bool):
        raise DataError(f"download={download!r} must be true or false (dataset.download)")
    if data_dir is not None and (not isinstance(data_dir, (str, os.PathLike)) or data_dir == ""):
        raise DataError(
            f"data_dir={data_dir!r} must be a folder, or null for the default "
            f"($APTS_DATA_DIR, else ./data, then a system copy) (dataset.data_dir)"
        )
    fmt: _Files = CifarFiles() if key == "cifar10" else IdxFiles(key)
    files = _locate(fmt, data_dir, download, mirror_list(key, mirrors))
    return fmt.read(files)


# The ``_target_`` of each dataset's config (configs/dataset/<name>.yaml), called with the
# config's options (augment and val_size aside) and the run's seed.
mnist = functools.partial(load_dataset, "mnist")
fashion_mnist = functools.partial(load_dataset, "fashion_mnist")
cifar10 = functools.partial(load_dataset, "cifar10")
synthetic = make_synthetic


def _first(fmt: _Files, dirs: list[Path]) -> dict[str, Path] | None:
    return next((f for f in map(fmt.find, dirs) if f is not None), None)


def _locate(
    fmt: _Files, data_dir: str | os.PathLike | None, download: bool, urls: list[str]
) -> dict[str, Path]:
    """The files of ``fmt``: found, unpacked or downloaded (see the module docstring)."""
    explicit = data_dir is not None
    root = Path(data_dir).expanduser() if explicit else auto_data_dir()
    system = [Path(d) for d in registry.SYSTEM_DIRS.get(fmt.key, [])]
    searched = fmt.candidates(root) + ([] if explicit else system)
    files = _first(fmt, searched)
    if files is None:
        fmt.unpack(root)
        files = _first(fmt, fmt.candidates(root))
    if files is not None:
        return files
    where = f"looked in {', '.join(map(str, searched))} for {fmt.wanted}"
    how, hint = fmt.manual_fix(root, urls), _system_hint(fmt, system)
    if not download:
        raise DataError(
            f"{fmt.pretty} not found: {where}; download is off: "
            f"set dataset.download=true, or {how}{hint}"
        )
    err = fmt.download(root, urls)
    files = None if err else _first(fmt, fmt.candidates(root))
    if files is None:
        raise DataError(
            f"{fmt.pretty} not found ({where}) and download failed "
            f"({err or 'the files are not where expected afterwards'}): {how}, "
            f"or set APTS_DATA_MIRROR=<base URL of a mirror>{hint}"
        )
    return files


def _system_hint(fmt: _Files, system: list[Path]) -> str:
    """Where a system copy would come from, or (for an explicit data_dir) that one exists."""
    installed = next((d for d in system if fmt.find(d) is not None), None)
    if installed is not None:  # only possible with an explicit data_dir: auto reads it
        return f"; a system copy is in {installed}: dataset.data_dir=null uses it"
    package = registry.SYSTEM_PACKAGES.get(fmt.key)
    return f" (or run: apt-get install {package})" if package else ""
