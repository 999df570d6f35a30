"""A chaos run is a function of its seed and schedule, and can be replayed from a shell."""

from __future__ import annotations

import random

import pytest

from engine_sim._cli import main
from engine_sim.chaos import SCHEDULE_TARGETS, WORK, run_scenario, violations
from engine_sim.faults import AfterFrame, At, Drop, Hold, Release, Step, random_schedule
from engine_sim.faults import schedule_from_json as from_json
from engine_sim.faults import schedule_to_json as to_json

SCHEDULE: list[Step] = [
    (AfterFrame(2, "invokefunction"), Drop("svc")),
    (At(12.0), Hold("to_worker", "client")),
    (At(14.5), Release("to_worker", "client")),
]


def test_the_same_seed_and_schedule_give_the_same_run_event_for_event() -> None:
    first = run_scenario(7, SCHEDULE)
    second = run_scenario(7, SCHEDULE)
    assert first.trace.format() == second.trace.format()
    assert len(first.trace.lines) > 100


def test_another_seed_gives_another_run() -> None:
    assert run_scenario(7, SCHEDULE).trace.format() != run_scenario(8, SCHEDULE).trace.format()


def test_a_clean_run_keeps_every_property_and_does_its_work() -> None:
    result = run_scenario(3, [])
    assert violations(result) == []
    assert all(call.outcome != "running" for call in result.calls)
    assert sum(call.outcome == "ok" for call in result.calls) >= 8
    assert result.recovered_at is not None


def test_the_report_names_seed_schedule_trace_and_replay_command() -> None:
    result = run_scenario(5, SCHEDULE)
    report = result.report(["an example violation"])
    lines = report.splitlines()
    assert lines[0] == "seed: 5"
    assert lines[1].startswith("schedule: [(AfterFrame(index=2")
    assert "violated: an example violation" in lines
    assert any("FAULT" in line and "Drop(target='svc')" in line for line in lines)
    assert lines[-1] == f"replay: {result.replay_command()}"
    assert result.replay_command().startswith("python -m engine_sim chaos --seed 5 --schedule '")


def test_the_replay_command_runs_the_same_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    result = run_scenario(5, SCHEDULE)
    assert main(["chaos", "--seed", "5", "--schedule", to_json(SCHEDULE), "--trace"]) == 0
    printed = capsys.readouterr().out
    assert result.trace.format() in printed
    assert "seed 5: ok; 3 fault step(s)" in printed


def test_without_a_schedule_the_seed_draws_one(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["chaos", "--seed", "11", "--runs", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["seed 11", "seed 12", "seed 13"]
    drawn = random_schedule(random.Random(12), targets=SCHEDULE_TARGETS, function_ids=[WORK])
    assert f"seed 12: ok; {len(drawn)} fault step(s)" in lines[1]


def test_a_bad_schedule_is_refused_with_the_reason(capsys: pytest.CaptureFixture[str]) -> None:
    bad = '[[{"kind":"At","seconds":1},{"kind":"Hold","direction":"sideways"}]]'
    assert main(["chaos", "--schedule", bad]) == 2
    error = capsys.readouterr().err
    assert error.startswith("iii-sim chaos: bad --schedule:")
    assert "direction" in error


# -- fixed regressions: seed and schedule of a run that once failed -------------------------

#: Issue 11 item 12: svc's close and the frames before it are held until healing, so
#: svc reads ``workerregistered`` (ready) on a link the engine has already closed; the
#: first liveness call gets ``function_not_found`` and must be retried, not reported.
LATE_CLOSE = (
    '[[{"kind":"At","seconds":0.5},{"kind":"GracefulClose","target":"svc","code":1000,'
    '"reason":"closed by a fault"}],[{"kind":"At","seconds":0.0},'
    '{"kind":"Hold","direction":"to_worker","target":"svc"}]]'
)


def test_a_close_held_until_healing_is_not_a_liveness_failure(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["chaos", "--seed", "0", "--schedule", LATE_CLOSE]) == 0
    assert capsys.readouterr().out.startswith("seed 0: ok; 2 fault step(s)")
    result = run_scenario(0, from_json(LATE_CLOSE))
    liveness = [call.outcome for call in result.calls if call.liveness]
    # The first call meets the held close at the same instant: it fails as the function
    # being gone (FunctionNotFound) or as the call cut by the close (InvocationStopped),
    # depending on the frames the features the engine announces put before it. Either is
    # retried; what matters is that the later calls all pass and recovery is in bound.
    assert liveness[0] in {"FunctionNotFound", "InvocationStopped"}
    assert liveness[1:] == ["ok", "ok", "ok"]
    assert result.recovered_at is not None
    assert result.recovered_at - result.healed_at <= result.workload.recovery_bound
