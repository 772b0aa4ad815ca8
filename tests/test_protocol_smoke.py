"""`benchmarks/sst2_protocol.py` and `benchmarks/protocol_summary.py` on tiny BERTs and made-up results (offline)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shlex
import subprocess
from pathlib import Path

import pytest

from benchmarks import protocol_summary, sst2_protocol

PLAN = Path(__file__).resolve().parent.parent / "benchmarks" / "protocol_plan.sh"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _in_unit_interval(value) -> bool:
    return isinstance(value, float) and 0.0 <= value <= 1.0


def test_one_tiny_run_per_recipe_then_the_summary(tmp_path, capsys):
    for recipe in sst2_protocol.RECIPES:
        assert sst2_protocol.main(["--tiny", "--recipe", recipe, "--output_dir", str(tmp_path)]) == 0
    anchor = sst2_protocol.resolve_anchor(None)["used"]
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["finetune_L2_steps24_n64_s0.json", "kd_a1_L2_steps24_n64_s0.json",
                     f"prokt-{anchor}_a1_L2_steps24_n64_s0.json"]  # nothing else: no temporary left behind

    runs = {}
    for name in files:
        run = json.loads((tmp_path / name).read_text())
        runs[run["recipe"]] = run
        assert run["name"] == name[:-len(".json")] and run["setting"] == "L2_steps24_n64" and run["seed"] == 0
        assert run["steps"] == 24 and run["hyperparameters"]["steps"] == 24
        # Evaluations every 10 steps and after the last one.
        assert [p["step"] for p in run["curve"]] == [10, 20, 24]
        accuracies = [p["student_accuracy"] for p in run["curve"]]
        assert all(_in_unit_interval(a) for a in accuracies)
        student = run["student"]
        assert student["last_accuracy"] == accuracies[-1] and student["last_step"] == 24
        assert student["best_accuracy"] == max(accuracies)
        assert student["best_step"] == run["curve"][accuracies.index(max(accuracies))]["step"]
        assert run["train_time_s"] > 0 and run["eval_time_s"] > 0 and run["train_cpu_time_s"] > 0
        assert run["seconds_per_step"] == pytest.approx(run["train_time_s"] / 24)
        settings = run["hyperparameters"]
        for key, value in (("student_learning_rate", 3e-3), ("batch_size", 16), ("max_length", 16),
                           ("warmup_ratio", 0.0), ("weight_decay", 0.0), ("max_grad_norm", 1.0),
                           ("zero_init_classifier", True), ("seed", 0), ("data_seed", 0)):
            assert settings[key] == value, key
        assert run["machine"]["torch_threads"] >= 1 and "cpu_count" in run["machine"]
        assert run["data"]["train_examples"] == 64 and run["data"]["validation_examples"] == 48
        assert [log["step"] for log in run["training_logs"]] == list(range(2, 25, 2))
        student_model = run["models"]["student"]
        assert student_model["layers"] == 2 and student_model["head"] == "freshly initialised"
        assert student_model["head_zeroed"] is True

    assert runs["finetune"]["teacher"] is None and runs["finetune"]["models"]["teacher"] is None
    kd = runs["kd"]
    assert kd["alpha"] == 1.0 and kd["teacher"]["frozen"] and _in_unit_interval(kd["teacher"]["last_accuracy"])
    assert kd["models"]["teacher"]["head"] == "loaded from the checkpoint" and not kd["models"]["teacher"]["trained"]
    prokt = runs["prokt"]
    assert prokt["prokt_anchor"] == anchor and prokt["hyperparameters"]["prokt_anchor"]["used"] == anchor
    assert prokt["hyperparameters"]["teacher_learning_rate"] == 3e-3 and prokt["hyperparameters"]["prokt_lambda"] == 0.4
    assert all(_in_unit_interval(p["teacher_accuracy"]) for p in prokt["curve"])
    assert prokt["teacher"]["last_accuracy"] == prokt["curve"][-1]["teacher_accuracy"]
    assert prokt["models"]["teacher"]["head"] == "freshly initialised" and prokt["models"]["teacher"]["head_zeroed"]
    assert all("kl_student_teacher" in log for log in prokt["training_logs"])
    # The same seed reads the same batches in the same order, whatever the recipe.
    fingerprints = {run["data"]["data_order_sha1"] for run in runs.values()}
    assert len(fingerprints) == 1

    capsys.readouterr()
    assert protocol_summary.main(["--results_dir", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert f"prokt-{anchor}_a1 - kd_a1 | 0 | " in printed and "(1 seed: no CI)" in printed
    summary = json.loads((tmp_path / "summary.json").read_text())
    pairs = summary["settings"]["L2_steps24_n64"]["pairs"]
    assert [(p["prokt"], p["baseline"]) for p in pairs] == [(f"prokt-{anchor}_a1", "finetune"),
                                                            (f"prokt-{anchor}_a1", "kd_a1")]
    for pair in pairs:
        assert pair["same_data_order"] is True and pair["last_accuracy"]["ci95"] is None
        baseline = runs["finetune" if pair["baseline"] == "finetune" else "kd"]
        expected = prokt["student"]["last_accuracy"] - baseline["student"]["last_accuracy"]
        assert pair["last_accuracy"]["mean"] == pytest.approx(expected)
    for name in ("summary.md", "curves_L2_steps24_n64.png", "gap_L2_steps24_n64.png"):
        assert (tmp_path / name).exists(), name
    assert (tmp_path / "curves_L2_steps24_n64.png").read_bytes()[:8] == PNG_MAGIC


def made_up_run(folder: Path, recipe: str, variant: str, seed: int, last: float, best: float,
                curve: list[tuple[int, float]], setting: str = "L2", gpu: str | None = None) -> None:
    run = {"machine": {"gpu": gpu} if gpu else {"cpu_count": 2},
           "name": f"{variant}_{setting}_s{seed}", "recipe": recipe, "variant": variant, "setting": setting,
           "seed": seed, "student": {"last_accuracy": last, "last_step": curve[-1][0], "best_accuracy": best,
                                     "best_step": max(curve, key=lambda p: p[1])[0]},
           "teacher": None, "curve": [{"step": s, "student_accuracy": a} for s, a in curve],
           "train_time_s": 60.0, "data": {"data_order_sha1": f"order of seed {seed}"}, "models": None}
    (folder / f"{run['name']}.json").write_text(json.dumps(run))


def test_summary_paired_differences_equal_the_hand_computed_ones(tmp_path, capsys):
    prokt = {0: (0.80, 0.81), 1: (0.82, 0.83), 2: (0.79, 0.82)}  # seed: (last, best)
    kd = {0: (0.78, 0.80), 1: (0.81, 0.81), 2: (0.80, 0.80)}
    for seed, (last, best) in prokt.items():
        made_up_run(tmp_path, "prokt", "prokt-eval_a0.5", seed, last, best, [(100, best), (200, last)])
    for seed, (last, best) in kd.items():
        made_up_run(tmp_path, "kd", "kd_a0.5", seed, last, best, [(100, best), (200, last)])
    made_up_run(tmp_path, "finetune", "finetune", 0, 0.77, 0.79, [(100, 0.79), (200, 0.77)])
    made_up_run(tmp_path, "finetune", "finetune", 7, 0.70, 0.70, [(100, 0.70), (200, 0.70)])
    (tmp_path / "notes.json").write_text(json.dumps({"something": "else"}))  # not a run: skipped

    assert protocol_summary.main(["--results_dir", str(tmp_path), "--no_plots"]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((tmp_path / "summary.json").read_text())
    setting = summary["settings"]["L2"]
    (vs_finetune, vs_kd) = setting["pairs"]
    assert (vs_kd["prokt"], vs_kd["baseline"]) == ("prokt-eval_a0.5", "kd_a0.5")

    # Last accuracy, ProKT - KD on seeds 0, 1, 2: +0.02, +0.01, -0.01.
    mean = (0.02 + 0.01 - 0.01) / 3
    sd = math.sqrt(((0.02 - mean) ** 2 + (0.01 - mean) ** 2 + (-0.01 - mean) ** 2) / 2)
    half = 4.302652729749464 * sd / math.sqrt(3)  # t(0.975, 2 degrees of freedom)
    last = vs_kd["last_accuracy"]
    assert last["seeds"] == ["0", "1", "2"] and last["n"] == 3
    assert last["differences"] == pytest.approx([0.02, 0.01, -0.01])
    assert last["mean"] == pytest.approx(mean) and last["sd"] == pytest.approx(sd)
    assert last["ci95"] == pytest.approx([mean - half, mean + half])
    # Best-dev: +0.01, +0.02, +0.02.
    best = vs_kd["best_accuracy"]
    best_mean = 0.05 / 3
    best_sd = math.sqrt(((0.01 - best_mean) ** 2 + 2 * (0.02 - best_mean) ** 2) / 2)
    assert best["mean"] == pytest.approx(best_mean) and best["sd"] == pytest.approx(best_sd)
    assert best["ci95"][1] - best["ci95"][0] == pytest.approx(2 * 4.302652729749464 * best_sd / math.sqrt(3))
    assert f"{mean:+.4f} [{mean - half:+.4f}, {mean + half:+.4f}]" in printed
    # The gap at each evaluated step: step 100 is the best-dev point, step 200 the last.
    assert [g["step"] for g in vs_kd["gap_over_steps"]] == [100, 200]
    assert [g["mean"] for g in vs_kd["gap_over_steps"]] == pytest.approx([best_mean, mean])
    assert vs_kd["same_data_order"] is True

    # Fine-tuning shares seed 0 only: one difference, no interval, and the table says so.
    assert vs_finetune["last_accuracy"]["seeds"] == ["0"]
    assert vs_finetune["last_accuracy"]["mean"] == pytest.approx(0.80 - 0.77)
    assert vs_finetune["last_accuracy"]["sd"] is None and vs_finetune["last_accuracy"]["ci95"] is None
    assert "+0.0300 (1 seed: no CI)" in printed
    # Per-group statistics: sample standard deviation over the seeds.
    kd_row = setting["variants"]["kd_a0.5"]
    assert kd_row["last_accuracy"]["mean"] == pytest.approx(0.79667, abs=1e-5)
    assert kd_row["last_accuracy"]["sd"] == pytest.approx(math.sqrt(((0.78 - 0.79667) ** 2 + (0.81 - 0.79667) ** 2
                                                                     + (0.80 - 0.79667) ** 2) / 2), abs=1e-5)
    assert setting["variants"]["finetune"]["seeds"] == ["0", "7"]
    assert summary["runs"] == sorted(p.name for p in tmp_path.glob("*_s*.json"))


def test_pooled_folders_pair_a_seed_only_with_runs_of_its_own_platform(tmp_path, capsys):
    cpu, gpu, pooled = tmp_path / "cpu", tmp_path / "gpu", tmp_path / "pooled"
    cpu.mkdir(), gpu.mkdir()
    made_up_run(cpu, "prokt", "prokt-eval_a0.5", 0, 0.80, 0.80, [(100, 0.80)])
    made_up_run(cpu, "kd", "kd_a1", 0, 0.78, 0.78, [(100, 0.78)])
    made_up_run(cpu, "finetune", "finetune", 1, 0.75, 0.75, [(100, 0.75)])
    made_up_run(gpu, "prokt", "prokt-eval_a0.5", 0, 0.84, 0.84, [(100, 0.84)], gpu="NVIDIA H200")
    made_up_run(gpu, "kd", "kd_a1", 0, 0.85, 0.85, [(100, 0.85)], gpu="NVIDIA H200")
    made_up_run(gpu, "finetune", "finetune", 0, 0.81, 0.81, [(100, 0.81)], gpu="NVIDIA H200")

    with pytest.raises(SystemExit):  # two folders and nowhere named for the pooled summary
        protocol_summary.main(["--results_dir", str(cpu), str(gpu), "--no_plots"])
    assert protocol_summary.main(["--results_dir", str(cpu), str(gpu), "--summary_dir", str(pooled),
                                  "--no_plots"]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((pooled / "summary.json").read_text())
    vs_finetune, vs_kd = summary["settings"]["L2"]["pairs"]
    # Seed 0 ran on both platforms: two replicates, each paired with the KD run of its own platform.
    assert vs_kd["last_accuracy"]["seeds"] == ["0", "0 @ NVIDIA H200"]
    assert vs_kd["last_accuracy"]["differences"] == pytest.approx([0.80 - 0.78, 0.84 - 0.85])
    # Fine-tuning seed 1 on the CPU has no ProKT partner; seed 0 on the GPU pairs with the GPU's ProKT only.
    assert vs_finetune["last_accuracy"]["seeds"] == ["0 @ NVIDIA H200"]
    assert vs_finetune["last_accuracy"]["mean"] == pytest.approx(0.84 - 0.81)
    assert summary["settings"]["L2"]["variants"]["finetune"]["seeds"] == ["1", "0 @ NVIDIA H200"]
    assert "| finetune | 1, 0 @ NVIDIA H200 |" in printed
    assert os.path.join("..", "gpu", "kd_a1_L2_s0.json") in summary["runs"]
    assert not (cpu / "summary.json").exists() and not (gpu / "summary.json").exists()


def test_summary_refuses_an_empty_folder(tmp_path):
    with pytest.raises(SystemExit, match="no run JSON"):
        protocol_summary.main(["--results_dir", str(tmp_path)])


@pytest.mark.parametrize("argv, message", [
    (["--recipe", "kd"], "--recipe kd needs --kd_teacher"),
    (["--recipe", "finetune", "--alpha", "0.5"], "finetune has none"),
    (["--recipe", "kd", "--prokt_anchor", "eval", "--tiny"], "--prokt_anchor applies to --recipe prokt only"),
    (["--recipe", "prokt", "--prokt_teacher", "/nonexistent"], "no config.json there"),
    (["--recipe", "prokt", "--alpha", "1.5"], "outside"),
    (["--recipe", "finetune", "--hidden_distill_weight", "1"], "finetune has none"),
    (["--recipe", "kd", "--tiny", "--lambda_warmup_steps", "10"], "--recipe prokt only"),
    (["--recipe", "prokt", "--student_source_layers", "1"], "names 1 layers for a 2-layer student"),
    (["--recipe", "prokt", "--student_source_layers", "a,b"], "0-based layer numbers"),
])
def test_bad_arguments_are_refused_before_anything_runs(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit):
        sst2_protocol.main([*argv, "--output_dir", str(tmp_path)])
    assert message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_skip_existing_leaves_a_finished_run_alone(tmp_path):
    argv = ["--tiny", "--recipe", "finetune", "--output_dir", str(tmp_path), "--skip_existing"]
    finished = tmp_path / f"{sst2_protocol.parse_args(argv).name}.json"
    finished.write_text("{}")
    assert sst2_protocol.main(argv) == 0
    assert finished.read_text() == "{}" and len(list(tmp_path.iterdir())) == 1


def test_run_names_show_what_differs():
    def name(*argv):
        return sst2_protocol.parse_args(["--recipe", *argv]).name

    anchor = sst2_protocol.resolve_anchor(None)["used"]
    assert name("finetune") == "finetune_L2_s0"
    assert name("prokt", "--alpha", "0.5", "--seed", "2", "--student_layers", "4") == f"prokt-{anchor}_a0.5_L4_s2"
    assert name("finetune", "--student_lr", "5e-5", "--max_steps", "600", "--no-zero_init_classifier") == (
        "finetune_student_lr5e-05_no-zero_init_classifier_L2_steps600_s0")
    assert name("finetune", "--train_samples", "8000", "--tag", "x") == "finetune_x_L2_n8000_s0"
    assert name("prokt", "--student_source_layers", "3,5", "--hidden_distill_weight", "1", "--alpha_warmup_steps",
                "200", "--lambda_warmup_steps", "100") == (
        f"prokt-{anchor}_a1_layers3-5_hidden_distill_weight1_alpha_warmup_steps200_lambda_warmup_steps100_L2_s0")


def test_the_variation_flags_reach_the_models_and_the_trainer(tmp_path):
    """--student_source_layers picks the copied layers; --hidden_distill_weight and the ramps reach the training
    logs (one tiny ProKT run)."""
    argv = ["--tiny", "--recipe", "prokt", "--alpha", "0.5", "--student_source_layers", "1,3", "--max_steps", "6",
            "--eval_steps", "0", "--hidden_distill_weight", "1", "--alpha_warmup_steps", "4",
            "--lambda_warmup_steps", "2", "--output_dir", str(tmp_path)]
    assert sst2_protocol.main(argv) == 0
    run = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert run["models"]["student"]["source_layers"] == [1, 3]
    assert run["hyperparameters"]["student_source_layers"] == [1, 3]
    logs = run["training_logs"]
    assert [log["distill_alpha"] for log in logs] == [0.125, 0.375, 0.5]  # logged every 2 steps: steps 1, 3, 5
    assert [log["prokt_lambda"] for log in logs] == [0.2, 0.4, 0.4]
    assert all(log["student_hidden_loss"] > 0 for log in logs)


@dataclasses.dataclass
class _ArgumentsWithAnchor:
    prokt_anchor: str = "eval"


@dataclasses.dataclass
class _ArgumentsWithoutAnchor:
    strategy: str = "prokt"


def test_the_anchor_is_passed_only_when_the_library_has_the_field(monkeypatch):
    monkeypatch.setattr(sst2_protocol, "ProKTTrainingArguments", _ArgumentsWithAnchor)
    assert sst2_protocol.resolve_anchor(None) == {"requested": None, "used": "eval", "passed": True}
    assert sst2_protocol.resolve_anchor("train") == {"requested": "train", "used": "train", "passed": True}
    monkeypatch.setattr(sst2_protocol, "ProKTTrainingArguments", _ArgumentsWithoutAnchor)
    assert sst2_protocol.resolve_anchor(None) == {"requested": None, "used": "train", "passed": False}
    assert sst2_protocol.resolve_anchor("train")["passed"] is False
    with pytest.raises(ValueError, match="no ProKTTrainingArguments.prokt_anchor"):
        sst2_protocol.resolve_anchor("eval")


def plan_runs(kd_teacher: str) -> list[tuple[str, list[str]]]:
    """``(name, arguments)`` of every run line of benchmarks/protocol_plan.sh."""
    runs = []
    for line in PLAN.read_text().splitlines():
        if line.startswith("run "):
            words = shlex.split(line.replace('"$KD_TEACHER"', kd_teacher))
            runs.append((words[1], words[2:]))
    return runs


def test_the_plan_names_each_run_as_the_harness_does(tmp_path, monkeypatch):
    monkeypatch.setattr(sst2_protocol, "ProKTTrainingArguments", _ArgumentsWithAnchor)  # the plan asks for both
    kd_teacher = tmp_path / "kd_teacher_minilm_sst2"  # the plan's default folder name, which run names show
    kd_teacher.mkdir()
    (kd_teacher / "config.json").write_text("{}")  # --kd_teacher must be a model folder
    runs = plan_runs(str(kd_teacher))
    assert len(runs) == 52
    names = [name for name, _ in runs]
    assert len(set(names)) == len(names)
    for name, arguments in runs:
        assert sst2_protocol.parse_args(arguments).name == name
    assert {"prokt-eval_a0.5_L2_s1", "kd_a1_L2_s2", "kd_a1_L4_s0", "prokt-train_a0.5_L2_s0",
            "kd_a1_L2_steps300_s0", "prokt-eval_a0.5_L2_steps700_s0", "prokt-eval_a0.5_L1_s0", "prokt-eval_a0.5_L4_s2",
            "prokt-eval_a0.5_teacher-kd_teacher_minilm_sst2_L2_s0", "kd_a1_layers2-5_L2_s0",
            "prokt-eval_a0.5_alpha_warmup_steps200_L2_s0", "kd_a1_hidden_distill_weight1_L2_s0",
            "prokt-eval_a0.5_L4_s3", "prokt-eval_a0.5_hidden_distill_weight1_L2_s2"} <= set(names)


@pytest.mark.parametrize("weight_init", ["teacher", "random"])
def test_a_narrower_student_is_selected_or_drawn_and_named_by_its_width(tmp_path, weight_init):
    # The tiny pretrained model is 32 wide with 2 heads of 16: a 16-wide student keeps one head whole.
    argv = ["--tiny", "--recipe", "finetune", "--student_hidden_size", "16", "--student_weight_init", weight_init,
            "--output_dir", str(tmp_path)]
    assert sst2_protocol.main(argv) == 0
    variant = "finetune" if weight_init == "teacher" else "finetune_random-init"
    run = json.loads((tmp_path / f"{variant}_L2_H16_steps24_n64_s0.json").read_text())
    assert run["setting"] == "L2_H16_steps24_n64"
    student = run["models"]["student"]
    assert (student["hidden_size"], student["intermediate_size"], student["num_attention_heads"]) == (16, 32, 1)
    assert student["weight_init"] == weight_init
    assert student["source_layers"] == ([0, 2] if weight_init == "teacher" else None)


def test_narrow_student_flags_are_checked():
    with pytest.raises(SystemExit):
        sst2_protocol.parse_args(["--tiny", "--recipe", "finetune", "--student_intermediate_size", "64"])
    with pytest.raises(SystemExit):
        sst2_protocol.parse_args(["--tiny", "--recipe", "finetune", "--student_weight_init", "random",
                                  "--student_source_layers", "0,1"])


def test_the_dual_constraint_reaches_the_trainer_and_the_run_name(tmp_path):
    argv = ["--tiny", "--recipe", "prokt", "--prokt_constraint", "dual", "--prokt_epsilon", "0.05",
            "--output_dir", str(tmp_path)]
    args = sst2_protocol.parse_args(argv)
    assert "_dual_eps0.05_" in args.name
    trainer_args = sst2_protocol.training_arguments(args, str(tmp_path), "prokt", 4)
    assert (trainer_args.prokt_constraint, trainer_args.prokt_epsilon) == ("dual", 0.05)
    settings = sst2_protocol.constraint_settings(args)
    assert settings["prokt_constraint"] == "dual" and settings["prokt_epsilon"] == 0.05
    assert settings["dual_lr"] == trainer_args.dual_lr and settings["dual_init"] == trainer_args.dual_init
    with pytest.raises(SystemExit):
        sst2_protocol.parse_args(["--tiny", "--recipe", "kd", "--prokt_constraint", "dual"])
    with pytest.raises(SystemExit):
        sst2_protocol.parse_args(["--tiny", "--recipe", "prokt", "--prokt_epsilon", "0.1"])


TINYBERT_PLAN = PLAN.parent / "tinybert_plan.sh"


def test_the_tinybert_plan_names_each_run_as_the_harness_does(tmp_path, monkeypatch):
    # The plan's students and KD teacher, as folders whose config.json the harness reads (widths name the runs).
    monkeypatch.setattr(sst2_protocol, "ProKTTrainingArguments", _ArgumentsWithAnchor)
    runs_dir, kd_teacher = tmp_path / "runs", tmp_path / "kd_teacher_minilm_sst2"
    for folder, config in ((runs_dir / "gd_L4_H192", {"hidden_size": 192}),
                           (runs_dir / "gd_L4_H312", {"hidden_size": 312}), (kd_teacher, {})):
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(json.dumps(config))
    env = {**os.environ, "RUNS": str(runs_dir), "KD_TEACHER": str(kd_teacher), "RESULTS": str(tmp_path / "res")}
    listing = subprocess.run(["bash", str(TINYBERT_PLAN), "--list"], env=env, capture_output=True, text=True,
                             check=True, cwd=PLAN.parent.parent).stdout.splitlines()
    stages = [line for line in listing if "run_general_distillation.py" in line]
    assert [line.split(" ")[0] for line in stages] == ["gd_L4_H192", "gd_L4_H312"]
    assert all("--student_num_layers 4" in line and "--head none" in line for line in stages)
    runs = [line for line in listing if "benchmarks.sst2_protocol" in line]
    assert len(runs) == 22 and len(listing) == 24
    names = []
    for line in runs:
        name, command = line.split(" [todo]: ")
        arguments = shlex.split(command)[3:]  # after `python -m benchmarks.sst2_protocol`
        assert sst2_protocol.parse_args(arguments).name == name
        names.append(name)
    assert len(set(names)) == len(names)
    assert {"kd_a1_random-init_L4_H192_s0", "kd_a1_L4_H192_s2", "prokt-eval_a0.5_init-gd_L4_H192_L4_H192_s1",
            "kd_a1_init-gd_L4_H312_L4_H312_s0", "prokt-eval_a0.5_dual_eps0.02_L2_steps3790_s0"} <= set(names)


def test_student_sizes_measures_every_shape_against_the_teacher(tmp_path):
    from benchmarks import student_sizes

    output = tmp_path / "sizes.json"
    results = student_sizes.main(["--tiny", "--repeats", "1", "--warmup", "0", "--batch_sizes", "1", "2",
                                  "--seq_len", "8", "--output", str(output)])
    assert json.loads(output.read_text()) == json.loads(json.dumps(results))
    full, narrow = results["students"]["L2"], results["students"]["L2_H16"]
    # Tiny BERT: vocab 100, positions 128, types 2; a layer of width H and feed-forward 2H; pooler; 2 labels.
    def parameters(hidden, layers):
        embeddings = (100 + 128 + 2) * hidden + 2 * hidden
        layer = 4 * (hidden * hidden + hidden) + 2 * (2 * hidden * hidden) + 3 * hidden + 4 * hidden
        return embeddings + layers * layer + hidden * hidden + hidden + 2 * hidden + 2
    assert full["student_parameters"] == parameters(32, 2) and narrow["student_parameters"] == parameters(16, 2)
    assert full["teacher_parameters"] == narrow["teacher_parameters"] == parameters(32, 4)
    assert (narrow["hidden_size"], narrow["intermediate_size"], narrow["num_attention_heads"]) == (16, 32, 1)
    assert narrow["student_size_bytes"] < full["student_size_bytes"] < full["teacher_size_bytes"]
