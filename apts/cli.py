"""Command-line entry point ``apts-train`` (Hydra).

The flow: check the command line's group choices (so a typo fails in one line,
before Hydra prints its own multi-line error), compose the config with Hydra,
validate it, resolve it to a plain dict, and hand it to :mod:`apts.launch`,
which starts or joins the ranks. Nothing here knows about optimizers' maths.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from apts.launch import launch, torchrun_env
from apts.validate import ConfigError, validate

# configs/ sits beside the package in a source checkout (editable install) and
# inside it as apts/configs in a wheel.
_HERE = Path(__file__).resolve().parent
CONFIG_DIR = next(
    (p for p in (_HERE.parent / "configs", _HERE / "configs") if (p / "train.yaml").is_file()),
    _HERE / "configs",
)
GROUPS = ("dataset", "model", "optimizer", "launcher", "experiment")


def group_choices(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


def check_group_overrides(argv: list[str]) -> None:
    """Reject unknown choices of a config group (``optimizer=adamw``) in one line."""
    for arg in argv:
        key, sep, value = arg.partition("=")
        key = key.lstrip("+~")
        if not sep or key not in GROUPS or value in ("", "null"):
            continue
        # multirun sweeps: optimizer=sgd,adam (also choice(sgd,adam) is left to Hydra)
        if "(" in value:
            continue
        for choice in value.split(","):
            if choice not in group_choices(key):
                raise ConfigError(
                    f"unknown {key} '{choice}'; choose one of: {', '.join(group_choices(key))}"
                )


def _torchrun_overrides(argv: list[str]) -> list[str]:
    """Under torchrun every rank runs Hydra: give them one run dir, and let rank 0 alone
    write Hydra's files (DESIGN.md, pitfalls)."""
    env = torchrun_env()
    if env is None or any(a.startswith(("-m", "--multirun")) for a in argv):
        return []
    extra = []
    if not any(a.startswith("hydra.run.dir=") for a in argv):
        # torchrun gives every rank of one job the same run id; a timestamp could differ.
        run_id = os.environ.get("TORCHELASTIC_RUN_ID", "none")
        extra.append(
            f"hydra.run.dir=outputs/runs/torchrun-{run_id}"
            "_${dataset.name}_${model.name}_${optimizer.name}_N${subdomains}"
        )
    if env["rank"] != 0:
        extra.append("hydra.output_subdir=null")
    return extra


def _fail(msg: str, code: int = 2, run_dir: str | None = None) -> None:
    if run_dir is not None:
        _discard_run_dir(Path(run_dir))
    print(f"apts-train: error: {msg}", file=sys.stderr)
    sys.exit(code)


def _discard_run_dir(run_dir: Path) -> None:
    """A run that never started leaves no directory behind (Hydra creates it early)."""
    if run_dir.is_dir() and {p.name for p in run_dir.iterdir()} <= {".hydra"}:
        shutil.rmtree(run_dir)


@hydra.main(version_base=None, config_path=str(CONFIG_DIR), config_name="train")
def _hydra_main(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig

    run_dir = cfg.out_dir or HydraConfig.get().runtime.output_dir
    try:
        validate(cfg)
        resolved = OmegaConf.to_container(cfg, resolve=True)
    except ConfigError as e:
        _fail(str(e), run_dir=run_dir)
    result = launch(resolved, run_dir)
    if result.error is not None:
        _fail(result.error, result.exit_code, run_dir if result.exit_code == 2 else None)
    return result.final.get("val_acc") if result.final else None


def main() -> None:
    argv = sys.argv[1:]
    try:
        check_group_overrides(argv)
    except ConfigError as e:
        _fail(str(e))
    sys.argv = [sys.argv[0], *argv, *_torchrun_overrides(argv)]
    _hydra_main()


if __name__ == "__main__":
    main()
