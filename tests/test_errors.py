"""The one error policy (layerwatch.errors): what a failed step costs and what it says."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from layerwatch.errors import ErrorPolicy, failure_message, summary
from layerwatch.snapshot import SnapshotKey

KEY = SnapshotKey(2, 6, True)


def _boom(what="disk full"):
    raise OSError(what)


def test_a_failed_stage_of_a_snapshot_is_said_kept_and_costs_only_itself(caplog):
    policy = ErrorPolicy("warn")
    with caplog.at_level(logging.WARNING, logger="layerwatch"):
        assert policy.run("capture", KEY, _boom) is None
        assert policy.run("capture", KEY, lambda: 7) == 7
    want = (f"layerwatch: capture of snapshot {KEY.title} failed (OSError: disk full); training goes on and the "
            "next snapshot tries again (on_error='raise' makes this fatal)")
    assert policy.failures == [want]
    assert [r.getMessage() for r in caplog.records] == [want]


def test_a_failure_outside_a_snapshot_says_training_goes_on():
    policy = ErrorPolicy("warn", announce=False)
    policy.run("dynamics (train_begin)", None, _boom, "no hooks")
    assert policy.failures == ["layerwatch: dynamics (train_begin) failed (OSError: no hooks); training goes on"]


def test_a_step_is_kept_bare_and_said_with_the_other_steps_going_on(caplog):
    policy = ErrorPolicy("warn", scope="step")
    with caplog.at_level(logging.WARNING, logger="layerwatch"):
        policy.run("drawing f.png", KEY, _boom)
    bare = f"layerwatch: drawing f.png of snapshot {KEY.title} failed (OSError: disk full)"
    assert policy.failures == [bare]
    assert [r.getMessage() for r in caplog.records] == [bare + "; the other steps go on"]
    # A background worker keeps them without saying them; the training process says the summary.
    quiet = ErrorPolicy("warn", scope="step", announce=False)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="layerwatch"):
        quiet.run("drawing f.png", KEY, _boom)
        quiet.run("writing a.gif", None, _boom, "no space")
    assert caplog.records == []
    assert summary(KEY, "drawing", quiet.failures) == (
        f"layerwatch: drawing of snapshot {KEY.title} failed in 2 step(s): drawing f.png of snapshot {KEY.title} failed "
        "(OSError: disk full); writing a.gif failed (OSError: no space)"
    )


@pytest.mark.parametrize("scope", ["training", "step"])
def test_on_error_raise_raises_the_failure_itself_and_keeps_nothing(scope):
    policy = ErrorPolicy("raise", scope=scope)
    with pytest.raises(OSError, match="disk full"):
        policy.run("capture", KEY, _boom)
    assert policy.failures == [] and policy.fatal


def test_bad_settings_are_refused_naming_what_is_allowed():
    with pytest.raises(ValueError, match=r"on_error='ignore' is not one of 'warn', 'raise'"):
        ErrorPolicy("ignore")
    with pytest.raises(ValueError, match=r"scope='run' is not one of 'training', 'step'"):
        ErrorPolicy("warn", scope="run")


def test_a_warning_is_said_once_per_kind(caplog):
    policy = ErrorPolicy("warn")
    with caplog.at_level(logging.WARNING, logger="layerwatch"):
        for _ in range(3):
            policy.warn_once("head", "model accuracy is left out")
        policy.warn_once("outputs", "other")
    assert [r.getMessage() for r in caplog.records] == ["layerwatch: model accuracy is left out", "layerwatch: other"]
    assert policy.failures == []  # a warning is not a failure


def test_the_back_half_context_guards_with_the_same_policy(tmp_path):
    from layerwatch.measures.base import Context

    ctx = Context(store=None, config=SimpleNamespace(on_error="warn"))
    ctx.log_failures = False
    assert ctx.guard("laying out train", KEY, _boom) is None
    assert ctx.failures == [failure_message("laying out train", KEY, "OSError: disk full")]
    assert ctx.errors.failures is ctx.failures and not ctx.errors.announce
    ctx.failures = []
    assert ctx.errors.failures == []
    strict = Context(store=None, config=SimpleNamespace(on_error="raise"))
    with pytest.raises(OSError):
        strict.guard("laying out train", KEY, _boom)
