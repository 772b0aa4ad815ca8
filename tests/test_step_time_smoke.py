"""Smoke test of benchmarks/step_time.py: a --tiny run writes every variant, positive timings and the ratios."""

from __future__ import annotations

import json

from benchmarks import step_time


def test_step_time_tiny(tmp_path):
    output = tmp_path / "step_time.json"
    report = step_time.main([
        "--tiny", "--repeats", "2", "--warmup", "1", "--seq_lens", "16", "--batch_size", "4",
        "--threads", "1", "--device", "cpu", "--output", str(output),
    ])
    written = json.loads(output.read_text())
    assert written["results"].keys() == report["results"].keys() == {"16"}
    result = written["results"]["16"]
    assert set(result["variants"]) == set(step_time.VARIANTS)
    for name, entry in result["variants"].items():
        assert entry["n"] == 2, name
        assert entry["median_s"] > 0 and entry["iqr_s"] >= 0 and entry["samples_per_s"] > 0, name
    assert set(result["variants"]["floor"]["parts_median_s"]) == set(step_time.PARTS)
    assert all(v > 0 for v in result["variants"]["floor"]["parts_median_s"].values())
    for name in ("prokt/floor", "prokt/naive", "prokt/kd", "kd/finetune", "kd_cached/finetune"):
        assert result["ratios"][name] > 0, name
    cache = result["kd_cache"]  # one teacher pass over the examples of a block (warm-up and timed batches of 4)
    examples = 4 * (1 + -(-2 // written["settings"]["rounds"]))
    assert cache["examples"] == examples and cache["teacher_pass_s"] > 0
    assert cache["bytes_on_disk"] > cache["logits_bytes_on_disk"] >= examples * 2 * 4  # 2 float32 logits each
    assert written["machine"]["cpu_count"] and written["settings"]["batch_size"] == 4
