"""Dataset files in the real formats, written into a test's tmp_path, and fixtures that
keep the readers away from the machine's own data (system copies, real mirrors)."""

from __future__ import annotations

import functools
import gzip
import hashlib
import pickle
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch

from apts.data import registry
from apts.data.dataset import Dataset

IDX_STEMS = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}


def idx_bytes(arr: np.ndarray) -> bytes:
    """The IDX encoding of a uint8 array: 0x0000, type 0x08, ndim, big-endian dims, data."""
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    head = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return head + arr.tobytes()


def write_idx(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = idx_bytes(arr)
    path.write_bytes(gzip.compress(raw) if path.name.endswith(".gz") else raw)
    return path


def fake_mnist(n_train=12, n_test=5, seed=0, h=28, w=28) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "train_x": rng.integers(0, 256, (n_train, h, w), dtype=np.uint8),
        "train_y": rng.integers(0, 10, n_train, dtype=np.uint8),
        "test_x": rng.integers(0, 256, (n_test, h, w), dtype=np.uint8),
        "test_y": rng.integers(0, 10, n_test, dtype=np.uint8),
    }


def write_mnist(directory: Path, arrays: dict[str, np.ndarray], gz: bool) -> dict[str, Path]:
    return {
        k: write_idx(directory / (IDX_STEMS[k] + (".gz" if gz else "")), arrays[k])
        for k in IDX_STEMS
    }


def assert_matches(ds: Dataset, arrays: dict[str, np.ndarray]) -> None:
    assert ds.train_x.dtype == torch.uint8 and ds.train_y.dtype == torch.int64
    assert ds.train_x.shape == (len(arrays["train_x"]), 1, 28, 28)
    np.testing.assert_array_equal(ds.train_x[:, 0].numpy(), arrays["train_x"])
    np.testing.assert_array_equal(ds.train_y.numpy(), arrays["train_y"])
    np.testing.assert_array_equal(ds.test_x[:, 0].numpy(), arrays["test_x"])
    np.testing.assert_array_equal(ds.test_y.numpy(), arrays["test_y"])
    x = arrays["train_x"].astype(np.float64) / 255
    assert ds.mean == pytest.approx((x.mean(),), abs=1e-12)
    assert ds.std == pytest.approx((x.std(),), abs=1e-12)
    assert ds.num_classes == 10 and ds.shape == (1, 28, 28)


def cifar_batch(n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {
        b"batch_label": b"fake",
        b"labels": [int(v) for v in rng.integers(0, 10, n)],
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"filenames": [b"f%d.png" % i for i in range(n)],
    }


def write_cifar(directory: Path, n: int = 3, n_test: int | None = None) -> dict[str, dict]:
    """Five training batches of ``n`` images and a test batch of ``n_test`` (``n + 1``)."""
    directory.mkdir(parents=True, exist_ok=True)
    batches = {f"data_batch_{i}": cifar_batch(n, i) for i in range(1, 6)}
    batches["test_batch"] = cifar_batch(n + 1 if n_test is None else n_test, 99)
    for name, d in batches.items():
        write_cifar_batch(directory / name, d)
    return batches


def write_cifar_batch(path: Path, batch: dict) -> None:
    path.write_bytes(pickle.dumps(batch, protocol=2))


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def no_system_dirs(monkeypatch):
    """Hide /usr/share/datasets so tests see only their tmp dirs."""
    monkeypatch.setattr(registry, "SYSTEM_DIRS", {})


@pytest.fixture
def auto_dir(tmp_path, monkeypatch) -> Path:
    """``$APTS_DATA_DIR`` (where data_dir=None looks first) set to an empty tmp folder."""
    path = tmp_path / "auto"
    monkeypatch.setenv("APTS_DATA_DIR", str(path))
    return path


@pytest.fixture
def offline(monkeypatch):
    """No real mirrors: only the ones a test passes."""
    monkeypatch.setattr(registry, "MIRRORS", {"mnist": [], "fashion_mnist": [], "cifar10": []})
    monkeypatch.delenv("APTS_DATA_MIRROR", raising=False)


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def http_dir(tmp_path):
    """(folder, base URL): a ThreadingHTTPServer on 127.0.0.1 serving the folder."""
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def serve_mnist(root: Path, arrays, monkeypatch, key="mnist") -> None:
    files = write_mnist(root, arrays, gz=True)
    monkeypatch.setitem(registry.MD5, key, {p.name: md5(p) for p in files.values()})
