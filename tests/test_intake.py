"""Intake activity: the pipeline steps back during a burst, but never for long."""

from __future__ import annotations

from mailgw.intake import IntakeActivity


def test_burst_detection_and_its_limit() -> None:
    intake = IntakeActivity(quiet_after=0.5, max_burst=30.0)
    assert not intake.bursting(now=1000.0)  # nothing accepted yet
    intake.accepted(now=1000.0)
    assert intake.bursting(now=1000.3)
    assert not intake.bursting(now=1000.6)  # quiet again
    for t in range(0, 40):  # a steady stream, one message every 0.25 s for 10 s
        intake.accepted(now=2000.0 + t * 0.25)
    assert intake.bursting(now=2009.9)
    for t in range(40, 140):  # ... and on: after 30 s the pipeline runs at full speed again
        intake.accepted(now=2000.0 + t * 0.25)
    assert not intake.bursting(now=2034.8)
    intake.accepted(now=2100.0)  # a pause, then a new burst starts the clock again
    assert intake.bursting(now=2100.1)
