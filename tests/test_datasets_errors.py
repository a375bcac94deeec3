"""Bad data ends in one line that names the file and the fix, at load time: unreadable
files, corrupt files, well-formed files with unusable content; where the data comes from
(data_dir=None vs an explicit folder, the system copy); provenance; strict arguments.

Each class of failure is a table of cases; every case writes real files (IDX, CIFAR-10
pickles, tar.gz) into tmp_path and breaks one thing.
"""

from __future__ import annotations

import builtins
import errno
import gzip
import io
import os
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from datasets_files import (
    IDX_STEMS,
    assert_matches,
    cifar_batch,
    fake_mnist,
    md5,
    serve_mnist,
    write_cifar,
    write_cifar_batch,
    write_mnist,
)

from apts.data import files, registry
from apts.data.dataset import make_synthetic
from apts.data.load import load_dataset
from apts.errors import DataError, OptionError

CIFAR_DIR = "cifar-10-batches-py"

# A case builds a broken data folder in tmp_path and returns
# (dataset name, data_dir, the file(s) the message must name).
Case = Callable[[Path, pytest.MonkeyPatch], tuple[str, Path, list[Path]]]


def load_error(name: str, data_dir, **kw) -> str:
    """The message of the DataError that loading raises; it must be one line."""
    with pytest.raises(DataError) as err:
        load_dataset(name, data_dir, download=False, **kw)
    msg = str(err.value)
    assert "\n" not in msg and msg == msg.strip()
    return msg


def idx_case(gz: bool, breaker: Callable[[dict[str, Path]], Path | list[Path]], **arrays):
    """A case: fake MNIST files (``arrays`` replaced), then ``breaker(files)`` -> culprit(s)."""

    def build(tmp_path: Path, monkeypatch) -> tuple[str, Path, list[Path]]:
        data = {**fake_mnist(), **arrays}
        paths = write_mnist(tmp_path / "d", data, gz=gz)
        culprit = breaker(paths)
        return "mnist", tmp_path / "d", culprit if isinstance(culprit, list) else [culprit]

    return build


def cifar_case(breaker: Callable[[Path], Path | list[Path]], n: int = 3, n_test=None):
    def build(tmp_path: Path, monkeypatch) -> tuple[str, Path, list[Path]]:
        write_cifar(tmp_path / "d" / CIFAR_DIR, n=n, n_test=n_test)
        culprit = breaker(tmp_path / "d" / CIFAR_DIR)
        return "cifar10", tmp_path / "d", culprit if isinstance(culprit, list) else [culprit]

    return build


def replace_with_dir(path: Path) -> Path:
    path.unlink()
    path.mkdir()
    return path


def cut(path: Path, n: int) -> Path:
    path.write_bytes(path.read_bytes()[:-n])
    return path


# ------------------------------------------------------------------- unreadable files


def _deny(monkeypatch, culprit: Path) -> None:
    """Opening ``culprit`` fails as with mode 000 for a non-root user (tests run as root,
    where chmod stops nothing)."""

    def fake_open(path, *args, **kwargs):
        if Path(path) == culprit:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return builtins.open(path, *args, **kwargs)

    monkeypatch.setattr(files, "open", fake_open, raising=False)


def denied_idx(tmp_path, monkeypatch):
    name, root, [culprit] = idx_case(True, lambda f: f["test_y"])(tmp_path, monkeypatch)
    _deny(monkeypatch, culprit)
    return name, root, [culprit]


def denied_cifar(tmp_path, monkeypatch):
    name, root, [culprit] = cifar_case(lambda d: d / "test_batch")(tmp_path, monkeypatch)
    _deny(monkeypatch, culprit)
    return name, root, [culprit]


def tar_is_a_dir(tmp_path, monkeypatch):
    (tmp_path / "d" / "cifar-10-python.tar.gz").mkdir(parents=True)
    return "cifar10", tmp_path / "d", [tmp_path / "d" / "cifar-10-python.tar.gz"]


UNREADABLE: dict[str, Case] = {
    "idx-gz-is-a-folder": idx_case(True, lambda f: replace_with_dir(f["train_y"])),
    "idx-raw-is-a-folder": idx_case(False, lambda f: replace_with_dir(f["test_x"])),
    "idx-permission-denied": denied_idx,
    "cifar-batch-is-a-folder": cifar_case(lambda d: replace_with_dir(d / "data_batch_3")),
    "cifar-permission-denied": denied_cifar,
    "cifar-archive-is-a-folder": tar_is_a_dir,
}


@pytest.mark.parametrize("case", UNREADABLE.values(), ids=UNREADABLE.keys())
def test_unreadable_file_says_cannot_read(tmp_path, monkeypatch, no_system_dirs, case):
    name, data_dir, culprits = case(tmp_path, monkeypatch)
    msg = load_error(name, data_dir)
    assert msg.startswith(f"cannot read {culprits[0]}")
    assert "corrupt" not in msg and "truncated" not in msg
    assert ("Permission denied" in msg) or ("Is a directory" in msg)


# ---------------------------------------------------------------------- corrupt files


def garbage_tar(tmp_path, monkeypatch):
    tar = tmp_path / "d" / "cifar-10-python.tar.gz"
    tar.parent.mkdir(parents=True)
    tar.write_bytes(b"\x1f\x8b\x08" + b"not a tar" * 20)
    return "cifar10", tmp_path / "d", [tar]


def truncated_tar(tmp_path, monkeypatch):
    write_cifar(tmp_path / "src" / CIFAR_DIR)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        tf.add(tmp_path / "src" / CIFAR_DIR, arcname=CIFAR_DIR)
    tar = tmp_path / "d" / "cifar-10-python.tar.gz"
    tar.parent.mkdir(parents=True)
    tar.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    return "cifar10", tmp_path / "d", [tar]


def _set_magic(magic: bytes) -> Callable[[dict[str, Path]], Path]:
    def breaker(f: dict[str, Path]) -> Path:
        f["train_x"].write_bytes(magic + f["train_x"].read_bytes()[4:])
        return f["train_x"]

    return breaker


def _garbage_gzip(f: dict[str, Path]) -> Path:
    f["train_x"].write_bytes(b"\x1f\x8b" + b"garbage" * 10)
    return f["train_x"]


def _append_byte(f: dict[str, Path]) -> Path:
    f["train_y"].write_bytes(f["train_y"].read_bytes() + b"\x00")
    return f["train_y"]


CORRUPT: dict[str, tuple[Case, str]] = {
    "idx-gz-truncated": (idx_case(True, lambda f: cut(f["test_x"], 7)), "truncated"),
    "idx-raw-truncated": (idx_case(False, lambda f: cut(f["test_x"], 7)), "truncated"),
    "idx-longer-than-header": (idx_case(False, _append_byte), "longer than its header"),
    "idx-wrong-ndim": (idx_case(False, _set_magic(b"\x00\x00\x08\x01")), "not an IDX file"),
    "idx-wrong-type": (idx_case(False, _set_magic(b"\x00\x00\x0d\x03")), "not an IDX file"),
    "idx-zip-magic": (idx_case(False, _set_magic(b"PK\x03\x04")), "not an IDX file"),
    "idx-garbage-gzip": (idx_case(True, _garbage_gzip), "corrupt or truncated"),
    "cifar-truncated-pickle": (
        cifar_case(lambda d: cut(d / "data_batch_3", 100)),
        "corrupt or truncated",
    ),
    "cifar-garbage-archive": (garbage_tar, "corrupt or truncated"),
    "cifar-truncated-archive": (truncated_tar, "corrupt or truncated"),
}


@pytest.mark.parametrize("case,fragment", CORRUPT.values(), ids=CORRUPT.keys())
def test_corrupt_file_is_named(tmp_path, monkeypatch, no_system_dirs, case, fragment):
    name, data_dir, culprits = case(tmp_path, monkeypatch)
    msg = load_error(name, data_dir)
    assert fragment in msg and str(culprits[0]) in msg
    assert not msg.startswith("cannot read")
    assert "download again" in msg or "extract" in msg  # the fix


# ------------------------------------------------------- well-formed but unusable data


def _both(*keys: str) -> Callable[[dict[str, Path]], list[Path]]:
    return lambda f: [f[k] for k in keys]


def _cifar_batch_with(labels=None, n=3, data=None) -> Callable[[Path], Path]:
    """Overwrite data_batch_2 with ``n`` images whose labels/data are replaced."""

    def breaker(d: Path) -> Path:
        batch = cifar_batch(n, 7)
        if labels is not None:
            batch[b"labels"] = labels
        if data is not None:
            batch[b"data"] = data
        write_cifar_batch(d / "data_batch_2", batch)
        return d / "data_batch_2"

    return breaker


def _empty_cifar_train(d: Path) -> Path:
    for i in range(1, 6):
        write_cifar_batch(d / f"data_batch_{i}", cifar_batch(0, i))
    return d / "data_batch_1..5"


N0 = np.zeros(0, dtype=np.uint8)
DEGENERATE: dict[str, tuple[Case, str]] = {
    "idx-empty-train": (
        idx_case(True, _both("train_x"), train_x=np.zeros((0, 28, 28)), train_y=N0),
        "the training split is empty",
    ),
    "idx-empty-test": (
        idx_case(False, _both("test_x"), test_x=np.zeros((0, 28, 28)), test_y=N0),
        "the test split is empty",
    ),
    "idx-zero-size-images": (
        idx_case(True, _both("train_x"), train_x=np.zeros((12, 0, 28))),
        "no image data",
    ),
    "idx-shapes-differ": (
        idx_case(True, _both("train_x", "test_x"), test_x=np.zeros((5, 14, 14))),
        "1x28x28 images but",
    ),
    "idx-train-labels-short": (
        idx_case(True, _both("train_x", "train_y"), train_y=np.zeros(11)),
        "has 12 images but",
    ),
    "idx-test-labels-long": (
        idx_case(False, _both("test_x", "test_y"), test_y=np.zeros(6)),
        "has 6 labels",
    ),
    "idx-train-label-10": (
        idx_case(True, _both("train_y"), train_y=np.full(12, 10)),
        "label 10, expected 0..9",
    ),
    "idx-test-label-255": (
        idx_case(False, _both("test_y"), test_y=np.full(5, 255)),
        "label 255, expected 0..9",
    ),
    "cifar-empty-test-batch": (
        cifar_case(lambda d: d / "test_batch", n_test=0),
        "the test split is empty",
    ),
    "cifar-empty-train-batches": (cifar_case(_empty_cifar_train), "the training split is empty"),
    "cifar-label-10": (cifar_case(_cifar_batch_with(labels=[1, 10, 2])), "label 10"),
    "cifar-label-negative": (cifar_case(_cifar_batch_with(labels=[1, -1, 2])), "label -1"),
    "cifar-labels-short": (cifar_case(_cifar_batch_with(labels=[1, 2])), "and 2 labels"),
    "cifar-wrong-row-size": (
        cifar_case(_cifar_batch_with(data=np.zeros((3, 1024), np.uint8))),
        "expected [N, 3072]",
    ),
}


@pytest.mark.parametrize("case,fragment", DEGENERATE.values(), ids=DEGENERATE.keys())
def test_unusable_data_is_caught_at_load_time(
    tmp_path, monkeypatch, no_system_dirs, case, fragment
):
    name, data_dir, culprits = case(tmp_path, monkeypatch)
    msg = load_error(name, data_dir)
    assert fragment in msg
    for path in culprits:
        assert str(path) in msg


# ----------------------------------------- where the data comes from: auto vs explicit


@pytest.fixture
def system_copy(tmp_path, monkeypatch) -> tuple[Path, dict]:
    """A stand-in for /usr/share/datasets/fashion-mnist holding fake Fashion-MNIST."""
    system = tmp_path / "system"
    arrays = fake_mnist(seed=11)
    write_mnist(system, arrays, gz=True)
    monkeypatch.setattr(registry, "SYSTEM_DIRS", {"fashion_mnist": [str(system)]})
    return system, arrays


def source_dirs(ds) -> set[str]:
    return {os.path.dirname(e["path"]) for e in ds.source}


def test_auto_reads_apts_data_dir_before_the_system_copy(auto_dir, system_copy):
    system, system_arrays = system_copy
    ds = load_dataset("fashion_mnist", None, download=False)
    assert_matches(ds, system_arrays)
    assert source_dirs(ds) == {str(system)}
    own = fake_mnist(seed=12)
    write_mnist(auto_dir / "FashionMNIST" / "raw", own, gz=False)
    ds = load_dataset("fashion_mnist", None, download=False)
    assert_matches(ds, own)
    assert source_dirs(ds) == {str(auto_dir / "FashionMNIST" / "raw")}


def test_auto_without_env_reads_dot_data(tmp_path, monkeypatch, system_copy):
    monkeypatch.delenv("APTS_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    own = fake_mnist(seed=13)
    write_mnist(tmp_path / "data", own, gz=True)
    ds = load_dataset("fashion_mnist", download=False)
    assert_matches(ds, own)
    assert source_dirs(ds) == {str(tmp_path / "data")}  # absolute, though ./data is relative


@pytest.mark.parametrize("download", [False, True])
def test_explicit_data_dir_is_used_alone(tmp_path, system_copy, offline, http_dir, download):
    system, _ = system_copy
    _, url = http_dir  # serves nothing: every download fails with 404
    mine = tmp_path / "mine"
    with pytest.raises(DataError) as err:
        load_dataset("fashion_mnist", mine, download=download, mirrors=[url])
    msg = str(err.value)
    assert "\n" not in msg and str(mine / "FashionMNIST" / "raw") in msg
    assert f"a system copy is in {system}: dataset.data_dir=null uses it" in msg
    if download:
        assert "download failed" in msg and "404" in msg
    else:
        assert "download is off" in msg


def test_explicit_data_dir_downloads_into_itself_not_the_system_copy(
    tmp_path, system_copy, offline, http_dir, monkeypatch
):
    served, url = http_dir
    arrays = fake_mnist(seed=14)
    serve_mnist(served, arrays, monkeypatch, key="fashion_mnist")
    mine = tmp_path / "mine"
    ds = load_dataset("fashion_mnist", mine, download=True, mirrors=[url])
    assert_matches(ds, arrays)
    assert source_dirs(ds) == {str(mine / "FashionMNIST" / "raw")}


def test_auto_downloads_into_apts_data_dir(
    auto_dir, no_system_dirs, offline, http_dir, monkeypatch
):
    served, url = http_dir
    arrays = fake_mnist(seed=15)
    serve_mnist(served, arrays, monkeypatch)
    ds = load_dataset("mnist", None, download=True, mirrors=[url])
    assert_matches(ds, arrays)
    assert source_dirs(ds) == {str(auto_dir / "MNIST" / "raw")}


def test_missing_without_system_copy_suggests_the_package(tmp_path, auto_dir, no_system_dirs):
    msg = load_error("fashion_mnist", None)
    assert str(auto_dir / "FashionMNIST" / "raw") in msg
    assert "apt-get install dataset-fashion-mnist" in msg and "system copy" not in msg
    assert "apt-get" not in load_error("mnist", tmp_path)


# ------------------------------------------------------------------------- provenance


def test_source_lists_every_file_read_with_its_md5(tmp_path, no_system_dirs, monkeypatch):
    # > 1 MiB (the read chunk), raw and gz mixed: the md5 is of the bytes on disk
    paths = write_mnist(tmp_path / "d", fake_mnist(n_train=1500), gz=False)
    for k in ("train_y", "test_x"):
        raw = paths[k]
        paths[k] = raw.with_name(raw.name + ".gz")
        paths[k].write_bytes(gzip.compress(raw.read_bytes()))
        raw.unlink()
    assert paths["train_x"].stat().st_size > files._CHUNK
    monkeypatch.chdir(tmp_path)
    ds = load_dataset("mnist", "d", download=False)  # relative: recorded as absolute
    assert ds.source == [{"path": str(paths[k]), "md5": md5(paths[k])} for k in IDX_STEMS]

    batches = tmp_path / "c" / CIFAR_DIR
    write_cifar(batches)
    ds = load_dataset("cifar10", tmp_path / "c", download=False)
    names = [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]
    assert ds.source == [{"path": str(batches / n), "md5": md5(batches / n)} for n in names]


def test_synthetic_source_is_its_parameters():
    ds = make_synthetic(seed=3, n_train=20, n_test=7, shape=(2, 9, 8))
    assert ds.source == [
        {
            "generator": "apts.data.dataset.make_synthetic",
            "seed": 3,
            "n_train": 20,
            "n_test": 7,
            "shape": [2, 9, 8],
            "num_classes": 10,
            "noise": 0.3,
        }
    ]
    for key in ("n_train", "n_test"):
        with pytest.raises(OptionError, match=rf"^{key}=0 must be an integer >= 1"):
            make_synthetic(**{key: 0})


# -------------------------------------------------------------------- strict arguments


@pytest.mark.parametrize("value", ["maybe", "true", 1, 0, None])
@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_download_must_be_a_bool(tmp_path, name, value):
    with pytest.raises(DataError, match=rf"download={value!r} must be true or false"):
        load_dataset(name, tmp_path, download=value)


@pytest.mark.parametrize("value", ["", 5, ["data"]])
def test_data_dir_must_be_a_folder_or_none(value):
    with pytest.raises(DataError, match="data_dir=.* must be a folder, or null"):
        load_dataset("mnist", value)


# ------------------------------------------------------------------- from the CLI


def test_cli_prints_one_line_and_exits_2(tmp_path):
    """Before this check the run trained a whole epoch, then divided by the 0 test samples."""
    arrays = {**fake_mnist(), "test_x": np.zeros((0, 28, 28)), "test_y": N0}
    write_mnist(tmp_path / "data", arrays, gz=True)
    args = ["dataset=mnist", f"dataset.data_dir={tmp_path / 'data'}", "epochs=1", "progress=false"]
    r = subprocess.run(
        [sys.executable, "-m", "apts.cli", *args, f"hydra.run.dir={tmp_path}/run"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert lines[0].startswith("apts-train: error: ")
    assert "the test split is empty" in lines[0] and str(tmp_path / "data") in lines[0]
    assert "Traceback" not in r.stdout + r.stderr
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
