"""Faults a long run meets, class by class (issue 19): each table holds the class, its
rows are examples of it. Every case drives the real CLI and its spawned ranks.

- a failure in any rank at any stage leaves summary.json (``failed``, the reason) and an
  error.log with the real traceback of the first failing rank;
- a completed run's status and final figures are never overwritten by what comes later;
- signals and faults outside the training loop end the run in one line with a status;
- resumed runs equal uninterrupted ones; a clean run prints no warning.

The failures are injected through ``optimizer._target_=faulty.FaultyAdam`` (tests/faulty.py),
the way any optimizer reaches the runner.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
from pathlib import Path

import pytest
import torch
from clitools import (
    SMALL,
    alive,
    cli,
    epochs_logged,
    error_lines,
    read_metrics,
    read_summary,
    spawned_ranks,
    start_cli,
    stop,
    tmpfs,
    wait_for,
    without_timings,
)

pytestmark = pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")

TESTS = Path(__file__).resolve().parent
slow = pytest.mark.slow
# 1200 samples in mini-batches of 400: three steps per epoch
BASE = [*SMALL, "batch_size=400", "optimizer=adam"]
FAULTY = "optimizer._target_=faulty.FaultyAdam"


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """PYTHONPATH for the faulty optimizer, a private TMPDIR for the rendezvous folders."""
    tmp = tmp_path / "tmp"
    tmp.mkdir(exist_ok=True)
    return {"PYTHONPATH": str(TESTS), "TMPDIR": str(tmp), **extra}


def _faulty(fail_at: str, rank: int = 0, step: int = 1) -> list[str]:
    return [
        FAULTY,
        f"+optimizer.fail_at={fail_at}",
        f"+optimizer.fail_rank={rank}",
        f"+optimizer.fail_step={step}",
    ]


def _leftover_job_dirs(env: dict[str, str]) -> list[Path]:
    return [p for p in Path(env["TMPDIR"]).iterdir() if p.name.startswith("apts-job-")]


def _snapshot(run: Path) -> dict[str, str]:
    """Every file of a run directory and its md5 (what 'left untouched' means)."""
    return {
        str(p.relative_to(run)): hashlib.md5(p.read_bytes()).hexdigest()
        for p in sorted(run.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


def _assert_failed_with_traceback(r, run: Path, stage: str, rank: int | None) -> None:
    """Exit 1, one last line naming the rank and the cause, summary.json ``failed`` with
    that reason, error.log with the traceback of the failing rank (not ``NoneType: None``)."""
    assert r.returncode == 1, r.stderr[-3000:]
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    last = error_lines(r.stderr)[-1]
    assert last.startswith("apts-train: error:"), r.stderr[-3000:]
    assert f"injected failure in {stage}" in last and "error.log" in last, last
    if rank is not None:
        assert f"rank {rank}" in last, last
    summary = read_summary(run)
    assert summary["status"] == "failed", summary
    assert f"injected failure in {stage}" in summary["reason"], summary
    log = (run / "error.log").read_text()
    assert "Traceback (most recent call last)" in log, log
    assert f"InjectedFailure: injected failure in {stage}" in log, log
    assert "faulty.py" in log and "NoneType: None" not in log, log


# ------------------------------------------------------------------ 2. errors are kept

# (subdomains, failing stage(s), failing rank, failing step, resumed): construction runs
# before the run's logger starts, a step inside the loop, state_dict in the checkpoint's
# gather, load_state_dict in a resume's restore
RANK_FAILURES = [
    pytest.param(2, "init", 1, 1, False, id="construction-rank1of2"),
    pytest.param(2, "init", 0, 1, False, id="construction-rank0of2", marks=slow),
    pytest.param(2, "step", 1, 1, False, id="first-step-rank1of2", marks=slow),
    pytest.param(2, "step", 0, 5, False, id="epoch2-step-rank0of2", marks=slow),
    pytest.param(2, "state_dict", 1, 1, False, id="checkpoint-rank1of2", marks=slow),
    pytest.param(1, "step", 0, 2, False, id="second-step-one-rank", marks=slow),
    pytest.param(1, "state_dict", 0, 1, False, id="checkpoint-one-rank", marks=slow),
    pytest.param(2, "load_state_dict", 1, 4, True, id="restore-rank1of2"),
    pytest.param(1, "load_state_dict", 0, 4, True, id="restore-one-rank", marks=slow),
]


@pytest.mark.parametrize("n,stage,rank,step,resumed", RANK_FAILURES)
def test_a_failure_in_any_rank_at_any_stage_keeps_its_traceback(
    tmp_path, n, stage, rank, step, resumed
):
    env = _env(tmp_path)
    run = tmp_path / "run"
    # a resumed case first fails at `step` (epoch 2, after epoch 1's checkpoint), then
    # fails again in the restore of its resume
    fail_at = f"step+{stage}" if resumed else stage
    args = [*BASE, f"subdomains={n}", "epochs=3", *_faulty(fail_at, rank, step)]
    r = cli(*args, f"hydra.run.dir={run}", cwd=tmp_path, env=env)
    if resumed:
        _assert_failed_with_traceback(r, run, "step", rank if n > 1 else None)
        r = cli(f"resume={run}", cwd=tmp_path, env=env)
    _assert_failed_with_traceback(r, run, stage, rank if n > 1 else None)
    assert _leftover_job_dirs(env) == []


@slow
def test_a_sweep_records_each_failed_job_in_its_folder(tmp_path):
    env = _env(tmp_path)
    sweep = tmp_path / "sweep"
    args = ["-m", *BASE, "subdomains=2", "epochs=1", *_faulty("init", 1), "seed=0,1"]
    r = cli(*args, f"hydra.sweep.dir={sweep}", cwd=tmp_path, env=env)
    assert r.returncode == 1, r.stderr[-3000:]
    assert "2 jobs did not complete" in error_lines(r.stderr)[-1]
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert len(jobs) == 2
    for job in jobs:
        assert read_summary(job)["status"] == "failed"
        log = (job / "error.log").read_text()
        assert "InjectedFailure: injected failure in init" in log, log


# ---------------------------------------------------- 3. a finished result is kept


def _two_epochs(where: Path, epochs: int, code: int) -> Path:
    """A 2-rank run whose 7th step (epoch 3's first) fails; two epochs checkpointed."""
    run = where / "run"
    args = [*BASE, "subdomains=2", f"epochs={epochs}", *_faulty("step", 0, 7)]
    r = cli(*args, f"hydra.run.dir={run}", cwd=where, env=_env(where))
    assert r.returncode == code, r.stderr[-3000:]
    assert read_summary(run)["epoch"] == 2
    return run


@pytest.fixture(scope="module")
def completed_run(tmp_path_factory):
    """A 2-rank run that completed 2 epochs; its third epoch's first step would fail."""
    return _two_epochs(tmp_path_factory.mktemp("completed"), 2, 0)


def _truncate(ckpt: Path) -> None:
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])


def _garbage(ckpt: Path) -> None:
    ckpt.write_bytes(b"not a checkpoint")


def _other_rank_count(ckpt: Path) -> None:
    c = torch.load(ckpt, weights_only=True)
    c["world_size"], c["ranks"] = 1, c["ranks"][:1]
    torch.save(c, ckpt)


def _nothing(ckpt: Path) -> None:
    pass


# (how the checkpoint is spoilt, the resume's extra arguments, exit code, fragment of the
# last line): a resume that cannot work is refused before anything is written (2); an
# extension that fails in a rank reports it (1) and leaves the completed record as it was
KEEP_COMPLETED = [
    pytest.param(_truncate, ["epochs=3"], 2, "checkpoint.pt", id="truncated-checkpoint"),
    pytest.param(_garbage, ["epochs=3"], 2, "checkpoint.pt", id="not-a-checkpoint", marks=slow),
    pytest.param(
        _other_rank_count, ["epochs=3"], 2, "checkpoint.pt", id="other-rank-count", marks=slow
    ),
    pytest.param(_nothing, ["epochs=3"], 1, "injected failure in step", id="failed-extension"),
]


@pytest.mark.parametrize("spoil,extra,code,fragment", KEEP_COMPLETED)
def test_a_completed_run_is_never_overwritten(
    completed_run, tmp_path, spoil, extra, code, fragment
):
    run = tmp_path / "run"
    subprocess.run(["cp", "-a", str(completed_run), str(run)], check=True)
    spoil(run / "checkpoint.pt")
    before = _snapshot(run)
    summary = read_summary(run)
    r = cli(f"resume={run}", *extra, cwd=tmp_path, env=_env(tmp_path))
    assert r.returncode == code, r.stderr[-3000:]
    last = error_lines(r.stderr)[-1]
    assert last.startswith("apts-train: error:") and fragment in last, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    assert read_summary(run) == summary  # status and final figures as they were
    if code == 2:  # refused: nothing written, no folder claimed
        assert _snapshot(run) == before
        assert len(error_lines(r.stderr)) == 1, r.stderr
    else:
        assert "InjectedFailure" in (run / "error.log").read_text()


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory):
    """A 2-rank run that failed in its third epoch: two epochs logged and checkpointed."""
    return _two_epochs(tmp_path_factory.mktemp("stopped"), 4, 1)


# a resume whose epochs= ends at or before the run's last epoch has nothing to train
@pytest.mark.parametrize(
    "epochs", [pytest.param(2, id="at"), pytest.param(1, id="below", marks=slow)]
)
def test_a_resume_with_nothing_to_train_is_refused(stopped_run, tmp_path, epochs):
    run = tmp_path / "run"
    subprocess.run(["cp", "-a", str(stopped_run), str(run)], check=True)
    before = _snapshot(run)
    r = cli(f"resume={run}", f"epochs={epochs}", cwd=tmp_path, env=_env(tmp_path))
    assert r.returncode == 2, r.stderr[-3000:]
    (line,) = error_lines(r.stderr)
    assert f"epochs={epochs}" in line and "epochs=3" in line, line  # says what would work
    assert _snapshot(run) == before


# ----------------------------------------------- 4. signals and faults outside the loop

LONG = [*SMALL, "batch_size=100", "epochs=1000", "optimizer=adam", "subdomains=2"]


def _failed_in_one_line(proc: subprocess.Popen, err: str, fragment: str) -> None:
    """The run failed (exit 1) with no traceback, its last line an error naming ``fragment``."""
    assert proc.returncode == 1, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    last = error_lines(err)[-1]
    assert last.startswith("apts-train: error:") and fragment in last, err[-3000:]


def _start(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen:
    return start_cli(*args, cwd=cwd, env=env, session=True)


# (who gets the signal, the signal, the exit code): SIGHUP (a closed terminal) is handled
# like SIGTERM and named as itself
SIGNALS = [
    pytest.param("group", signal.SIGHUP, 129, id="SIGHUP-group"),
    pytest.param("launcher", signal.SIGHUP, 129, id="SIGHUP-launcher", marks=slow),
    pytest.param("rank1", signal.SIGHUP, 129, id="SIGHUP-rank1", marks=slow),
    pytest.param("group", signal.SIGTERM, 143, id="SIGTERM-group", marks=slow),
]


@pytest.mark.parametrize("target,sig,code", SIGNALS)
def test_every_signal_stops_the_run_with_its_name(tmp_path, target, sig, code):
    env = _env(tmp_path)
    run = tmp_path / "run"
    proc = _start([*LONG, f"hydra.run.dir={run}"], tmp_path, env)
    try:
        wait_for(lambda: (run / "checkpoint.pt").exists() and epochs_logged(run) >= 1, proc)
        ranks = spawned_ranks(proc.pid)
        assert len(ranks) == 2
        if target == "group":
            os.killpg(proc.pid, sig)
        else:
            os.kill({"launcher": proc.pid, "rank1": ranks[1]}[target], sig)
        _, err = proc.communicate(timeout=60)
    finally:
        stop(proc)
    assert proc.returncode == code, err[-3000:]
    assert not any(alive(r) for r in ranks)
    assert _leftover_job_dirs(env) == []
    name = signal.Signals(sig).name
    last = error_lines(err)[-1]
    assert last.startswith("apts-train: error:") and name in last, err[-3000:]
    assert "Traceback" not in err
    summary = read_summary(run)
    assert summary["status"] == "interrupted" and name in summary["reason"], summary
    r = cli(f"resume={run}", f"epochs={summary['epoch'] + 1}", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr[-3000:]


def _fifo_dataset(root: Path) -> list[Path]:
    """A Fashion-MNIST folder whose files are FIFOs nobody writes: reading the dataset
    blocks at the first one for as long as the test wants."""
    d = root / "FashionMNIST" / "raw"
    d.mkdir(parents=True)
    names = ("train-images", "train-labels", "t10k-images", "t10k-labels")
    fifos = [d / f"{n}-idx{3 if 'images' in n else 1}-ubyte" for n in names]
    for f in fifos:
        os.mkfifo(f)
    return fifos


def _wait_for_reader(fifos: list[Path], proc: subprocess.Popen) -> int:
    """Block until ``proc`` opened one of the FIFOs for reading; our writing end (keep it
    open: the reader then waits for data)."""
    fds: list[int] = []

    def opened() -> bool:
        for fifo in fifos:
            try:
                fds.append(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
                return True
            except OSError:  # ENXIO: no reader yet
                pass
        return False

    wait_for(opened, proc)
    return fds[0]


@pytest.mark.parametrize(
    "sig,code",
    [
        pytest.param(signal.SIGTERM, 143, id="SIGTERM"),
        pytest.param(signal.SIGINT, 130, id="SIGINT", marks=slow),
        pytest.param(signal.SIGHUP, 129, id="SIGHUP", marks=slow),
    ],
)
def test_a_signal_while_the_data_loads_is_one_line_and_leaves_nothing(tmp_path, sig, code):
    fifos = _fifo_dataset(tmp_path / "data")
    run = tmp_path / "run"
    args = [
        "dataset=fashion_mnist",
        f"dataset.data_dir={tmp_path / 'data'}",
        "dataset.download=false",
        "subdomains=2",
        "progress=false",
        f"hydra.run.dir={run}",
    ]
    proc = _start(args, tmp_path, _env(tmp_path))
    try:
        fd = _wait_for_reader(fifos, proc)
        os.kill(proc.pid, sig)
        _, err = proc.communicate(timeout=60)
        os.close(fd)
    finally:
        stop(proc)
    assert proc.returncode == code, err[-3000:]
    lines = error_lines(err)
    assert len(lines) == 1 and signal.Signals(sig).name in lines[0], err[-3000:]
    assert not run.exists()


def _owner_line(pid: int) -> str:
    start = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    return f"{pid} {start}\n"


def test_stale_rendezvous_folders_of_dead_jobs_are_swept(tmp_path):
    env = _env(tmp_path)
    tmp = Path(env["TMPDIR"])
    dead = subprocess.Popen(["true"])
    dead.wait()
    folders = {
        # (owner file, kept?)
        "apts-job-dead": (f"{dead.pid} 1\n", False),
        "apts-job-reused": (f"{os.getpid()} 1\n", False),  # a live pid, another process
        "apts-job-live": (_owner_line(os.getpid()), True),  # this test: a live job
        "apts-job-unknown": (None, True),  # no owner file: not ours to judge
    }
    for name, (owner, _) in folders.items():
        (tmp / name).mkdir()
        (tmp / name / "store").write_text("x")
        if owner is not None:
            (tmp / name / "owner").write_text(owner)
    args = [*BASE, "subdomains=2", "epochs=1", f"hydra.run.dir={tmp_path / 'run'}"]
    r = cli(*args, cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    left = {p.name for p in tmp.iterdir() if p.name.startswith("apts-job-")}
    assert left == {name for name, (_, kept) in folders.items() if kept}


@slow
def test_a_run_whose_directory_vanishes_ends_in_one_line(tmp_path):
    env = _env(tmp_path)
    run = tmp_path / "run"
    proc = _start([*LONG, f"hydra.run.dir={run}"], tmp_path, env)
    try:
        wait_for(lambda: epochs_logged(run) >= 1, proc)
        subprocess.run(["rm", "-rf", str(run)], check=True)
        _, err = proc.communicate(timeout=120)
    finally:
        stop(proc)
    _failed_in_one_line(proc, err, str(run))
    assert _leftover_job_dirs(env) == []


@slow
def test_a_run_that_stopped_before_its_first_checkpoint_restarts_in_place(tmp_path):
    # the state a SIGTERM during the very first checkpoint write leaves: results, no
    # checkpoint; here made without timing by a run that does not checkpoint
    env = _env(tmp_path)
    run = tmp_path / "run"
    args = [*BASE, "subdomains=2", "epochs=2", "checkpoint=false", *_faulty("step", 0, 4)]
    r = cli(*args, f"hydra.run.dir={run}", cwd=tmp_path, env=env)
    assert r.returncode == 1 and not (run / "checkpoint.pt").exists(), r.stderr[-3000:]
    r = cli(*args, f"hydra.run.dir={run}", cwd=tmp_path, env=env)  # a fresh start: refused,
    assert r.returncode == 2 and f"resume={run}" in r.stderr  # pointing to resume=...
    r = cli(f"resume={run}", cwd=tmp_path, env=env)  # ... which starts it again in place:
    # the same config fails at the same step again, after training epoch 1 again
    assert r.returncode == 1 and "injected failure in step" in r.stderr, r.stderr[-3000:]
    assert read_summary(run)["status"] == "failed" and epochs_logged(run) == 1


# what a later event writes over an earlier record: (on disk, epochs logged since, new
# status, kept?). A completed or diverged record gives way only to a record of more epochs
# (an extension that trained on); everything else is replaced by what happened last.
LATER_EVENTS = [
    ("completed", 0, "interrupted", True),  # SIGTERM to a sweep just after job 0 completed
    ("completed", 0, "failed", True),  # an extension that failed before a new epoch
    ("completed", 0, "running", True),  # an extension starting
    ("diverged", 0, "failed", True),
    ("completed", 1, "running", False),  # an extension that trained an epoch
    ("completed", 1, "interrupted", False),
    ("running", 0, "completed", False),
    ("running", 0, "failed", False),
    ("failed", 0, "running", False),  # a resume
    ("interrupted", 0, "interrupted", False),
    (None, 0, "failed", False),
]


@pytest.mark.parametrize("old,more,new,kept", LATER_EVENTS)
def test_a_completed_record_gives_way_only_to_more_epochs(tmp_path, old, more, new, kept):
    from apts.rundir.format import METRICS, write_summary

    lines = [f'{{"epoch": {e}, "val_acc": {50 + e}}}\n' for e in range(1, 3 + more)]
    if old is not None:
        (tmp_path / METRICS).write_text("".join(lines[:2]))
        write_summary(tmp_path, old, val_acc=52.0, data=[{"generator": "x"}])
        before = read_summary(tmp_path)
    (tmp_path / METRICS).write_text("".join(lines))
    fields = {"reason": "why"} if new not in ("completed", "running") else {}
    written = write_summary(tmp_path, new, **fields)
    after = read_summary(tmp_path)
    assert written is not kept
    if kept:
        assert after == before
    else:
        assert after["status"] == new and after["epoch"] == 2 + more
        assert after.get("reason") == fields.get("reason")
        if old is not None and new != "running":  # a running record starts afresh
            assert after["data"] == [{"generator": "x"}]  # what the run recorded stays


class _Store:
    """A store whose ``failing`` operation raises after ``after`` calls (a full TMPDIR)."""

    def __init__(self, failing: str, after: int):
        self.failing, self.after, self.calls, self.data = failing, after, 0, {}

    def _maybe_fail(self, op: str) -> None:
        if op == self.failing:
            self.calls += 1
            if self.calls > self.after:
                raise RuntimeError(f"{op}: No space left on device")

    def add(self, key, n):
        self._maybe_fail("add")
        self.data[key] = self.data.get(key, 0) + n

    def check(self, keys):
        self._maybe_fail("check")
        return all(k in self.data for k in keys)

    def get(self, key):
        self._maybe_fail("get")
        return str(self.data[key]).encode()


@pytest.mark.parametrize("failing", ["add", "check", "get"])
def test_a_heartbeat_whose_store_fails_reports_it(failing):
    import threading

    from apts.runtime.lifecycle import Heartbeat

    store = _Store(failing, after=2)
    store.data["apts/heartbeat/1"] = 0  # a peer that beats
    reported: list[BaseException] = []
    done = threading.Event()

    def on_error(e: BaseException) -> None:
        reported.append(e)
        done.set()

    hb = Heartbeat(
        store, 0, 2, interval=0.01, timeout=1e6, on_stall=lambda *a: None, on_error=on_error
    )
    hb.start()
    assert done.wait(60), "the heartbeat died silently"
    hb.join(10)
    assert not hb.is_alive()
    assert "No space left on device" in str(reported[0])


def test_a_heartbeat_stopped_on_purpose_reports_nothing():
    from apts.runtime.lifecycle import Heartbeat

    reported: list[BaseException] = []
    store = _Store("add", after=10**9)
    hb = Heartbeat(store, 0, 1, interval=0.01, timeout=1e6, on_stall=None, on_error=reported.append)
    hb.start()
    hb.stop()
    store.after = 0  # the store goes away as the job ends
    assert not hb.is_alive() and reported == []


# what a directory holds -> what a run there does: (summary status, epochs logged,
# checkpoint?, resume mode, epochs asked) -> the plan, or the fragment of the refusal
PLANS = [
    (None, 0, False, None, 3, "fresh"),
    ("failed", 1, False, None, 3, "already holds a run"),  # -> resume=DIR, which:
    ("failed", 1, False, "DIR", 3, "restart"),  # SIGTERM in the first checkpoint write
    ("interrupted", 1, False, "auto", 3, "restart"),
    ("interrupted", 2, True, "DIR", 3, "resume"),
    ("interrupted", 2, True, "DIR", 2, "epochs=2 trains nothing; resume with epochs=3"),
    ("interrupted", 2, True, "auto", 1, "epochs=1 trains nothing"),
    ("completed", 2, True, "DIR", 2, "skip"),
    ("completed", 2, True, "DIR", 3, "resume"),  # an extension
    ("diverged", 1, True, "auto", 3, "skip"),
    ("diverged", 1, True, "DIR", 3, "would diverge again"),
    (None, 0, False, "DIR", 3, "nothing to resume"),
]


@pytest.mark.parametrize("status,logged,ckpt,mode,epochs,expect", PLANS)
def test_the_plan_for_a_run_directory(tmp_path, status, logged, ckpt, mode, epochs, expect):
    from apts.errors import RunDirError
    from apts.rundir.claim import plan_run
    from apts.rundir.format import CHECKPOINT, METRICS, write_summary

    lines = "".join(f'{{"epoch": {e}}}\n' for e in range(1, logged + 1))
    if status is not None:
        (tmp_path / METRICS).write_text(lines)
        write_summary(tmp_path, status)
    if ckpt:
        (tmp_path / CHECKPOINT).write_bytes(b"x")
    cfg = {"resume": str(tmp_path) if mode == "DIR" else mode, "epochs": epochs}
    if " " not in expect:
        assert plan_run(tmp_path, cfg, None).action == expect
    else:
        with pytest.raises(RunDirError, match=expect):
            plan_run(tmp_path, cfg, None)


# --------------------------------------------------------------------- 6. smaller defects

# resume= takes the keys that do not change results; the others are refused
RESUME_KEYS = [
    pytest.param(["progress=false"], 0, id="progress"),
    pytest.param(
        ["launcher.heartbeat_s=30", "launcher.timeout_s=300"], 0, id="launcher", marks=slow
    ),
    pytest.param(["optimizer.lr=0.1"], 2, id="lr"),
    pytest.param(["seed=1"], 2, id="seed", marks=slow),
    pytest.param(["subdomains=1"], 2, id="subdomains", marks=slow),
]


@pytest.mark.parametrize("extra,code", RESUME_KEYS)
def test_resume_takes_the_keys_that_do_not_change_results(completed_run, tmp_path, extra, code):
    run = tmp_path / "run"
    subprocess.run(["cp", "-a", str(completed_run), str(run)], check=True)
    before = _snapshot(run)
    r = cli(f"resume={run}", *extra, cwd=tmp_path, env=_env(tmp_path))
    assert r.returncode == code, r.stderr[-3000:]
    if code == 0:  # accepted: the run has completed its 2 epochs, nothing to do
        assert "completed 2 epochs" in r.stderr, r.stderr[-3000:]
    else:
        (line,) = error_lines(r.stderr)
        assert extra[0].split("=")[0] in line, line
    assert _snapshot(run) == before


@pytest.mark.parametrize(
    "n", [pytest.param(2, id="two-ranks"), pytest.param(1, id="one-rank", marks=slow)]
)
def test_a_clean_run_prints_no_warning(tmp_path, n):
    # progress=true: the bar's lock must not be a leaked multiprocessing semaphore
    args = [*BASE, "progress=true", f"subdomains={n}", "epochs=1"]
    r = cli(*args, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    text = r.stderr.replace("\r", "\n")
    assert "leaked" not in text and "Warning" not in text, text[-3000:]


@slow
@pytest.mark.parametrize("optimizer", ["apts", "adam", "local_sgd"])
def test_a_resumed_run_equals_an_uninterrupted_one(tmp_path, optimizer):
    """comm_by_kind included: the checkpoint gathers carry the same bytes."""
    args = [*SMALL, "batch_size=400", f"optimizer={optimizer}", "subdomains=2"]
    run, ref = tmp_path / "run", tmp_path / "ref"
    assert cli(*args, "epochs=1", f"hydra.run.dir={run}", cwd=tmp_path).returncode == 0
    assert cli(f"resume={run}", "epochs=3", cwd=tmp_path).returncode == 0
    assert cli(*args, "epochs=3", f"hydra.run.dir={ref}", cwd=tmp_path).returncode == 0
    got, want = read_metrics(run), read_metrics(ref)
    assert without_timings(got) == without_timings(want)
    assert [g["comm_by_kind"] for g in got] == [w["comm_by_kind"] for w in want]


def _fill(where: Path) -> None:
    """Fill the filesystem of ``where`` to the last byte (unbuffered writes, big blocks then
    single bytes; opening the second file may itself find no space left)."""
    for name, block in (("filler", 65536), ("filler2", 1)):
        try:
            fd = os.open(where / name, os.O_WRONLY | os.O_CREAT)
        except OSError:
            return
        try:
            while True:
                os.write(fd, b"\0" * block)
        except OSError:
            pass
        finally:
            os.close(fd)


# a filesystem that fills up mid-run: the run directory's (metrics, checkpoint, summary
# written in place), TMPDIR's (the heartbeat's store): one line, a status, no traceback
FULL_DISKS = [
    pytest.param("run", "cannot write", id="run-directory"),
    pytest.param("tmp", "heartbeat lost the rendezvous store", id="TMPDIR"),
]


@slow
@pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root")
@pytest.mark.parametrize("which,fragment", FULL_DISKS)
def test_a_disk_that_fills_mid_run_ends_it_in_one_line(tmp_path, which, fragment):
    with tmpfs(tmp_path / "small", size="4m") as small:
        env = _env(tmp_path)
        if which == "tmp":
            env["TMPDIR"] = str(small)
        run = (small if which == "run" else tmp_path) / "run"
        args = [*LONG, "launcher.heartbeat_s=3", f"hydra.run.dir={run}"]
        proc = _start(args, tmp_path, env)
        try:
            wait_for(lambda: (run / "checkpoint.pt").exists() and epochs_logged(run) >= 1, proc)
            _fill(small)
            _, err = proc.communicate(timeout=120)
        finally:
            stop(proc)
        _failed_in_one_line(proc, err, fragment)
        summary = read_summary(run)
        assert summary["status"] == "failed" and fragment in summary["reason"], summary
        assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]
