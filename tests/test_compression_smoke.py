"""`benchmarks/compression.py` on tiny models: it runs, and its figures are consistent."""

import json

from benchmarks import compression


def test_compression_benchmark_smoke(tmp_path):
    output = tmp_path / "compression.json"
    compression.main(["--tiny", "--repeats", "2", "--warmup", "1", "--output", str(output)])
    results = json.loads(output.read_text())
    report, cache = results["compression"], results["teacher_logits_cache"]
    assert report["teacher_parameters"] > report["student_parameters"]  # 4 layers -> 2
    assert report["speedup_bs32"] == report["teacher_latency_ms_bs32"] / report["student_latency_ms_bs32"]
    assert cache["examples"] == 200 and cache["teacher_pass_seconds"] > 0
    assert cache["logits_bytes"] >= 4 * 2 * cache["examples"]  # two float32 logits per example, at least
