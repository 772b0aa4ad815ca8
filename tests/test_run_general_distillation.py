"""`examples/general_distillation/run_general_distillation.py` end to end, offline: tiny teachers saved to folders
with a local WordPiece tokenizer, a plain text file of documents."""

from __future__ import annotations

import json
import random
from pathlib import Path

import datasets
import pytest
import torch
from safetensors.torch import load_file
from transformers import (
    AutoModel,
    AutoModelForMaskedLM,
    AutoTokenizer,
    BertConfig,
    BertForMaskedLM,
    BertModel,
    BertTokenizerFast,
    TrainerCallback,
)

from hf_prokt import ProKTTrainer
from tests.conftest import VOCAB_SIZE, load_example

SCRIPT = Path(__file__).resolve().parent.parent / "examples" / "general_distillation" / "run_general_distillation.py"
WORDS = [f"w{i}" for i in range(VOCAB_SIZE - 5)]
POSITIONS = 32  # the tiny teachers' max_position_embeddings


@pytest.fixture(scope="module")
def script():
    return load_example(SCRIPT, "run_general_distillation")


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    """A 2-layer, 16-wide teacher without a head and one with a masked-LM head, each in a folder with the
    tokenizer."""
    root = tmp_path_factory.mktemp("teachers")
    vocab = root / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS) + "\n")
    tokenizer = BertTokenizerFast(vocab=str(vocab))
    config = BertConfig(vocab_size=VOCAB_SIZE, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=POSITIONS, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)
    folders = {}
    for name, model_class in (("bare", BertModel), ("mlm", BertForMaskedLM)):
        torch.manual_seed(1)
        model_class(config).save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
        folders[name] = str(root / name)
    return folders


def write_corpus(path: Path, documents: int = 60, seed: int = 0) -> str:
    """Documents of 4-12 words, one a line, with blank lines among them (skipped by the script)."""
    rng = random.Random(seed)
    lines = []
    for index in range(documents):
        lines.append(" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12))))
        if index % 7 == 0:
            lines.append("   " if index % 2 else "")
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.fixture
def corpus(tmp_path):
    return {"train": write_corpus(tmp_path / "corpus.txt"), "validation": write_corpus(tmp_path / "dev.txt", 12, 1)}


def flags(teacher: str, out: Path, **extra) -> list[str]:
    settings = {"teacher_model_name_or_path": teacher, "student_num_layers": 1, "student_hidden_size": 8,
                "output_dir": str(out), "block_size": 16, "per_device_train_batch_size": 4,
                "per_device_eval_batch_size": 8, "learning_rate": 1e-2, "max_steps": 4, "logging_steps": 1,
                "report_to": "none", "save_strategy": "no", "use_cpu": True, "disable_tqdm": True, "seed": 0,
                **extra}
    return [item for key, value in settings.items() if value is not None for item in (f"--{key}", str(value))]


def logged_losses(out: Path) -> list[float]:
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    return [entry["loss"] for entry in history if "loss" in entry]


def test_text_file_distils_a_narrow_student_that_reloads_without_projections(script, teachers, corpus, tmp_path):
    out = tmp_path / "out"
    results = script.main(["--train_file", corpus["train"], "--validation_file", corpus["validation"],
                           "--do_train", "--do_eval",
                           *flags(teachers["bare"], out, max_steps=30, logging_steps=5)])
    losses = logged_losses(out)
    assert len(losses) == 6 and losses[-1] < 0.7 * losses[0], losses
    assert "eval_loss" in results and results["eval_loss"] > 0  # the distillation loss on the held-out blocks
    assert not any("perplexity" in key for key in results)
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    assert any("student_hidden_loss" in entry for entry in history)
    assert not any("student_distill_loss" in entry for entry in history)  # no head: no output term
    saved = json.loads((out / "eval_results.json").read_text())
    assert saved["eval_loss"] == results["eval_loss"] and saved["eval_samples"] == results["eval_samples"] > 0

    student = AutoModel.from_pretrained(out)
    assert type(student) is BertModel
    assert (student.config.hidden_size, student.config.num_hidden_layers) == (8, 1)
    keys = set(load_file(out / "model.safetensors"))
    assert keys and not any("proj" in key or "distill" in key for key in keys), sorted(keys)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert len(tokenizer) == VOCAB_SIZE and tokenizer.tokenize("w3 w4") == ["w3", "w4"]
    card = (out / "README.md").read_text()
    assert f"This model is a student built from `{teachers['bare']}`" in card
    assert f"trained by general distillation of `{teachers['bare']}` on corpus.txt" in card


@pytest.mark.parametrize("streaming", [False, True])
def test_blocks_are_the_concatenated_documents_cut_to_block_size(script, teachers, corpus, streaming):
    tokenizer = AutoTokenizer.from_pretrained(teachers["bare"])
    data_args = script.DataTrainingArguments(train_file=corpus["train"], streaming=streaming)
    raw = datasets.load_dataset("text", data_files=corpus["train"], split="train", streaming=streaming)
    blocks = script.tokenize_into_blocks(raw, tokenizer, "text", 16, data_args, "train")
    assert isinstance(blocks, datasets.IterableDataset) == streaming
    if streaming:  # fewer than 1,000 lines: one batch, cut as the whole file is
        blocks = datasets.Dataset.from_list(list(blocks))
    documents = [line for line in Path(corpus["train"]).read_text().splitlines() if line.strip()]
    stream = [token for line in documents for token in tokenizer(line)["input_ids"]]
    assert len(blocks) == len(stream) // 16
    assert [token for row in blocks["input_ids"] for token in row] == stream[:len(blocks) * 16]
    assert set(blocks.column_names) == {"input_ids", "token_type_ids", "attention_mask"}
    assert all(len(row) == 16 and sum(mask) == 16 for row, mask in zip(blocks["input_ids"], blocks["attention_mask"]))


def test_the_mlm_head_distils_on_masked_tokens_and_reloads_as_a_masked_lm(script, teachers, corpus, tmp_path):
    out = tmp_path / "out"
    results = script.main(["--train_file", corpus["train"], "--validation_split_percentage", "20", "--head", "mlm",
                           "--do_train", "--do_eval", *flags(teachers["mlm"], out, max_steps=3)])
    assert results["eval_loss"] > 0 and results["eval_samples"] > 0
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    assert any("student_distill_loss" in entry for entry in history)  # the heads' KL is a term of the loss
    student = AutoModelForMaskedLM.from_pretrained(out)
    assert type(student) is BertForMaskedLM and student.config.hidden_size == 8
    assert f"general distillation of `{teachers['mlm']}` on corpus.txt" in (out / "README.md").read_text()


def test_a_datasets_folder_without_a_validation_split_is_split_by_percentage(script, teachers, tmp_path):
    folder = tmp_path / "my-corpus"
    folder.mkdir()
    write_corpus(folder / "train.txt")  # `datasets` reads a folder of text files as a dataset with a train split
    out = tmp_path / "out"
    results = script.main(["--dataset_name", str(folder), "--validation_split_percentage", "25", "--do_train",
                           "--do_eval", *flags(teachers["bare"], out, max_steps=2)])
    whole = script.main(["--dataset_name", str(folder), "--do_train", *flags(teachers["bare"], tmp_path / "all",
                                                                              max_steps=1)])
    assert results["eval_samples"] > 0 and results["train_samples"] < whole["train_samples"]
    assert "trained by general distillation of" in (out / "README.md").read_text()
    assert "` on my-corpus (distilled" in (out / "README.md").read_text()


def test_a_checkpoint_without_a_masked_lm_head_is_refused_for_head_mlm(script, teachers, corpus, tmp_path):
    with pytest.raises(ValueError, match="has no masked-LM head.*--head none"):
        script.main(["--train_file", corpus["train"], "--head", "mlm", "--do_train",
                     *flags(teachers["bare"], tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_streaming_reads_the_text_as_it_goes_and_needs_max_steps(script, teachers, corpus, tmp_path):
    out = tmp_path / "out"
    results = script.main(["--train_file", corpus["train"], "--validation_file", corpus["validation"],
                           "--streaming", "--do_train", "--do_eval", "--measure_compression",
                           "--compression_batch_sizes", "1", "2", "--compression_repeats", "2",
                           *flags(teachers["bare"], out, max_steps=3, max_eval_samples=2)])
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 3
    assert results["eval_loss"] > 0 and "train_samples" not in results
    student = AutoModel.from_pretrained(out)
    assert student.config.hidden_size == 8
    # The student measured against the teacher on the first streamed blocks, into the results and the card.
    saved = json.loads((out / "all_results.json").read_text())
    teacher = AutoModel.from_pretrained(teachers["bare"])
    assert saved["parameter_ratio"] == teacher.num_parameters() / student.num_parameters() > 1
    assert saved["speedup_bs2"] == results["speedup_bs2"]
    assert f"| 2 | {saved['teacher_latency_ms_bs2']:.2f} | {saved['student_latency_ms_bs2']:.2f} |" in (
        out / "README.md").read_text()

    with pytest.raises(ValueError, match="--streaming .* give --max_steps N"):
        script.main(["--train_file", corpus["train"], "--streaming", "--do_train",
                     *flags(teachers["bare"], tmp_path / "unbounded", max_steps=None)])
    assert not (tmp_path / "unbounded").exists()


class StepRecorder(TrainerCallback):
    """Records the steps a run trains; with ``stop_after``, ends it there (as an interrupted run ends)."""

    def __init__(self, stop_after: int | None = None):
        self.steps, self.stop_after = [], stop_after

    def on_step_end(self, args, state, control, **kwargs):
        self.steps.append(state.global_step)
        if state.global_step == self.stop_after:
            control.should_training_stop = True


def recording(monkeypatch, script, recorder: StepRecorder) -> None:
    """The script's trainer, with ``recorder`` among its callbacks."""

    class RecordedTrainer(ProKTTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, callbacks=[recorder], **kwargs)

    monkeypatch.setattr(script, "ProKTTrainer", RecordedTrainer)


def test_two_steps_then_two_resumed_give_the_student_of_four(script, teachers, corpus, tmp_path, monkeypatch):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"

    def argv(out):
        return ["--train_file", corpus["train"], "--do_train",
                *flags(teachers["bare"], out, max_steps=4, save_strategy="steps", save_steps=2)]

    script.main(argv(straight))
    interrupted, continued = StepRecorder(stop_after=2), StepRecorder()
    recording(monkeypatch, script, interrupted)
    script.main(argv(resumed))  # the 4-step schedule, ended after step 2: checkpoint-2 is what it leaves
    assert interrupted.steps == [1, 2] and (resumed / "checkpoint-2").is_dir()
    recording(monkeypatch, script, continued)
    script.main([*argv(resumed), "--resume_from_checkpoint", "last"])
    # Only steps 3 and 4 are trained, from checkpoint-2's student, optimizer, scheduler, projections and RNG states;
    # the data order is the same (the sampler's seed, the first two batches skipped): the same student, bit for bit.
    assert continued.steps == [3, 4]
    assert logged_losses(resumed) == logged_losses(straight)
    first, second = load_file(straight / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert first.keys() == second.keys()
    assert all(torch.equal(first[key], second[key]) for key in first)


def test_an_earlier_run_is_refused_then_replaced_with_overwrite_output_dir(script, teachers, corpus, tmp_path):
    out = tmp_path / "out"
    argv = ["--train_file", corpus["train"], "--do_train", *flags(teachers["bare"], out, max_steps=1)]
    script.main(argv)
    (out / "checkpoint-7").mkdir()  # left by the earlier run
    with pytest.raises(ValueError, match="already holds a training run.*--overwrite_output_dir"):
        script.main(argv)
    assert (out / "checkpoint-7").is_dir()
    script.main([*argv, "--overwrite_output_dir"])
    assert not (out / "checkpoint-7").exists() and (out / "model.safetensors").is_file()


@pytest.mark.parametrize("extra, message", [
    (["--strategy", "prokt"], "ProKT's teacher step needs a task loss"),
    (["--block_size", str(POSITIONS + 1)], f"--block_size {POSITIONS + 1} is above the position limit"),
    (["--head", "mlm", "--strategy", "prokt"], "--strategy prokt with --head mlm is not general distillation"),
    (["--streaming", "--validation_split_percentage", "5"], "with --streaming give --validation_file"),
    (["--do_eval"], "--do_eval needs validation data: give --validation_file, or --validation_split_percentage"),
])
def test_set_ups_that_cannot_work_are_refused_before_anything_is_written(script, teachers, corpus, tmp_path, extra,
                                                                         message):
    with pytest.raises(ValueError, match=message):
        script.main(["--train_file", corpus["train"], "--do_train", *flags(teachers["bare"], tmp_path / "out"), *extra])
    assert not (tmp_path / "out").exists()


def test_distilling_attention_maps_loads_both_models_with_eager_attention(script, teachers, tmp_path):
    argv = ["--train_file", "corpus.txt", *flags(teachers["bare"], tmp_path / "out")]
    for weight, expected in (("0", "sdpa"), ("1", "eager")):
        model_args, _, training_args = script.parse_arguments([*argv, "--attention_distill_weight", weight])
        teacher, student = script.build_models(model_args, training_args)
        assert (teacher.config._attn_implementation, student.config._attn_implementation) == (expected, expected)


def test_no_text_given_is_refused(script, teachers, tmp_path):
    with pytest.raises(ValueError, match="Give the text: --dataset_name"):
        script.main(["--do_train", *flags(teachers["bare"], tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_the_defaults_are_those_of_general_distillation_and_flags_override_them(script, tmp_path):
    _, _, training_args = script.parse_arguments(["--train_file", "corpus.txt", "--output_dir", str(tmp_path)])
    assert training_args.strategy == "kd"
    assert (training_args.hidden_distill_weight, training_args.embedding_distill_weight,
            training_args.attention_distill_weight) == (1.0, 1.0, 0.0)
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"train_file": "corpus.txt", "output_dir": str(tmp_path),
                                  "embedding_distill_weight": 0.0}))
    _, _, training_args = script.parse_arguments([str(config), "--hidden_distill_weight", "0.5"])
    assert (training_args.hidden_distill_weight, training_args.embedding_distill_weight) == (0.5, 0.0)
