"""apts.data.load: the IDX and CIFAR-10 readers on small files in the real formats, and
md5-verified downloads from a local HTTP server."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets_files import (
    IDX_STEMS,
    assert_matches,
    fake_mnist,
    md5,
    serve_mnist,
    write_cifar,
    write_idx,
    write_mnist,
)

from apts.data import registry
from apts.data.load import load_dataset
from apts.errors import DataError

# ------------------------------------------------------------------------ IDX readers


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_torchvision_layout(tmp_path, gz, no_system_dirs):
    arrays = fake_mnist()
    write_mnist(tmp_path / "MNIST" / "raw", arrays, gz=gz)
    ds = load_dataset("mnist", tmp_path, download=False)
    assert ds.name == "mnist"
    assert_matches(ds, arrays)


def test_idx_files_directly_in_data_dir(tmp_path, no_system_dirs):
    arrays = fake_mnist(seed=1)
    write_mnist(tmp_path, arrays, gz=True)
    assert_matches(load_dataset("mnist", str(tmp_path), download=False), arrays)


def test_fashion_mnist_layouts(tmp_path, monkeypatch, auto_dir):
    arrays = fake_mnist(seed=2)
    write_mnist(tmp_path / "FashionMNIST" / "raw", arrays, gz=True)
    monkeypatch.setattr(registry, "SYSTEM_DIRS", {})
    ds = load_dataset("fashion_mnist", tmp_path, download=False)
    assert ds.name == "fashion_mnist"
    assert_matches(ds, arrays)
    # Debian's layout: the four *-ubyte.gz files in one system folder, found with data_dir=None
    system = tmp_path / "usr-share-datasets-fashion-mnist"
    write_mnist(system, arrays, gz=True)
    monkeypatch.setattr(registry, "SYSTEM_DIRS", {"fashion_mnist": [str(system)]})
    assert_matches(load_dataset("fashion-mnist", None, download=False), arrays)
    assert_matches(load_dataset("fashion_mnist", download=False), arrays)


def test_raw_file_preferred_and_dotted_names(tmp_path, no_system_dirs):
    a, b = fake_mnist(seed=3), fake_mnist(seed=4)
    write_mnist(tmp_path, a, gz=False)
    write_mnist(tmp_path, b, gz=True)
    assert_matches(load_dataset("mnist", tmp_path, download=False), a)
    kaggle = tmp_path / "kaggle"
    for k, stem in IDX_STEMS.items():  # e.g. train-images.idx3-ubyte
        write_idx(kaggle / stem.replace("-idx", ".idx"), b[k])
    assert_matches(load_dataset("mnist", kaggle, download=False), b)


def test_missing_data_without_download_is_one_actionable_line(tmp_path, no_system_dirs):
    write_idx(tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte.gz", fake_mnist()["train_x"])
    with pytest.raises(DataError) as err:
        load_dataset("mnist", tmp_path, download=False)
    msg = str(err.value)
    assert "\n" not in msg
    assert str(tmp_path / "MNIST" / "raw") in msg
    assert "t10k-labels-idx1-ubyte" in msg and "dataset.data_dir" in msg
    assert "download" in msg
    with pytest.raises(DataError, match="cifar-10-batches-py") as err:
        load_dataset("cifar10", tmp_path, download=False)
    assert "\n" not in str(err.value) and str(tmp_path) in str(err.value)


# --------------------------------------------------------------------------- CIFAR-10


def test_cifar10_pickles_read_back_exactly(tmp_path):
    batches = write_cifar(tmp_path / "cifar-10-batches-py")
    ds = load_dataset("cifar10", tmp_path, download=False)
    assert ds.shape == (3, 32, 32) and ds.num_classes == 10 and ds.name == "cifar10"
    train = np.concatenate([batches[f"data_batch_{i}"][b"data"] for i in range(1, 6)])
    np.testing.assert_array_equal(ds.train_x.numpy(), train.reshape(-1, 3, 32, 32))
    labels = sum((batches[f"data_batch_{i}"][b"labels"] for i in range(1, 6)), [])
    assert ds.train_y.tolist() == labels and ds.train_y.dtype == torch.int64
    np.testing.assert_array_equal(
        ds.test_x.numpy(), batches["test_batch"][b"data"].reshape(-1, 3, 32, 32)
    )
    assert ds.test_y.tolist() == batches["test_batch"][b"labels"]
    # channel c of a CIFAR row is the c-th block of 1024 bytes (R, G, B planes)
    planes = train.reshape(-1, 3, 1024).astype(np.float64) / 255
    assert ds.mean == pytest.approx(tuple(planes.mean(axis=(0, 2))), abs=1e-12)
    assert ds.std == pytest.approx(tuple(planes.std(axis=(0, 2))), abs=1e-12)


# -------------------------------------------------------------------------- downloads


def test_download_from_local_server(tmp_path, http_dir, monkeypatch, offline, no_system_dirs):
    root, url = http_dir
    arrays = fake_mnist(seed=5)
    serve_mnist(root, arrays, monkeypatch)
    data_dir = tmp_path / "data"
    ds = load_dataset("mnist", data_dir, download=True, mirrors=[url])
    assert_matches(ds, arrays)
    raw = data_dir / "MNIST" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == sorted(s + ".gz" for s in IDX_STEMS.values())
    # a second load reads the local files (the server is not needed)
    assert_matches(
        load_dataset("mnist", data_dir, download=True, mirrors=["http://0.0.0.0:9/"]), arrays
    )


def test_download_via_env_mirror_after_failing_one(
    tmp_path, http_dir, monkeypatch, offline, no_system_dirs
):
    root, url = http_dir
    arrays = fake_mnist(seed=6)
    serve_mnist(root, arrays, monkeypatch, key="fashion_mnist")
    monkeypatch.setenv("APTS_DATA_MIRROR", url.rstrip("/"))  # slash is optional
    dead = url + "nothing-here/"  # answers 404
    ds = load_dataset("fashion_mnist", tmp_path, mirrors=[dead])
    assert_matches(ds, arrays)
    assert (tmp_path / "FashionMNIST" / "raw" / "t10k-images-idx3-ubyte.gz").is_file()


def test_md5_mismatch_leaves_nothing_behind(
    tmp_path, http_dir, monkeypatch, offline, no_system_dirs
):
    root, url = http_dir
    serve_mnist(root, fake_mnist(), monkeypatch)
    monkeypatch.setitem(registry.MD5["mnist"], "train-images-idx3-ubyte.gz", "0" * 32)
    data_dir = tmp_path / "data"
    with pytest.raises(DataError, match="md5") as err:
        load_dataset("mnist", data_dir, mirrors=[url])
    msg = str(err.value)
    assert "\n" not in msg and "train-images-idx3-ubyte.gz" in msg
    assert list((data_dir / "MNIST" / "raw").iterdir()) == []


def test_failed_download_is_one_line(tmp_path, http_dir, offline, no_system_dirs):
    _, url = http_dir  # serves an empty folder: 404 for every file
    with pytest.raises(DataError, match="download failed") as err:
        load_dataset("mnist", tmp_path, mirrors=[url])
    msg = str(err.value)
    assert "\n" not in msg and "404" in msg and str(tmp_path / "MNIST" / "raw") in msg
    assert [p for p in (tmp_path / "MNIST" / "raw").iterdir()] == []


def test_cifar10_download_and_extract(tmp_path, http_dir, monkeypatch, offline):
    root, url = http_dir
    batches = write_cifar(tmp_path / "src" / "cifar-10-batches-py", n=2)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        tf.add(tmp_path / "src" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    (root / "cifar-10-python.tar.gz").write_bytes(buf.getvalue())
    monkeypatch.setitem(
        registry.MD5, "cifar10", {"cifar-10-python.tar.gz": md5(root / "cifar-10-python.tar.gz")}
    )
    data_dir = tmp_path / "data"
    ds = load_dataset("cifar10", data_dir, mirrors=[url])
    assert ds.train_x.shape == (10, 3, 32, 32) and ds.test_x.shape == (3, 3, 32, 32)
    assert ds.test_y.tolist() == batches["test_batch"][b"labels"]
    assert sorted(p.name for p in data_dir.iterdir()) == [
        "cifar-10-batches-py",
        "cifar-10-python.tar.gz",
    ]


def test_dataset_names():
    with pytest.raises(ValueError, match="valid names: mnist, fashion_mnist, cifar10$"):
        load_dataset("imagenet", "/nonexistent")


# ---------------------------------------------------------- real Fashion-MNIST (Debian)

DEBIAN_FMNIST = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.skipif(
    not (DEBIAN_FMNIST / "train-images-idx3-ubyte.gz").is_file(),
    reason="apt-get install dataset-fashion-mnist to run",
)
def test_real_fashion_mnist_from_debian_package(auto_dir):
    ds = load_dataset("fashion_mnist", download=False)  # auto: the system copy
    # provenance: the four files as they are on disk
    assert [e["path"] for e in ds.source] == [
        str(DEBIAN_FMNIST / f"{stem}.gz") for stem in IDX_STEMS.values()
    ]
    assert [e["md5"] for e in ds.source] == [md5(Path(e["path"])) for e in ds.source]
    assert ds.train_x.shape == (60000, 1, 28, 28) and ds.test_x.shape == (10000, 1, 28, 28)
    assert ds.train_y.bincount().tolist() == [6000] * 10
    assert ds.test_y.bincount().tolist() == [1000] * 10
    assert ds.mean == pytest.approx((0.2860,), abs=1e-4)
    assert ds.std == pytest.approx((0.3530,), abs=1e-4)
