"""Bad input, class by class: one line on stderr, exit code 2, no rank started, nothing
left behind. The cases of each class are examples; every class is covered.

In-process checks go through :func:`apts.config.precheck.precheck` (what the CLI runs before
Hydra); one case per class also runs the real CLI.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path

import pytest
from clitools import SMALL, cli, error_lines, read_summary

from apts.config.precheck import precheck
from apts.config.validate import CONFIG_DIR, local_rank_limit
from apts.errors import ConfigError

CASES = {
    # non-booleans are not taken as true
    "bool": [
        (["progress=maybe"], "progress='maybe' must be true or false"),
        (["checkpoint=1"], "checkpoint=1 must be true or false"),
        (["dataset.augment=maybe"], "dataset.augment='maybe' must be true or false"),
        (["dataset=mnist", "dataset.download=maybe"], "dataset.download='maybe'"),
        (["optimizer=sgd", "optimizer.nesterov=maybe"], "optimizer.nesterov='maybe'"),
        (["optimizer=apts", "optimizer.foc=yes"], "optimizer.foc='yes' must be true"),
    ],
    # every key's value is checked
    "values": [
        (["dataset.name=imagenet"], "dataset.name='imagenet' is not valid"),
        (["model.name=vgg"], "model.name='vgg' is not valid"),
        (["launcher.timeout_s=-1"], "launcher.timeout_s=-1"),
        (["launcher.timeout_s=abc"], "launcher.timeout_s='abc'"),
        (["launcher.heartbeat_s=0"], "launcher.heartbeat_s=0"),
        (["optimizer.betas=[a,b]"], "optimizer.betas=['a', 'b'] must be a list of 2 numbers"),
        (["optimizer.betas=[0.9]"], "optimizer.betas=[0.9] must be a list of 2 numbers"),
        (["optimizer=apts", "optimizer.memory=1000000000"], "memory"),
        ([f"subdomains={10 * local_rank_limit()}", "batch_size=100000"], "processes on this"),
        (["seed=18446744073709551616"], "seed=18446744073709551616 is too large"),
        (["seed=-1"], "seed=-1 must be an integer >= 0"),
        (["optimizer=sgd", "optimizer.momentum=0", "optimizer.nesterov=true"], "Nesterov"),
        (["eval_batch_size=0"], "eval_batch_size=0"),
        (["max_loss=-1"], "max_loss=-1"),
        (["overlap=abc"], "overlap='abc'"),
        (["epochs=1.5"], "epochs=1.5 must be an integer"),
        (["dataset.shape=[1,28]"], "dataset.shape=[1, 28] must be three positive ints"),
        (["dataset.shape=7"], "dataset.shape=7 must be three positive ints"),
        (["resume=later"], "resume='later'"),
        (["dataset.val_size=-1"], "dataset.val_size=-1 must be a number of training samples"),
        (["dataset.val_size=1.5"], "dataset.val_size=1.5 must be"),
        (["dataset.val_size=abc"], "dataset.val_size='abc' must be"),
    ],
    # keys no config file declares
    "unknown keys": [
        (["+foo=1"], "unknown config key 'foo'"),
        (["foo=1"], "unknown config key 'foo'"),
        (["+dataset.colour=red"], "unknown config key 'dataset.colour'"),
        (["+model.width=3"], "unknown config key 'model.width'"),
        (["+launcher.port=1"], "unknown config key 'launcher.port'"),
        (
            ["optimizer=apts", "+optimizer.foo=1"],
            "optimizer.foo is not an option of optimizer=apts",
        ),
        (["optimizer=adamw"], "unknown optimizer 'adamw'"),
    ],
    # near misses get a "did you mean" (difflib); another choice's option says whose it is
    "suggestions": [
        (["epoch=2"], "unknown config key 'epoch' (did you mean 'epochs'?)"),
        (["+epoch=2"], "unknown config key 'epoch' (did you mean 'epochs'?)"),
        (["dataset.n_trian=5"], "(did you mean 'dataset.n_train' or 'dataset.n_test'?)"),
        (["optimizer=adamw"], "unknown optimizer 'adamw' (did you mean 'adam'?); choose one of"),
        (["dataset=fmnist"], "(did you mean 'mnist' or 'fashion_mnist'?)"),
        (
            ["optimizer=apts", "optimizer.lr=0.1"],
            "optimizer.lr is not an option of optimizer=apts (learning rate (APTS and TR have "
            "none: the trust radius sets the step)); it belongs to optimizer=adam, diloco, "
            "local_adam, local_sgd,",
        ),
        (
            ["optimizer=adam", "+optimizer.local_iters=3"],
            "optimizer.local_iters is not an option of optimizer=adam (it belongs to "
            "optimizer=apts)",
        ),
        (
            ["optimizer=apts", "+optimizer.local_iter=3"],
            "optimizer.local_iter is not an option of optimizer=apts (did you mean 'local_iters'",
        ),
        (
            ["dataset=mnist", "+dataset.n_train=5"],
            "dataset.n_train is not an option of dataset=mnist (training samples); it belongs "
            "to dataset=synthetic",
        ),
    ],
    # malformed overrides and interpolations
    "syntax": [
        (["epochs=[1,"], "cannot parse the command line"),
        (["=3"], "cannot parse the command line"),
        (["epochs=${nope}"], "nope"),
        (["optimizer.lr=${oops"], "cannot parse the command line"),
        (["optimizer=sgd,adam"], "is a sweep: add -m"),
        (["-m", "epochs=1,x"], "epochs='x' must be an integer"),
        (["-m", "epochs=interval(1,3)"], "only comma-separated sweeps"),
    ],
}


def _check(argv: list[str]) -> None:
    base = [] if any(a.startswith("dataset=") for a in argv) else ["dataset=synthetic"]
    precheck([*base, *argv], CONFIG_DIR)


@pytest.mark.parametrize(
    "argv,fragment",
    [case for cases in CASES.values() for case in cases],
    ids=[f"{cls}:{' '.join(a)}" for cls, cases in CASES.items() for a, _ in cases],
)
def test_every_bad_value_is_one_line(argv, fragment):
    with pytest.raises(ConfigError) as e:
        _check(argv)
    assert fragment in str(e.value)
    assert "\n" not in str(e.value)


def test_a_sweep_is_checked_job_by_job_before_any_job_runs():
    # the second job's value is bad: the whole sweep stops before the first job
    with pytest.raises(ConfigError, match="epochs=0"):
        _check(["-m", "epochs=2,0"])
    # a preset's own sweep (hydra.sweeper.params) is expanded too
    assert precheck(["-m", "experiment=quick_apts"], CONFIG_DIR) == 2


def _assert_one_line(r: subprocess.CompletedProcess, fragment: str) -> None:
    assert r.returncode == 2, r.stderr[-3000:]
    lines = error_lines(r.stderr)
    assert len(lines) == 1 and lines[0].startswith("apts-train: error:"), r.stderr[-3000:]
    assert fragment in lines[0]
    assert "Traceback" not in r.stdout + r.stderr


@pytest.mark.parametrize(
    "argv,fragment",
    [cases[0] for cases in CASES.values()],
    ids=list(CASES),
)
def test_the_cli_prints_one_line_and_starts_nothing(tmp_path, argv, fragment):
    r = cli("dataset=synthetic", *argv, f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    _assert_one_line(r, fragment)
    assert not (tmp_path / "run").exists()


def test_run_directory_that_is_a_file_or_under_one(tmp_path):
    (tmp_path / "afile").write_text("x")
    for where, fragment in [("afile", "is a file"), ("afile/run", "is a file, not a directory")]:
        r = cli(*SMALL, "epochs=1", f"hydra.run.dir={tmp_path / where}", cwd=tmp_path)
        _assert_one_line(r, fragment)
    assert (tmp_path / "afile").read_text() == "x"


@contextlib.contextmanager
def _tmpfs(path: Path, *options: str):
    """A small tmpfs at ``path`` (root only; skip where mounting is not allowed)."""
    path.mkdir()
    opts = ",".join(("size=256k", *options))
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root")
def test_a_read_only_filesystem_is_one_line(tmp_path):
    with _tmpfs(tmp_path / "ro", "ro"):
        r = cli(*SMALL, "epochs=1", f"hydra.run.dir={tmp_path}/ro/run", cwd=tmp_path)
        _assert_one_line(r, "not writable")


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root")
def test_a_full_disk_fails_the_run_in_one_line_with_no_temp_files(tmp_path):
    # config.yaml fits in 256 kB, the first checkpoint (~0.5 MB for the fcnn) does not
    with _tmpfs(tmp_path / "small") as small:
        run = small / "run"
        r = cli(*SMALL, "epochs=2", "subdomains=2", f"hydra.run.dir={run}", cwd=tmp_path)
        assert r.returncode == 1, r.stderr[-3000:]
        last = error_lines(r.stderr)[-1]
        assert "checkpoint.pt" in last and "No space left on device" in last, r.stderr[-3000:]
        assert "Traceback" not in r.stderr
        assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]
        assert read_summary(run)["status"] == "failed"
