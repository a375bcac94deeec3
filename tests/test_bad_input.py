"""Bad input, class by class: one line on stderr, exit code 2, no rank started, nothing
left behind. The cases of each class are examples; every class is covered.

In-process checks go through :func:`apts.config.precheck.precheck` (what the CLI runs before
Hydra); one case per class also runs the real CLI.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from clitools import SMALL, cli, error_lines, read_summary, tmpfs

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
        (
            ["dataset.name=imagenet"],
            "dataset.name='imagenet' must be 'cifar10', 'fashion_mnist', 'mnist' or 'synthetic'",
        ),
        (["model.name=vgg"], "model.name='vgg' must be 'cnn', 'fcnn' or 'resnet18'"),
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
        (["eval_batch_size=0"], "eval_batch_size=0 must be auto or an integer >= 1"),
        (["micro_batch=0"], "micro_batch=0 must be auto or an integer >= 1"),
        (["micro_batch=some"], "micro_batch='some' must be auto or an integer >= 1"),
        (["micro_batch=true"], "micro_batch=True must be auto or an integer >= 1"),
        (["max_loss=-1"], "max_loss=-1"),
        (["overlap=abc"], "overlap='abc'"),
        (["epochs=1.5"], "epochs=1.5 must be an integer"),
        (["dataset.shape=[1,28]"], "dataset.shape=[1, 28] must be a list of 3 numbers"),
        (["dataset.shape=7"], "dataset.shape=7 must be a list of 3 numbers"),
        (["resume=later"], "resume='later'"),
        (["dataset.val_size=-1"], "dataset.val_size=-1 must be a number of training samples"),
        (["dataset.val_size=1.5"], "dataset.val_size=1.5 must be"),
        (["dataset.val_size=abc"], "dataset.val_size='abc' must be"),
    ],
    # keys no config file declares
    "unknown keys": [
        (["+foo=1"], "unknown config key 'foo'"),
        (["foo=1"], "unknown config key 'foo'"),
        (["launcher.port.number=1"], "unknown config key 'launcher.port.number'"),  # nested
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
            "dataset.n_train is not an option of dataset=mnist (training samples, the validation "
            "split included (10000 are left to train on)); it belongs to dataset=synthetic",
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
    # numbers torch takes but nothing can train with
    "non-finite": [
        (["optimizer=sgd", "optimizer.lr=nan"], "optimizer.lr=nan must be a finite number"),
        (["optimizer=sgd", "optimizer.lr=inf"], "optimizer.lr=inf must be a finite number"),
        (["optimizer=sgd", "optimizer.momentum=nan"], "optimizer.momentum=nan"),
        (["optimizer=sgd", "optimizer.weight_decay=inf"], "optimizer.weight_decay=inf"),
        (["optimizer=sgd", "+optimizer.dampening=nan"], "optimizer.dampening=nan"),
        (["optimizer=adam", "optimizer.lr=-inf"], "optimizer.lr=-inf"),
        (["optimizer=adam", "optimizer.weight_decay=nan"], "optimizer.weight_decay=nan"),
        (["optimizer=adam", "optimizer.betas=[nan,0.999]"], "optimizer.betas=[nan, 0.999]"),
        (["optimizer=local_adam", "optimizer.lr=nan"], "optimizer.lr=nan"),
    ],
}


# the environment of a process that is not started by torchrun/SLURM, or badly
ENVIRONMENTS = [
    ({"WORLD_SIZE": "two", "RANK": "0"}, "WORLD_SIZE='two'"),
    ({"WORLD_SIZE": "2", "RANK": "first"}, "RANK='first'"),
    ({"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "x"}, "LOCAL_RANK='x'"),
    ({"WORLD_SIZE": "2", "RANK": "5"}, "RANK='5'"),
    ({"WORLD_SIZE": "2", "RANK": "0"}, "MASTER_ADDR"),  # a stale RANK in a shell
    ({"OMP_NUM_THREADS": ""}, "OMP_NUM_THREADS=''"),
    ({"OMP_NUM_THREADS": "abc"}, "OMP_NUM_THREADS='abc'"),
    ({"OMP_NUM_THREADS": "0"}, "OMP_NUM_THREADS='0'"),
]
WORLD_VARS = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "OMP_NUM_THREADS")


@pytest.mark.parametrize(
    "env,fragment",
    ENVIRONMENTS,
    ids=[" ".join(f"{k}={v}" for k, v in e.items()) for e, _ in ENVIRONMENTS],
)
def test_a_bad_environment_is_one_line(monkeypatch, env, fragment):
    for key in WORLD_VARS:
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError) as e:
        _check(["subdomains=2"])
    assert fragment in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_a_bad_environment_in_the_cli_is_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in WORLD_VARS}
    r = subprocess.run(
        [sys.executable, "-m", "apts.cli", *SMALL, f"hydra.run.dir={tmp_path}/run"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**env, "WORLD_SIZE": "two", "RANK": "0"},
        timeout=300,
    )
    _assert_one_line(r, "WORLD_SIZE='two'")
    assert not (tmp_path / "run").exists()


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


# what is only found when the data is read: checked before the run directory is claimed
@pytest.mark.parametrize(
    "argv,fragment",
    [
        (["dataset.n_train=1"], "training samples"),
        (["dataset.n_train=0"], "dataset.n_train=0 must be an integer >= 1"),  # the generator's
        ([f"hydra.run.dir=/tmp/{'x' * 300}/run"], "File name too long"),
    ],
    ids=["one-training-sample", "no-training-sample", "path-too-long"],
)
def test_a_run_that_cannot_start_leaves_no_folder(tmp_path, argv, fragment):
    run = tmp_path / "run"
    r = cli(*SMALL, "subdomains=2", f"hydra.run.dir={run}", *argv, cwd=tmp_path)
    _assert_one_line(r, fragment)
    assert not run.exists()


def test_run_directory_that_is_a_file_or_under_one(tmp_path):
    (tmp_path / "afile").write_text("x")
    for where, fragment in [("afile", "is a file"), ("afile/run", "is a file, not a directory")]:
        r = cli(*SMALL, "epochs=1", f"hydra.run.dir={tmp_path / where}", cwd=tmp_path)
        _assert_one_line(r, fragment)
    assert (tmp_path / "afile").read_text() == "x"


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root")
def test_a_read_only_filesystem_is_one_line(tmp_path):
    with tmpfs(tmp_path / "ro", "ro"):
        r = cli(*SMALL, "epochs=1", f"hydra.run.dir={tmp_path}/ro/run", cwd=tmp_path)
        _assert_one_line(r, "not writable")


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root")
def test_a_full_disk_fails_the_run_in_one_line_with_no_temp_files(tmp_path):
    # config.yaml fits in 256 kB, the first checkpoint (~0.5 MB for the fcnn) does not
    with tmpfs(tmp_path / "small") as small:
        run = small / "run"
        r = cli(*SMALL, "epochs=2", "subdomains=2", f"hydra.run.dir={run}", cwd=tmp_path)
        assert r.returncode == 1, r.stderr[-3000:]
        last = error_lines(r.stderr)[-1]
        assert "checkpoint.pt" in last and "No space left on device" in last, r.stderr[-3000:]
        assert "Traceback" not in r.stderr
        assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]
        assert read_summary(run)["status"] == "failed"


# the other commands: one line and exit code 2 for every option that cannot work
def _one_line_exit_2(capsys, run) -> str:
    try:
        code = run()
    except SystemExit as e:
        code = e.code
    assert code == 2
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["--target", "-5"], "--target"),
        (["--target", "0"], "--target"),
        (["--target", "100.5"], "--target"),
        (["--title", ""], "--title"),
        (["--out", "{file}"], "is a file"),
        (["--out", "{file}/report"], "is a file"),
    ],
    ids=[
        "target-negative",
        "target-zero",
        "target-above-100",
        "empty-title",
        "out-file",
        "out-under-file",
    ],
)
def test_apts_report_options_are_checked(tmp_path, capsys, args, fragment):
    from apts.report.cli import main

    (tmp_path / "afile").write_text("x")
    args = [a.replace("{file}", str(tmp_path / "afile")) for a in args]
    line = _one_line_exit_2(capsys, lambda: main([str(tmp_path), *args]))
    assert line.startswith("apts-report: error:") and fragment in line, line


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["--presets", "no_such_preset"], "no_such_preset"),
        (["--presets", "smoke", "--out", "{file}"], "is a file"),
        (["--presets", "smoke", "--out", "{file}/x"], "is a file"),
    ],
    ids=["unknown-preset", "out-file", "out-under-file"],
)
def test_reproduce_options_are_checked(tmp_path, capsys, args, fragment):
    from apts.experiments.reproduce import main

    (tmp_path / "afile").write_text("x")
    args = [a.replace("{file}", str(tmp_path / "afile")) for a in args]
    line = _one_line_exit_2(capsys, lambda: main(args))
    assert line.startswith("reproduce: error:") and fragment in line, line
    assert not (tmp_path / "afile").is_dir()
