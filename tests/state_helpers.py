"""Checkpoint helpers shared by the optimizer state tests (TrustRegion, APTS)."""

from __future__ import annotations

import copy
import io
import warnings
from typing import Any

import torch


def assert_plain(obj: Any, where: str = "state_dict", in_state: bool = False) -> None:
    """Only tensors and plain values (no live objects: picklable anywhere, loadable with
    ``torch.load(weights_only=True)``); no strings inside ``state`` (torch's loader turns a
    string there into the repr of a generator)."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            assert isinstance(k, int | str), f"{where}: key {k!r}"
            assert_plain(v, f"{where}[{k!r}]", in_state or k == "state")
    elif isinstance(obj, list | tuple):
        for i, v in enumerate(obj):
            assert_plain(v, f"{where}[{i}]", in_state)
    else:
        allowed = (torch.Tensor, bool, int, float, type(None)) + (() if in_state else (str,))
        assert isinstance(obj, allowed), f"{where}: {type(obj).__name__} {obj!r}"


def transport(state: dict, how: str) -> dict:
    """A copy of ``state`` as a checkpoint would bring it back."""
    if how == "deepcopy":
        return copy.deepcopy(state)
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf)  # weights_only=True: plain data only


def dcp_round_trip(model, opt, model2, opt2, path) -> None:
    """Save (model, opt) with torch.distributed.checkpoint in this process (no process group)
    and load it into the freshly built (model2, opt2), through DCP's optimizer helpers."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    with warnings.catch_warnings():  # "no process group: assuming a single process"
        warnings.simplefilter("ignore", UserWarning)
        model_sd, optim_sd = get_state_dict(model, opt)
        dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(path))
        model_sd, optim_sd = get_state_dict(model2, opt2)
        sd = {"model": model_sd, "optim": optim_sd}
        dcp.load(sd, checkpoint_id=str(path))
        set_state_dict(model2, opt2, model_state_dict=sd["model"], optim_state_dict=sd["optim"])
