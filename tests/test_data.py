"""apts.data: readers on small files in the real formats, downloads from a local HTTP
server, sharding arithmetic, permutations, normalisation, augmentation, synthetic data."""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import math
import pickle
import tarfile
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch

from apts import data as D
from apts.data import (
    DataError,
    Dataset,
    augment,
    epoch_permutation,
    load_dataset,
    minibatches,
    shard,
    shard_sizes,
    to_float,
)

IDX_STEMS = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}


# ----------------------------------------------------------------------------- helpers


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


def write_cifar(directory: Path, n: int = 3) -> dict[str, dict]:
    directory.mkdir(parents=True, exist_ok=True)
    batches = {f"data_batch_{i}": cifar_batch(n, i) for i in range(1, 6)}
    batches["test_batch"] = cifar_batch(n + 1, 99)
    for name, d in batches.items():
        (directory / name).write_bytes(pickle.dumps(d, protocol=2))
    return batches


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def no_system_dirs(monkeypatch):
    """Hide /usr/share/datasets so tests see only their tmp dirs."""
    monkeypatch.setattr(D, "SYSTEM_DIRS", {})


@pytest.fixture
def offline(monkeypatch):
    """No real mirrors: only the ones a test passes."""
    monkeypatch.setattr(D, "MIRRORS", {"mnist": [], "fashion_mnist": [], "cifar10": []})
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
    monkeypatch.setitem(D.MD5, key, {p.name: md5(p) for p in files.values()})


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


def test_fashion_mnist_layouts(tmp_path, monkeypatch):
    arrays = fake_mnist(seed=2)
    write_mnist(tmp_path / "FashionMNIST" / "raw", arrays, gz=True)
    monkeypatch.setattr(D, "SYSTEM_DIRS", {})
    ds = load_dataset("fashion_mnist", tmp_path, download=False)
    assert ds.name == "fashion_mnist"
    assert_matches(ds, arrays)
    # Debian's layout: the four *-ubyte.gz files in one system folder, no data_dir needed
    system = tmp_path / "usr-share-datasets-fashion-mnist"
    write_mnist(system, arrays, gz=True)
    monkeypatch.setattr(D, "SYSTEM_DIRS", {"fashion_mnist": [str(system)]})
    assert_matches(load_dataset("fashion-mnist", None, download=False), arrays)
    assert_matches(load_dataset("fashion_mnist", tmp_path / "empty", download=False), arrays)


def test_raw_file_preferred_and_dotted_names(tmp_path, no_system_dirs):
    a, b = fake_mnist(seed=3), fake_mnist(seed=4)
    write_mnist(tmp_path, a, gz=False)
    write_mnist(tmp_path, b, gz=True)
    assert_matches(load_dataset("mnist", tmp_path, download=False), a)
    kaggle = tmp_path / "kaggle"
    for k, stem in IDX_STEMS.items():  # e.g. train-images.idx3-ubyte
        write_idx(kaggle / stem.replace("-idx", ".idx"), b[k])
    assert_matches(load_dataset("mnist", kaggle, download=False), b)


@pytest.mark.parametrize("gz", [True, False])
def test_truncated_idx_is_a_data_error_naming_the_file(tmp_path, gz, no_system_dirs):
    files = write_mnist(tmp_path, fake_mnist(), gz=gz)
    bad = files["test_x"]
    bad.write_bytes(bad.read_bytes()[:-7])
    with pytest.raises(DataError, match="truncated") as err:
        load_dataset("mnist", tmp_path, download=False)
    assert str(bad) in str(err.value) and "\n" not in str(err.value)


def test_idx_longer_than_header_is_rejected(tmp_path, no_system_dirs):
    files = write_mnist(tmp_path, fake_mnist(), gz=False)
    files["train_y"].write_bytes(files["train_y"].read_bytes() + b"\x00")
    with pytest.raises(DataError, match="longer than its header") as err:
        load_dataset("mnist", tmp_path, download=False)
    assert str(files["train_y"]) in str(err.value)


@pytest.mark.parametrize("magic", [b"\x00\x00\x08\x01", b"\x00\x00\x0d\x03", b"PK\x03\x04"])
def test_bad_magic_is_a_data_error_naming_the_file(tmp_path, magic, no_system_dirs):
    files = write_mnist(tmp_path, fake_mnist(), gz=False)
    bad = files["train_x"]
    bad.write_bytes(magic + bad.read_bytes()[4:])
    with pytest.raises(DataError, match="not an IDX file") as err:
        load_dataset("mnist", tmp_path, download=False)
    assert str(bad) in str(err.value)


def test_corrupt_gzip_and_mismatched_counts(tmp_path, no_system_dirs):
    files = write_mnist(tmp_path / "a", fake_mnist(), gz=True)
    files["train_x"].write_bytes(b"\x1f\x8b" + b"garbage" * 10)
    with pytest.raises(DataError, match="corrupt or truncated") as err:
        load_dataset("mnist", tmp_path / "a", download=False)
    assert str(files["train_x"]) in str(err.value)
    arrays = fake_mnist()
    arrays["test_y"] = arrays["test_y"][:-1]
    write_mnist(tmp_path / "b", arrays, gz=False)
    with pytest.raises(DataError, match="labels"):
        load_dataset("mnist", tmp_path / "b", download=False)


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


def test_cifar10_corrupt_pickle(tmp_path):
    write_cifar(tmp_path / "cifar-10-batches-py")
    bad = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    bad.write_bytes(bad.read_bytes()[:100])
    with pytest.raises(DataError) as err:
        load_dataset("cifar10", tmp_path, download=False)
    assert str(bad) in str(err.value) and "\n" not in str(err.value)


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
    monkeypatch.setitem(D.MD5["mnist"], "train-images-idx3-ubyte.gz", "0" * 32)
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
        D.MD5, "cifar10", {"cifar-10-python.tar.gz": md5(root / "cifar-10-python.tar.gz")}
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
    with pytest.raises(ValueError, match="mnist, fashion_mnist, cifar10, synthetic"):
        load_dataset("imagenet", "/nonexistent")
    with pytest.raises(ValueError, match="synthetic"):
        load_dataset("mnist", "/nonexistent", n_train=5)


# ---------------------------------------------------------- real Fashion-MNIST (Debian)

DEBIAN_FMNIST = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.skipif(
    not (DEBIAN_FMNIST / "train-images-idx3-ubyte.gz").is_file(),
    reason="apt-get install dataset-fashion-mnist to run",
)
def test_real_fashion_mnist_from_debian_package(tmp_path):
    ds = load_dataset("fashion_mnist", tmp_path, download=False)
    assert ds.train_x.shape == (60000, 1, 28, 28) and ds.test_x.shape == (10000, 1, 28, 28)
    assert ds.train_y.bincount().tolist() == [6000] * 10
    assert ds.test_y.bincount().tolist() == [1000] * 10
    assert ds.mean == pytest.approx((0.2860,), abs=1e-4)
    assert ds.std == pytest.approx((0.3530,), abs=1e-4)


# -------------------------------------------------------------- batching and sharding


def test_epoch_permutation_deterministic():
    p = epoch_permutation(1000, seed=3, epoch=0)
    assert p.dtype == torch.int64 and sorted(p.tolist()) == list(range(1000))
    assert torch.equal(p, epoch_permutation(1000, seed=3, epoch=0))
    assert not torch.equal(p, epoch_permutation(1000, seed=3, epoch=1))
    assert not torch.equal(p, epoch_permutation(1000, seed=4, epoch=0))
    # seeds from a tuple, not a sum: (0, 1) and (1, 0) differ
    assert not torch.equal(epoch_permutation(1000, 0, 1), epoch_permutation(1000, 1, 0))


def test_minibatches():
    perm = torch.arange(10)
    assert [b.tolist() for b in minibatches(perm, 4)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert [len(b) for b in minibatches(perm, 4, drop_last=True)] == [4, 4]
    assert [len(b) for b in minibatches(perm, 5, drop_last=True)] == [5, 5]
    assert minibatches(perm, 20, drop_last=True) == []
    with pytest.raises(ValueError):
        minibatches(perm, 0)


@pytest.mark.parametrize("b", [1, 7, 10, 100, 101])
@pytest.mark.parametrize("n", [1, 2, 3, 8])
def test_shards_partition_the_batch_without_overlap(b, n):
    batch = torch.randperm(1000, generator=torch.Generator().manual_seed(b))[:b]
    shards = [shard(batch, i, n) for i in range(n)]
    assert torch.equal(torch.cat(shards), batch)  # contiguous, in order, exact cover
    expected = [len(c) for c in np.array_split(np.arange(b), n)]
    assert [len(s) for s in shards] == expected == shard_sizes(b, n)


@pytest.mark.parametrize("omega", [0.05, 0.1, 0.3, 0.5, 0.99])
@pytest.mark.parametrize(("b", "n"), [(100, 2), (100, 3), (10000, 4), (7, 3), (10, 4), (3, 5)])
def test_overlap(b, n, omega):
    batch = torch.arange(1000, 1000 + b)
    chunks = np.array_split(np.arange(b), n)
    k = math.ceil(round(omega * b / n, 9))  # ⌈ω|B|/N⌉
    for i in range(n):
        s = shard(batch, i, n, overlap=omega)
        own = batch[chunks[i]]
        extra = s[len(own) :]
        assert torch.equal(s[: len(own)], own)
        assert len(extra) == min(k, b - len(own))
        assert len(set(s.tolist())) == len(s)  # no sample twice within a shard
        assert not set(extra.tolist()) & set(own.tolist())  # extras are from other shards
        # they are the samples that follow the chunk, cyclically
        end = chunks[i][-1] + 1 if len(chunks[i]) else sum(map(len, chunks[:i]))
        assert extra.tolist() == [1000 + (end + j) % b for j in range(len(extra))]
    assert shard_sizes(b, n, omega) == [len(shard(batch, i, n, omega)) for i in range(n)]


def test_overlap_authors_setting():
    # |B| = 10000, ω = 0.05, N = 2: 5000 own + ⌈0.05·10000/2⌉ = 250 (exactly, not 251)
    assert shard_sizes(10000, 2, 0.05) == [5250, 5250]
    assert shard_sizes(10000, 4, 0.05) == [2625] * 4


def test_shard_edge_cases():
    batch = torch.arange(10)
    assert torch.equal(shard(batch, 0, 1), batch)
    assert torch.equal(shard(batch, 0, 1, overlap=0.5), batch)  # N = 1: nothing to borrow
    for bad in (-0.1, 1.0, 1.5, float("nan")):
        with pytest.raises(ValueError, match="overlap"):
            shard(batch, 0, 2, overlap=bad)
    with pytest.raises(ValueError, match="rank"):
        shard(batch, 2, 2)
    with pytest.raises(ValueError, match="world_size"):
        shard(batch, 0, 0)
    assert shard(torch.arange(0), 0, 2, overlap=0.5).numel() == 0


# ------------------------------------------------------------------- device tensors


def test_to_float_normalises_per_channel():
    x = torch.randint(0, 256, (4, 3, 5, 6), dtype=torch.uint8)
    mean, std = (0.1, 0.5, 0.9), (0.2, 0.3, 0.4)
    out = to_float(x, mean, std)
    manual = torch.empty(4, 3, 5, 6)
    for c in range(3):
        manual[:, c] = (x[:, c].double() / 255 - mean[c]) / std[c]
    assert out.dtype == torch.float32 and out.shape == x.shape
    torch.testing.assert_close(out, manual)
    assert to_float(x, mean, std, device="cpu", dtype=torch.float64).dtype == torch.float64
    assert x.dtype == torch.uint8  # input untouched
    with pytest.raises(TypeError):
        to_float(x.float(), mean, std)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_augment_flip_only():
    x = torch.arange(64 * 2 * 3 * 4, dtype=torch.float32).view(64, 2, 3, 4)
    out = augment(x, _gen(), pad=0, flip=True)
    assert out.shape == x.shape
    flipped = [torch.equal(out[i], x[i].flip(-1)) for i in range(64)]
    same = [torch.equal(out[i], x[i]) for i in range(64)]
    assert all(f or s for f, s in zip(flipped, same, strict=True))
    assert 10 < sum(flipped) < 54  # both happen
    assert torch.equal(augment(x, _gen(), pad=0, flip=False), x)


def _shifted(img: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """img moved down by dy and right by dx, zero fill."""
    out = torch.zeros_like(img)
    h, w = img.shape[-2:]
    out[..., max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = img[
        ..., max(-dy, 0) : h - max(dy, 0), max(-dx, 0) : w - max(dx, 0)
    ]
    return out


def test_augment_crop_is_a_zero_filled_shift():
    pad = 2
    x = torch.randint(1, 256, (200, 3, 5, 7), dtype=torch.uint8)  # no zeros in the input
    out = augment(x, _gen(1), pad=pad, flip=False)
    assert out.shape == x.shape and out.dtype == torch.uint8
    seen = set()
    for i in range(len(x)):
        match = [
            (dy, dx)
            for dy in range(-pad, pad + 1)
            for dx in range(-pad, pad + 1)
            if torch.equal(out[i], _shifted(x[i], dy, dx))
        ]
        assert len(match) == 1
        seen.add(match[0])
    assert len(seen) == (2 * pad + 1) ** 2  # every offset occurs
    # crop + flip: each output is a shift of x or of its mirror image
    both = augment(x, _gen(2), pad=1, flip=True)
    for i in range(20):
        cands = [
            _shifted(v, dy, dx)
            for v in (x[i], x[i].flip(-1))
            for dy in (-1, 0, 1)
            for dx in (-1, 0, 1)
        ]
        assert any(torch.equal(both[i], c) for c in cands)


def test_augment_deterministic_given_generator():
    x = torch.rand(16, 3, 8, 8)
    assert torch.equal(augment(x, _gen(5)), augment(x, _gen(5)))
    assert not torch.equal(augment(x, _gen(5)), augment(x, _gen(6)))


# ------------------------------------------------------------------------ synthetic


def test_synthetic_deterministic_and_learnable_looking():
    kw = dict(n_train=600, n_test=200)
    a = load_dataset("synthetic", None, seed=0, **kw)
    b = load_dataset("synthetic", None, seed=0, **kw)
    c = load_dataset("synthetic", None, seed=1, **kw)
    assert a.name == "synthetic" and a.shape == (1, 28, 28) and a.num_classes == 10
    assert a.train_x.shape == (600, 1, 28, 28) and a.test_x.shape == (200, 1, 28, 28)
    assert a.train_x.dtype == torch.uint8 and a.train_y.dtype == torch.int64
    for f in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(a, f), getattr(b, f))
    assert not torch.equal(a.train_x, c.train_x)
    assert a.mean == b.mean and 0 < a.mean[0] < 1 and a.std[0] > 0
    assert set(a.train_y.tolist()) == set(range(10))
    # the test set does not depend on n_train
    d = load_dataset("synthetic", None, seed=0, n_train=50, n_test=200)
    assert torch.equal(d.test_x, a.test_x)
    # classes differ: a nearest-class-mean classifier beats chance by far, but not perfectly
    xf = a.train_x.flatten(1).float()
    means = torch.stack([xf[a.train_y == k].mean(0) for k in range(10)])
    pred = torch.cdist(a.test_x.flatten(1).float(), means).argmin(1)
    acc = (pred == a.test_y).float().mean().item()
    assert 0.25 < acc < 1.0  # chance: 0.1


def test_synthetic_options():
    ds = load_dataset("synthetic", None, n_train=20, n_test=10, shape=(3, 32, 32), num_classes=4)
    assert ds.shape == (3, 32, 32) and ds.num_classes == 4 and len(ds.mean) == 3
    assert int(ds.train_y.max()) < 4
    noisy = load_dataset("synthetic", None, n_train=200, n_test=1, noise=0.6)
    clean = load_dataset("synthetic", None, n_train=200, n_test=1, noise=0.0)
    assert noisy.std[0] > clean.std[0]
    with pytest.raises(ValueError):
        load_dataset("synthetic", None, noise=-1)
