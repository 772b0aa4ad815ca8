"""Smoke test of benchmarks/chunked_loss.py: a --tiny run measures both variants (memory in fresh
subprocesses, interleaved timings) and writes the report with its settings and ratios."""

from __future__ import annotations

import json

import pytest

from benchmarks import chunked_loss


def test_chunked_loss_benchmark_tiny(tmp_path):
    output = tmp_path / "chunked_loss.json"
    report = chunked_loss.main(["--tiny", "--rounds", "2", "--memory_repeats", "1", "--chunk_sizes", "--threads", "1",
                                "--output", str(output)])
    written = json.loads(output.read_text())
    assert written["settings"] == report["settings"]
    settings = written["settings"]
    assert settings["rows"] == settings["batch_size"] * settings["seq_len"] == 32
    assert settings["chunk_sizes"] == [settings["default_chunk_size"]]
    chunked = f"chunked@{settings['default_chunk_size']}"
    assert written["machine"]["torch"] and written["target"] == chunked_loss.TARGET
    run = written["runs"]["1"]
    assert run["threads"] == 1 and len(run["load_before"]) == len(run["load_after"]) == 3
    assert set(run["time_s"]) == {"plain", chunked}
    for entry in run["time_s"].values():
        assert entry["n"] == 2 and entry["median"] > 0 and entry["min"] <= entry["median"] <= entry["max"]
    memory = run["memory"]
    assert len(memory["control_peak_mib"]) == 1 and memory["control_peak_mib"][0] > 0
    for variant in ("plain", chunked):
        entry = memory[variant]
        assert entry["method"] in ("peak reset", "versus control") and entry["peak_mib_runs"][0] > 0
        assert len(entry["after_reset_mib_runs"]) == len(entry["versus_control_mib_runs"]) == 1
    # the two variants compute the same loss on the same inputs, in their own processes
    assert memory[chunked]["loss"] == pytest.approx(memory["plain"]["loss"], rel=1e-5)
    ratios = run["ratios_chunked_over_plain"]
    assert set(ratios) == {chunked} and ratios[chunked]["time"]["median"] > 0
    assert isinstance(ratios[chunked]["meets_target"], bool)
