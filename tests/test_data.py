"""apts.data.dataset: sharding arithmetic, permutations, normalisation, augmentation,
synthetic data."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from apts.data.dataset import (
    augment,
    epoch_permutation,
    make_synthetic,
    minibatches,
    shard,
    to_float,
)
from apts.errors import OptionError

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
    assert [len(s) for s in shards] == expected


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


def test_overlap_authors_setting():
    # |B| = 10000, ω = 0.05, N = 2: 5000 own + ⌈0.05·10000/2⌉ = 250 (exactly, not 251)
    def sizes(n):
        return [len(shard(torch.arange(10000), i, n, 0.05)) for i in range(n)]

    assert sizes(2) == [5250, 5250]
    assert sizes(4) == [2625] * 4


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
    a = make_synthetic(seed=0, **kw)
    b = make_synthetic(seed=0, **kw)
    c = make_synthetic(seed=1, **kw)
    assert a.name == "synthetic" and a.shape == (1, 28, 28) and a.num_classes == 10
    assert a.train_x.shape == (600, 1, 28, 28) and a.test_x.shape == (200, 1, 28, 28)
    assert a.train_x.dtype == torch.uint8 and a.train_y.dtype == torch.int64
    for f in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(a, f), getattr(b, f))
    assert not torch.equal(a.train_x, c.train_x)
    assert a.mean == b.mean and 0 < a.mean[0] < 1 and a.std[0] > 0
    assert set(a.train_y.tolist()) == set(range(10))
    # the test set does not depend on n_train
    d = make_synthetic(seed=0, n_train=50, n_test=200)
    assert torch.equal(d.test_x, a.test_x)
    # classes differ: a nearest-class-mean classifier beats chance by far, but not perfectly
    xf = a.train_x.flatten(1).float()
    means = torch.stack([xf[a.train_y == k].mean(0) for k in range(10)])
    pred = torch.cdist(a.test_x.flatten(1).float(), means).argmin(1)
    acc = (pred == a.test_y).float().mean().item()
    assert 0.25 < acc < 1.0  # chance: 0.1


def test_synthetic_options():
    ds = make_synthetic(n_train=20, n_test=10, shape=(3, 32, 32), num_classes=4)
    assert ds.shape == (3, 32, 32) and ds.num_classes == 4 and len(ds.mean) == 3
    assert int(ds.train_y.max()) < 4
    noisy = make_synthetic(n_train=200, n_test=1, noise=0.6)
    clean = make_synthetic(n_train=200, n_test=1, noise=0.0)
    assert noisy.std[0] > clean.std[0]
    with pytest.raises(OptionError, match=r"^noise=-1 must be a number >= 0.0"):
        make_synthetic(noise=-1)
    for bad, rule in (([1, 28], "three positive ints"), ([1, 0, 28], "three positive ints")):
        with pytest.raises(OptionError, match=rule):
            make_synthetic(shape=bad)
