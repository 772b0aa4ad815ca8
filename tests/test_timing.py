"""The step-time harness (`benchmarks/timing.py`) on fake variants and a fake clock: no timing is asserted."""

from __future__ import annotations

import argparse
import itertools
import time

import pytest
import torch

from benchmarks import timing


class FakeClock:
    """Advances by 1, 2, 3, ... seconds per call."""

    def __init__(self):
        self.now, self.calls = 0.0, itertools.count(1)

    def __call__(self):
        self.now += next(self.calls)
        return self.now


def test_time_steps_whole_step_and_parts():
    clock = FakeClock()
    seen = []
    block = timing.time_steps(lambda index, mark: seen.append(index), count=2, warmup=1, clock=clock)
    assert seen == [0, 1, 2]
    # calls 1..6: the step spans are 2 (1->3), 4 (3->7), 6 (7->13); the first is warm-up.
    assert block.times == [4, 6] and len(block.faults) == 2 and block.loops is None

    clock = FakeClock()

    def step(index, mark):
        for _ in range(3):
            mark()

    block = timing.time_steps(step, count=1, warmup=0, clock=clock, parts=("a", "b"))
    assert block.parts == {"a": [2], "b": [3]} and block.times == [5]
    with pytest.raises(RuntimeError, match="marked 1 times"):
        timing.time_steps(lambda index, mark: mark(), count=1, warmup=0, clock=clock, parts=("a", "b"))


def _options(**overrides):
    values = dict(repeats=4, rounds=2, warmup=1, max_foreign_cpu=0.1, max_attempts=3, retry_pause=0.0)
    return argparse.Namespace(**{**values, **overrides})


def test_interleave_rotates_the_order_and_measures_disturbed_blocks_again(monkeypatch):
    calls = []

    def variant(name, seconds):
        def prepare(warmup, steps):
            def run():
                calls.append((name, warmup, steps))
                return timing.Block(times=[seconds] * steps, faults=[10] * steps)
            return run
        return prepare

    foreign = iter([0.0] * 3 + [0.5, 0.0] + [0.0] * 10)  # the first timed block of "a" was disturbed once
    monkeypatch.setattr(timing.CpuActivity, "stop", lambda self: next(foreign))
    measured = timing.interleave({"a": variant("a", 2.0), "b": variant("b", 1.0), "c": variant("c", 4.0)},
                                 _options(), torch.device("cpu"), log=lambda message: None, label="test")
    assert calls[:3] == [("a", 1, 0), ("b", 1, 0), ("c", 1, 0)]  # the untimed warm-up round
    assert [c[0] for c in calls[3:]] == ["a", "a", "b", "c", "b", "c", "a"]  # round 2 starts one later
    assert all(c[1:] == (1, 2) for c in calls[3:])  # 4 repeats over 2 rounds, 1 untimed step each
    kept = measured["blocks"]
    assert [b["attempts"] for b in kept["a"]] == [2, 1] and [b["round"] for b in kept["a"]] == [0, 1]


def _kept(round_times: list[list[float]]) -> list[dict]:
    return [{"block": timing.Block(times=times, faults=[100, 300][:len(times)], parts={"x": times}),
             "round": r, "attempts": 1, "load_1min": 0.0, "foreign_cpu": 0.0, "memory": {"delta_mib": 5.0 + r}}
            for r, times in enumerate(round_times)]


def test_summary_ratios_and_their_spread_over_rounds():
    measured = {"memory_meaning": "m",
                "blocks": {"a": _kept([[2.0, 2.0], [3.0, 3.0], [2.2, 2.2]]),
                           "b": _kept([[1.0, 1.0], [2.0, 2.0], [2.0, 2.0]])}}
    result = timing.summarize_blocks(measured, ["a/b", "a/z"], batch_size=8)
    a = result["variants"]["a"]
    assert a["median_s"] == 2.2 and a["n"] == 6 and a["samples_per_s"] == pytest.approx(8 / 2.2)
    assert a["memory_mib"] == {"delta_mib": 7.0} and a["minor_faults_per_step_median"] == 200
    assert a["parts_median_s"] == {"x": 2.2} and [b["median_s"] for b in a["blocks"]] == [2.0, 3.0, 2.2]
    assert "loop_s" not in a
    assert set(result["ratios"]) == {"a/b"} and result["ratios"]["a/b"] == pytest.approx(2.2 / 2.0)
    spread = result["ratio_spreads"]["a/b"]
    assert spread["values"] == pytest.approx([2.0, 1.5, 1.1])  # per round: 2/1, 3/2, 2.2/2
    assert spread["median"] == pytest.approx(1.5) and spread["min"] == pytest.approx(1.1)
    # mean 23/15: deviations 7/15, -1/30, -13/30, squares summing to 61/150, over n - 1 = 2
    assert spread["max"] == pytest.approx(2.0) and spread["sd"] == pytest.approx((61 / 300) ** 0.5)
    table = timing.format_table({"16": result}, lambda key: f"setting {key}", reference="b")
    assert "a/b" in table and "1.500" in table and "1.100" in table and "2.000" in table


def test_cpu_clock_ignores_time_spent_waiting():
    wall, cpu = timing.Clock(torch.device("cpu")), timing.Clock(torch.device("cpu"), "cpu")
    wall_before, cpu_before = wall(), cpu()
    time.sleep(0.3)  # no CPU work: the wall clock moves, this process's CPU time hardly does
    assert wall() - wall_before >= 0.3 and cpu() - cpu_before < 0.1
    with pytest.raises(ValueError, match="wall clock on CUDA"):
        timing.Clock(torch.device("cuda"), "cpu")
