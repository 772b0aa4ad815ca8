"""`benchmarks/teacher_cost.py` on tiny models: it runs, and its memory accounting adds up by hand."""

import json

from benchmarks import teacher_cost


def test_teacher_cost_smoke(tmp_path):
    output = tmp_path / "teacher_cost.json"
    assert teacher_cost.main(["--tiny", "--variants", "prokt", "prokt_lora", "kd_bf16", "--steps", "1",
                              "--warmup", "1", "--output", str(output)]) == 0
    rows = {row["variant"]: row for row in json.loads(output.read_text())["rows"]}
    full, lora, bf16 = rows["prokt"], rows["prokt_lora"], rows["kd_bf16"]
    for row in (full, lora):
        # AdamW keeps exp_avg and exp_avg_sq (fp32) per trainable weight, and one fp32 step per tensor.
        expected = 8 * row["teacher_trainable_parameters"] + 4 * row["teacher_trainable_tensors"]
        assert round(row["teacher_optimizer_state_mib"] * 2**20) == expected
    assert lora["teacher_trainable_parameters"] * 10 < full["teacher_trainable_parameters"]
    assert bf16["teacher_optimizer_state_mib"] == 0 and bf16["teacher_trainable_parameters"] == 0
    assert bf16["teacher_weights_mib"] * 2 == full["teacher_weights_mib"]  # every weight cast to 2 bytes
    assert all(row["seconds_per_step"] > 0 for row in rows.values())
