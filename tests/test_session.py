"""The run session's console estimate and epoch means, without a run."""

from __future__ import annotations

from asose_jax.runtime.session import RunSession, SessionSettings, epoch_means


def test_the_remaining_time_is_said_once_after_20_timed_seconds(capsys):
    session = object.__new__(RunSession)
    session.settings = SessionSettings(1, 0, 1, "stop", 0, (), "", total_steps=100)
    session.timed, session.estimated = None, False
    session.time_run(10, 0.0)  # the first timed call: nothing to say yet
    session.time_run(15, 10.0)  # 10 s timed: too few
    session.time_run(20, 25.0)  # 10 steps in 25 s: 80 steps left, 200 s
    session.time_run(30, 60.0)
    assert capsys.readouterr().err.splitlines() == [
        "about 0:03:20 left for the remaining 80 steps (evaluations not included)"
    ]


def test_epoch_means_leave_out_skipped_updates_and_keep_the_last_schedule_value():
    fetched = [{"loss": 1.0, "lr": 0.3, "skipped": 0.0}, {"loss": 9.0, "lr": 0.2, "skipped": 1.0},
               {"loss": 3.0, "lr": 0.1, "skipped": 0.0}]  # fmt: skip
    assert epoch_means(fetched, ("lr",)) == {"loss": 2.0, "lr": 0.1, "skipped_steps": 1}
