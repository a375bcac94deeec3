"""apts-report: tables and plots from finished (or interrupted) run directories.

Usage::

    apts-report RUN_DIR... [--out DIR] [--target ACC] [--title T] [--net-bench NET_JSON]

Every directory under the given paths that holds a ``config.yaml`` or a
``metrics.jsonl`` is a run (``.hydra/`` folders and other hidden folders are not
searched), so single runs, Hydra multirun sweeps and trees of sweeps can be mixed.
The report reads what the runner wrote (``config.yaml``, ``metrics.jsonl``,
``summary.json``, ``error.log``) and what Hydra wrote about a sweep
(``multirun.yaml``, ``.hydra/overrides.yaml``), and writes into ``--out`` (default
``outputs/report``): ``report.md``, ``val_acc.png`` (the headline: one line per method,
its best configuration on validation), ``acc_vs_cost.png`` (against training time and
samples seen), ``loss.png``, ``acc_vs_comm.png``, ``comm_<dataset>_<model>.png`` per
dataset/model and ``ablation_<study>.png`` per ablation study.

Sections: what was run; *Run status* (runs that did not complete, planned jobs of a
sweep that left no results); final accuracy; plots; *Who wins at equal
communication*; *Time on a network* (each configuration's measured compute time and
collectives projected onto typical links, and, given ``make bench-net``'s
``net.json``, the network model against those measurements: ``--net-bench``, by
default ``outputs/bench/net.json`` when it exists); the published numbers; tuning
cost; *Ablations*; every run; notes.

Definitions used in the report:

- *configuration*: runs whose configs agree on every key except ``seed`` and the
  keys that do not change the training (device, progress, checkpoint, out_dir,
  eval_batch_size, micro_batch, dataset.data_dir, dataset.download, study, launcher.*).
  The seeds of a configuration form one group. The label shows the optimizer, N
  (``subdomains``, not for DDP SGD/Adam), H (``optimizer.sync_every``, Local
  SGD/Adam), the learning rate (SGD/Adam, DDP and Local) and |B|, plus any other
  key that is needed to tell two configurations apart.
- *did not complete*: ``summary.json`` says failed, interrupted or diverged, or is
  missing, or fewer epochs were logged than planned. Such runs are listed and
  counted, and left out of every statistic.
- *final accuracy*: the last logged epoch's ``val_acc`` of each seed; mean and
  sample standard deviation over seeds ("–" for one seed).
- *target accuracy*: ``--target``, or per dataset/model 0.99 x the lowest of the
  per-optimizer best mean final accuracies, a level that every optimizer reaches
  with its best configuration.
- *epochs to target*: per seed the first epoch whose ``val_acc`` is at least the
  target; the mean over the seeds that reached it ("(k/n seeds)" when not all did,
  "not reached" when none did). *Collectives to target*: ``comm_calls_total`` at
  that epoch, averaged the same way.
- *best lr*: of configurations that differ only in ``optimizer.lr``, the one with
  the highest mean final accuracy; plots and comparisons show only it.
- *method*: an optimizer at one global mini-batch size on one dataset/model; the
  headline figures show each by its configuration (N, H, lr, ...) with the highest
  mean final validation accuracy.
- *budget C*: an APTS configuration's collectives over its whole run; see
  :mod:`~apts.report.communication`. Ablations: :mod:`~apts.report.ablations`.

Modules: :mod:`~apts.report.runs` (finding and reading run directories),
:mod:`~apts.report.multirun` (the jobs a Hydra sweep planned),
:mod:`~apts.report.groups` (configurations, sweeps, targets), :mod:`~apts.report.plots`
and :mod:`~apts.report.ablation_plots` (the figures),
the sections (:mod:`~apts.report.status`, :mod:`~apts.report.sections`,
:mod:`~apts.report.communication`, :mod:`~apts.report.network`, :mod:`~apts.report.paper`,
:mod:`~apts.report.tuning`, :mod:`~apts.report.ablations`),
:mod:`~apts.report.build` (report.md) and :mod:`~apts.report.cli` (``apts-report``).
"""

from apts.report.build import build_report
from apts.report.cli import main, parse_args
from apts.report.groups import Group, group_runs
from apts.report.runs import Run, Skipped, load_run, load_runs

__all__ = [
    "Group",
    "Run",
    "Skipped",
    "build_report",
    "group_runs",
    "load_run",
    "load_runs",
    "main",
    "parse_args",
]
