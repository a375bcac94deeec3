"""One set of option checks (apts/checks.py) for the optimizers and the config layer: the
rules, the typed error they raise, and the config check naming a key from that error's
fields rather than from its text."""

from __future__ import annotations

import math

import pytest
import torch

from apts.checks import check_betas, check_bool, check_choice, check_int, check_number
from apts.config.validate import check_optimizer, validate
from apts.errors import ConfigError, OptionError
from apts.optim import LocalAdam, LocalSGD


@pytest.mark.parametrize(
    "call,value,rule",
    [
        (lambda v: check_int("k", v, 1), 0, "must be an integer >= 1"),
        (lambda v: check_int("k", v, 1), True, "must be an integer >= 1"),  # no bool
        (lambda v: check_int("k", v, 1, 8), 9, "must be an integer in [1, 8]"),
        (lambda v: check_number("k", v, 0.0), -0.5, "must be a number >= 0.0"),
        (lambda v: check_number("k", v, 0.0, lo_open=True), 0.0, "must be a number > 0.0"),
        (lambda v: check_number("k", v, 0.0, 1.0, hi_open=True), 1.0, "must be a number in"),
        (lambda v: check_number("k", v), math.nan, "must be a finite number"),
        (lambda v: check_bool("k", v), "maybe", "must be true or false"),
        (lambda v: check_choice("k", v, ("a", "b", "c")), "d", "must be 'a', 'b' or 'c'"),
        (lambda v: check_betas("k", v), [0.9, 1.0], "must be two numbers in [0, 1)"),
        (
            lambda v: check_betas("k", v, first_open=True),
            (0, 0.5),
            "must be two numbers in (0, 1) and",
        ),
    ],
)
def test_a_rejection_is_an_option_error_with_its_fields(call, value, rule):
    with pytest.raises(OptionError) as info:
        call(value)
    e = info.value
    assert isinstance(e, ValueError)  # what Python callers of an optimizer catch
    assert (e.option, e.value) == ("k", value) and e.rule.startswith(rule)
    assert str(e) == f"k={value!r} {e.rule}"


def test_accepted_values_come_back_as_their_kind():
    assert check_int("k", 3, 1) == 3 and check_number("k", 2, 0.0) == 2.0
    assert check_bool("k", False) is False and check_choice("k", "b", "ab") == "b"
    assert check_betas("k", [0.5, 0]) == (0.5, 0.0)


def test_the_config_and_an_optimizer_say_the_same_of_the_same_rule():
    # sync_every is checked by LocalSGD's constructor, epochs by the config layer: one rule
    with pytest.raises(OptionError) as opt:
        LocalSGD([torch.zeros(1, requires_grad=True)], sync_every=0)
    with pytest.raises(ConfigError) as cfg:
        validate({"epochs": 0})
    assert opt.value.rule == "must be an integer >= 1"
    assert str(cfg.value) == f"epochs=0 {opt.value.rule}"
    with pytest.raises(OptionError, match=r"^betas=\[0.9, 1.5\] must be two numbers in \[0, 1\)"):
        LocalAdam([torch.zeros(1, requires_grad=True)], betas=[0.9, 1.5])


class Fussy(torch.optim.SGD):
    """An optimizer with one checked option and one error that only looks like one."""

    def __init__(self, params, lr: float = 0.1, note: str = "x"):
        check_number("lr", lr, 0.0, lo_open=True)
        if note != "x":
            raise ValueError(f"lr=3 is what note={note!r} cannot be")
        super().__init__(params, lr=lr)


def _fussy(**kw):
    return check_optimizer({"name": "fussy", "_target_": f"{__name__}.Fussy", **kw})


def test_the_config_check_names_the_key_from_the_error_not_its_text():
    with pytest.raises(ConfigError) as named:
        _fussy(lr=-1.0)
    assert str(named.value).startswith("optimizer.lr=-1.0 must be a number > 0.0; fix it")
    # a plain ValueError whose text starts like an option is quoted, not named as a key
    with pytest.raises(ConfigError) as quoted:
        _fussy(note="y")
    assert str(quoted.value).startswith("optimizer=fussy: lr=3 is what note='y' cannot be")
    assert _fussy(lr=0.5).func is Fussy
