"""The tuning-free baselines a user reaches for instead of a learning-rate sweep.

- :class:`Prodigy`: Adam with a step size estimated on the fly (Mishchenko and Defazio,
  "Prodigy: An Expeditiously Adaptive Parameter-Free Learner", ICML 2024), the authors'
  package ``prodigyopt`` (pinned 1.1.2).
- :class:`ScheduleFreeAdamW`: AdamW without a learning-rate schedule (Defazio, Yang,
  Mehta, Mishchenko, Khaled, Cutkosky, "The Road Less Scheduled", NeurIPS 2024), the
  authors' package ``schedulefree`` (pinned 1.4.1).

Both run under DDP like the Adam/SGD baselines: every rank steps on the averaged gradient,
so every rank holds the same parameters and state and nothing else is communicated
(Prodigy's step-size sums are over that same gradient; its ``fsdp_in_use`` all-reduce is
for sharded parameters and stays off). The classes here are the authors' optimizers,
unchanged (``step`` is theirs), with range checks in front that name the bad option in one
line, as the project's own optimizers do; their defaults are the authors'.

Schedule-free keeps two points: y, where gradients are taken (``train()`` mode), and x,
the average, which is what one evaluates and saves (``eval()`` mode); the parameters hold
one or the other. ``step`` refuses to run in eval mode. The runner switches to ``eval()``
at each epoch's end, before evaluation and the checkpoint, and back to ``train()`` at the
start of each epoch, so a checkpoint holds x (with z and the moments in the optimizer
state) and a resumed run, fresh or not, computes the same y from it. The switch is exact
only in one direction (x → y → x is a round trip in floating point), so a run that never
stopped must take the same eval/train turn at every epoch end: it does.
"""

from __future__ import annotations

import math
from typing import Any

import prodigyopt
import schedulefree

from apts.checks import check_betas, check_bool, check_int, check_number
from apts.errors import OptionError

__all__ = ["Prodigy", "ScheduleFreeAdamW"]


def _positive(name: str, value: Any) -> None:
    check_number(name, value, 0.0, lo_open=True)


class Prodigy(prodigyopt.Prodigy):
    """``prodigyopt.Prodigy`` with its authors' defaults (``lr`` = 1 scales the estimated
    step size; ``d_coef`` is the knob the authors suggest if one is needed) and range
    checks that name the option. See ``prodigyopt.Prodigy`` for every argument."""

    def __init__(
        self,
        params: Any,
        lr: float = 1.0,
        betas: tuple[float, float] = (0.9, 0.999),
        beta3: float | None = None,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        decouple: bool = True,
        use_bias_correction: bool = False,
        safeguard_warmup: bool = False,
        d0: float = 1e-6,
        d_coef: float = 1.0,
        growth_rate: float = math.inf,
        slice_p: int = 1,
    ):
        _positive("lr", lr)
        check_betas("betas", betas)
        if beta3 is not None:
            check_number("beta3", beta3, 0.0, 1.0, hi_open=True)
        _positive("eps", eps)
        check_number("weight_decay", weight_decay, 0.0)
        _positive("d0", d0)
        _positive("d_coef", d_coef)
        ok = isinstance(growth_rate, (int, float)) and not isinstance(growth_rate, bool)
        if not (ok and growth_rate >= 1):  # inf: no limit, the authors' default
            raise OptionError("growth_rate", growth_rate, "must be a number >= 1 (or inf)")
        check_int("slice_p", slice_p, 1)
        super().__init__(
            params,
            lr=lr,
            betas=tuple(betas),
            beta3=beta3,
            eps=eps,
            weight_decay=weight_decay,
            decouple=decouple,
            use_bias_correction=use_bias_correction,
            safeguard_warmup=safeguard_warmup,
            d0=d0,
            d_coef=d_coef,
            growth_rate=growth_rate,
            slice_p=slice_p,
        )


class ScheduleFreeAdamW(schedulefree.AdamWScheduleFree):
    """``schedulefree.AdamWScheduleFree`` with its authors' defaults (lr 0.0025, no warmup)
    and range checks that name the option. Call ``train()`` before stepping and ``eval()``
    before evaluating or saving (the runner does). See the module docstring."""

    def __init__(
        self,
        params: Any,
        lr: float = 0.0025,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        r: float = 0.0,
        weight_lr_power: float = 2.0,
        foreach: bool = True,
    ):
        _positive("lr", lr)
        check_betas("betas", betas, first_open=True)  # eval() divides by beta1
        check_number("eps", eps, 0.0)
        check_number("weight_decay", weight_decay, 0.0)
        check_int("warmup_steps", warmup_steps, 0)
        check_number("r", r, 0.0)
        check_number("weight_lr_power", weight_lr_power, 0.0)
        check_bool("foreach", foreach)
        super().__init__(
            params,
            lr=lr,
            betas=tuple(betas),
            eps=eps,
            weight_decay=weight_decay,
            warmup_steps=warmup_steps,
            r=r,
            weight_lr_power=weight_lr_power,
            foreach=foreach,
        )
