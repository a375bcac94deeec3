"""What produced a run: software versions, the source checkout, the machine, the world.

Results differ between CPU kinds (vectorised kernels round differently), so a result is
only comparable with the machine it was measured on; :func:`provenance` is recorded in
summary.json and TensorBoard at the start of every run (rank 0).
"""

from __future__ import annotations

import platform
import socket
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

_SOURCE = Path(__file__).resolve().parents[2]  # the checkout, in an editable install


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def git_state(path: Path = _SOURCE) -> dict[str, Any] | None:
    """``{"commit", "dirty"}`` of the git checkout the package runs from (None when it is
    not one, e.g. an installed wheel, or git is missing). ``dirty``: tracked files differ
    from the commit."""
    if not (path / ".git").exists():
        return None
    try:
        run = dict(cwd=path, capture_output=True, text=True, timeout=10, check=True)
        commit = subprocess.run(["git", "rev-parse", "HEAD"], **run).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], **run)
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": bool(status.stdout.strip())}


def device_name(device: str) -> str:
    """The accelerator's name for ``cuda``, else the CPU model (/proc/cpuinfo)."""
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def provenance(*, device: str, world_size: int) -> dict[str, Any]:
    """The software, source and machine behind a run (summary.json's ``provenance``)."""
    return {
        "apts": _version("apts"),
        "git": git_state(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "hydra": _version("hydra-core"),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "device": device,
        "device_name": device_name(device),
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "world_size": world_size,
    }
