"""Flat parameter vectors: the trust-region code works on one contiguous vector θ ∈ Rⁿ.

All parameters handled together must share one floating dtype and one device
(:func:`check_flat_params` says so with a ``ValueError`` otherwise). The order of the
flat vector is the order of the parameter list, each tensor flattened row-major, which is
the convention of :func:`torch.nn.utils.parameters_to_vector`.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

__all__ = [
    "check_flat_params",
    "flat_grad",
    "flat_params",
    "num_params",
    "set_flat_params_",
]


def num_params(params: Iterable[Tensor]) -> int:
    """Total number of scalars in ``params`` (the length n of the flat vector)."""
    return sum(p.numel() for p in params)


def check_flat_params(params: Iterable[Tensor]) -> tuple[torch.dtype, torch.device]:
    """Check that ``params`` can be flattened into one vector; return its dtype and device.

    Raises ``ValueError`` for an empty list, a non-floating parameter, or mixed
    dtypes/devices (one flat vector has one dtype and lives on one device).
    """
    params = list(params)
    if not params:
        raise ValueError("expected at least one parameter")
    dtype, device = params[0].dtype, params[0].device
    for p in params:
        if not p.is_floating_point():
            raise ValueError(f"parameters must be floating point, got {p.dtype}")
        if p.dtype != dtype or p.device != device:
            raise ValueError(
                "all parameters must share one dtype and device to form a flat vector, got "
                f"{dtype}/{device} and {p.dtype}/{p.device}"
            )
    return dtype, device


def flat_params(params: Iterable[Tensor]) -> Tensor:
    """A new detached 1-D tensor holding a copy of all parameters (θ)."""
    # reshape rather than view: a parameter may be non-contiguous (e.g. a transposed tie).
    return torch.cat([p.detach().reshape(-1) for p in params])


def set_flat_params_(params: Iterable[Tensor], vec: Tensor) -> None:
    """Write the flat vector ``vec`` into ``params`` in place, outside autograd.

    The copy is exact (bit for bit), so ``set_flat_params_(ps, flat_params(ps))`` restores
    a previous point exactly.
    """
    params = list(params)
    total = num_params(params)
    if vec.numel() != total:
        raise ValueError(f"flat vector has {vec.numel()} entries, parameters have {total}")
    offset = 0
    with torch.no_grad():
        for p in params:
            n = p.numel()
            p.copy_(vec[offset : offset + n].view_as(p))
            offset += n


def flat_grad(params: Iterable[Tensor], out: Tensor | None = None) -> Tensor:
    """The gradients of ``params`` as one 1-D tensor (zeros where ``.grad`` is None).

    With ``out`` (a 1-D tensor of the right length, e.g. a slice of a communication
    buffer) the gradient is written there and ``out`` is returned, saving one copy.
    """
    params = list(params)
    total = num_params(params)
    if out is None:
        p0 = params[0]
        out = torch.empty(total, dtype=p0.dtype, device=p0.device)
    elif out.numel() != total:
        raise ValueError(f"out has {out.numel()} entries, parameters have {total}")
    offset = 0
    with torch.no_grad():
        for p in params:
            n = p.numel()
            dst = out[offset : offset + n]
            if p.grad is None:
                dst.zero_()
            else:
                dst.copy_(p.grad.reshape(-1))
            offset += n
    return out
