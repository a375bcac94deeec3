"""Start N ranks on this machine, or join a world that torchrun/SLURM started.

- ``subdomains=1`` and no torchrun world: train in this process, no process group.
- ``subdomains=N`` and no torchrun world: spawn N processes with
  ``torch.multiprocessing`` on 127.0.0.1. They meet through a file in a private
  temporary directory (``file://`` rendezvous), so parallel multirun jobs never
  collide: there is no port to pick (probing for a free one and closing it leaves a
  window for another job) and gloo binds its own ephemeral ports.
  The dataset is loaded once here, before any rank starts (a missing file is one
  line and no rank), and shared with the ranks through shared memory. If one rank
  fails, the others are terminated, not left waiting.
- torchrun (``WORLD_SIZE`` and ``RANK`` set): this process is one rank; it joins
  with ``env://`` and ``subdomains`` must equal ``WORLD_SIZE``.

gloo serves CPU runs and NCCL CUDA runs (one GPU per rank, ``LOCAL_RANK``).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from apts.data import Dataset
from apts.datasets import DataError, load_dataset
from apts.validate import ConfigError

EXIT_CONFIG = 2


@dataclass
class LaunchResult:
    exit_code: int = 0
    error: str | None = None
    final: dict[str, Any] = field(default_factory=dict)


def torchrun_env() -> dict[str, int] | None:
    """World coordinates when this process was started by torchrun/SLURM (env://)."""
    if "WORLD_SIZE" not in os.environ or "RANK" not in os.environ:
        return None
    return {
        "world_size": int(os.environ["WORLD_SIZE"]),
        "rank": int(os.environ["RANK"]),
        "local_rank": int(os.environ.get("LOCAL_RANK", 0)),
    }


@contextmanager
def rendezvous_file() -> Iterator[str]:
    """A ``file://`` rendezvous address private to one job, removed afterwards."""
    d = tempfile.mkdtemp(prefix="apts-rdzv-")
    try:
        yield f"file://{d}/store"
    finally:
        shutil.rmtree(d, ignore_errors=True)


def init_rank(backend: str, init_method: str, rank: int, world: int, timeout_s: float) -> None:
    """Initialise the default process group of one rank."""
    dist.init_process_group(
        backend,
        init_method=init_method,
        rank=rank,
        world_size=world,
        timeout=timedelta(seconds=timeout_s),
    )


def resolve_device(cfg: dict) -> str:
    if cfg["device"] == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return cfg["device"]


def load_data(cfg: dict, download: bool | None = None) -> Dataset:
    d = cfg["dataset"]
    extra = {}
    if d["name"] == "synthetic":
        extra = {k: d[k] for k in ("n_train", "n_test", "num_classes")}
        extra["shape"] = tuple(d["shape"])
    return load_dataset(
        d["name"],
        d["data_dir"],
        download=d.get("download", True) if download is None else download,
        seed=cfg["seed"],
        **extra,
    )


def check_data_fits(cfg: dict, ds: Dataset) -> None:
    n = len(ds.train_y)
    if cfg["batch_size"] > n:
        raise ConfigError(
            f"batch_size={cfg['batch_size']} exceeds the {n} training samples of "
            f"{cfg['dataset']['name']}; use batch_size<={n}"
        )


def _run_rank(cfg: dict, run_dir: str, ds: Dataset | None, rank: int, world: int) -> dict:
    from apts.train import train

    return train(cfg, run_dir, ds, rank=rank, world_size=world)


def _spawned_rank(local_rank: int, cfg: dict, run_dir: str, ds: Dataset, rdzv: str) -> None:
    world = cfg["subdomains"]
    device = resolve_device(cfg)
    if device == "cuda":
        torch.cuda.set_device(local_rank)
    backend = "nccl" if device == "cuda" else "gloo"
    init_rank(backend, rdzv, local_rank, world, cfg["launcher"]["timeout_s"])
    try:
        _run_rank(cfg, run_dir, ds, local_rank, world)
    except (DataError, ConfigError) as e:
        print(f"apts-train: error: {e}", file=sys.stderr)
        sys.exit(EXIT_CONFIG)
    finally:
        dist.destroy_process_group()


def _set_loopback_iface(host: str) -> None:
    # gloo resolves the hostname to pick an interface; on machines without a network
    # that fails. For a loopback master, use the loopback device.
    if host.startswith("127.") and Path("/sys/class/net/lo").exists():
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")


def _spawn(cfg: dict, run_dir: str, ds: Dataset) -> LaunchResult:
    world = cfg["subdomains"]
    host = cfg["launcher"]["master_addr"] or "127.0.0.1"
    _set_loopback_iface(host)
    try:
        with rendezvous_file() as rdzv:
            mp.start_processes(
                _spawned_rank,
                args=(cfg, run_dir, ds, rdzv),
                nprocs=world,
                join=True,
                start_method="spawn",
            )
    except mp.ProcessExitedException as e:
        if e.exit_code == EXIT_CONFIG:
            return LaunchResult(EXIT_CONFIG, "a rank rejected the run (message above)")
        return LaunchResult(1, f"rank {e.error_index} died with exit code {e.exit_code}")
    except mp.ProcessRaisedException as e:
        last = str(e).strip().splitlines()[-1]
        log = Path(run_dir) / "error.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(str(e))
        return LaunchResult(1, f"rank {e.error_index} failed: {last} (traceback in {log})")
    return LaunchResult(final=_read_final(run_dir))


def _read_final(run_dir: str) -> dict:
    import json

    p = Path(run_dir) / "metrics.jsonl"
    if not p.exists():
        return {}
    lines = p.read_text().strip().splitlines()
    return json.loads(lines[-1]) if lines else {}


def launch(cfg: dict, run_dir: str) -> LaunchResult:
    """Run one training job described by the resolved config ``cfg``."""
    env = torchrun_env()
    if env is not None:
        return _join_world(cfg, run_dir, env)
    try:
        ds = load_data(cfg)
        check_data_fits(cfg, ds)
    except (DataError, ConfigError) as e:
        return LaunchResult(EXIT_CONFIG, str(e))
    if resolve_device(cfg) == "cuda" and cfg["subdomains"] > torch.cuda.device_count():
        return LaunchResult(
            EXIT_CONFIG,
            f"subdomains={cfg['subdomains']} needs one GPU per rank but "
            f"{torch.cuda.device_count()} are visible; use fewer subdomains, device=cpu, "
            "or torchrun across several machines",
        )
    if cfg["subdomains"] == 1:
        try:
            final = _run_rank(cfg, run_dir, ds, 0, 1)
        except (DataError, ConfigError) as e:
            return LaunchResult(EXIT_CONFIG, str(e))
        return LaunchResult(final=final)
    return _spawn(cfg, run_dir, ds)


def _join_world(cfg: dict, run_dir: str, env: dict[str, int]) -> LaunchResult:
    if env["world_size"] != cfg["subdomains"]:
        return LaunchResult(
            EXIT_CONFIG,
            f"subdomains={cfg['subdomains']} but torchrun started WORLD_SIZE={env['world_size']} "
            f"processes; pass subdomains={env['world_size']} or change --nproc-per-node/--nnodes",
        )
    device = resolve_device(cfg)
    if device == "cuda":
        torch.cuda.set_device(env["local_rank"])
    else:
        _set_loopback_iface(os.environ.get("MASTER_ADDR", ""))
    dist.init_process_group(
        "nccl" if device == "cuda" else "gloo",
        timeout=timedelta(seconds=cfg["launcher"]["timeout_s"]),
    )
    from apts.comm import Comm

    try:
        # one download per machine: local rank 0 fetches, the others wait and read
        if env["local_rank"] == 0:
            ds = load_data(cfg)
        Comm().barrier()
        if env["local_rank"] != 0:
            ds = load_data(cfg, download=False)
        check_data_fits(cfg, ds)
        final = _run_rank(cfg, run_dir, ds, env["rank"], env["world_size"])
    except (DataError, ConfigError) as e:
        return LaunchResult(EXIT_CONFIG, str(e))
    except Exception:
        traceback.print_exc()
        return LaunchResult(1, f"rank {env['rank']} failed (traceback above)")
    finally:
        dist.destroy_process_group()
    return LaunchResult(final=final)
