"""Micro-batches: a rank's shard evaluated in chunks of ``micro_batch`` samples.

The chunks' losses and gradients sum to the shard's exact mean: chunk j of size n_j out of
n contributes ``(n_j / n) · mean-loss_j`` (its backward accumulates into ``.grad`` in the
parameters' dtype, float32 or better; the loss is summed in float64). In exact arithmetic
this is the one-shot loss and gradient; in floating point it differs in the last bits. A
shard no larger than one chunk takes the one-shot path unchanged, bit for bit.

What it bounds and what it saves: the activations kept for backward grow with the chunk,
not with the shard (ResNet-18's over 5000 CIFAR images are tens of GB), and on a CPU a
cache-sized chunk is cheaper per sample than one pass over thousands of images (the cnn on
2 AVX2 cores: 590-600 µs per sample in chunks of 64-128, 727 in chunks of 190, 1297 in
one pass over 10000; see docs/results.md, Benchmarks).

``micro_batch: auto`` measures the model's forward activations per sample (the outputs of
its leaf modules on two samples, in eval mode and without gradients: no random numbers
drawn, no BatchNorm statistics changed) and picks the chunk whose activations fill
:data:`CPU_BUDGET` on a CPU, or :data:`GPU_FRACTION` of the GPU's total memory (the
saved activations and their gradients, counted as three times the forward outputs). The
choice depends only on the model, the sample shape and the device kind, so a resumed run
takes the same chunks as the uninterrupted one.

BatchNorm: in training mode each chunk normalises with its own statistics and updates
the running statistics once per chunk, as under gradient accumulation; with one chunk
this is the one-shot pass.

Data-parallel baselines (DDP): every chunk but the last runs under ``no_sync()``, so the
gradients are reduced once per step, as without chunks.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F

CPU_BUDGET = 32 * 2**20  # bytes of forward activations per chunk on a CPU
GPU_FRACTION = 0.25  # of the GPU's total memory, for a chunk's activations and gradients
MIN_AUTO = 32  # the smallest chunk auto picks (BatchNorm needs a few samples)
MAX_AUTO = 65536


def activation_bytes(model: torch.nn.Module, shape, device) -> int:
    """Bytes of the outputs of ``model``'s leaf modules per sample, from a forward pass on
    two zero samples (eval mode, no gradients: nothing changes, nothing is drawn)."""
    total = [0]

    def hook(_module, _inputs, out) -> None:
        if isinstance(out, torch.Tensor):
            total[0] += out.numel() * out.element_size()

    leaves = [m for m in model.modules() if not any(True for _ in m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(2, *shape, device=device))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return max(1, total[0] // 2)


def resolve(value, model: torch.nn.Module, shape, device: torch.device) -> int | None:
    """The chunk size for ``micro_batch=value``: a number as given, ``None`` for one chunk,
    ``"auto"`` from the model's activations and the device (see the module's text)."""
    if value != "auto":
        return None if value is None else int(value)
    per_sample = activation_bytes(model, shape, device)
    if device.type == "cuda":
        budget = GPU_FRACTION * torch.cuda.get_device_properties(device).total_memory / 3
    else:
        budget = CPU_BUDGET
    return int(min(MAX_AUTO, max(MIN_AUTO, math.floor(budget / per_sample))))


def forward_backward(
    net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, chunk: int | None
) -> torch.Tensor:
    """Mean cross-entropy of ``net`` on (x, y), its gradient accumulated into ``.grad``;
    in chunks of ``chunk`` samples (see the module's text). Returns the loss, detached."""
    n = len(y)
    if chunk is None or chunk >= n:
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        return loss.detach()
    no_sync = getattr(net, "no_sync", contextlib.nullcontext)
    total = torch.zeros((), dtype=torch.float64, device=x.device)
    for start in range(0, n, chunk):
        last = start + chunk >= n
        with contextlib.nullcontext() if last else no_sync():
            yb = y[start : start + chunk]
            loss = F.cross_entropy(net(x[start : start + chunk]), yb) * (len(yb) / n)
            loss.backward()
        total += loss.detach().double()
    return total.to(loss.dtype)
