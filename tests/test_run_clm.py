"""`examples/language_modeling/run_clm.py` end to end, offline: a tiny GPT-2 teacher saved to a folder with a
word-level tokenizer built here (no pad token, as GPT-2's), text files and prompt/completion files."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import datasets
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from hf_prokt.scripting.perplexity import next_token_loss_sums
from tests.conftest import load_example
from tests.test_hub_and_card import FakeHub

SCRIPT = Path(__file__).resolve().parent.parent / "examples" / "language_modeling" / "run_clm.py"
WORDS = [f"w{i}" for i in range(30)]
POSITIONS = 32


@pytest.fixture(scope="module")
def script():
    return load_example(SCRIPT, "run_clm")


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> str:
    """A 2-layer GPT-2 (width 16, 32 positions) and its word-level tokenizer (``<unk>``, ``<eos>``, 30 words)."""
    folder = tmp_path_factory.mktemp("teacher")
    vocab = {"<unk>": 0, "<eos>": 1, **{word: index + 2 for index, word in enumerate(WORDS)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", eos_token="<eos>")
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(vocab), n_embd=16, n_layer=2, n_head=2, n_positions=POSITIONS,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=1, eos_token_id=1)
    GPT2LMHeadModel(config).save_pretrained(folder)
    return str(folder)


def documents(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(WORDS[(start + step) % 30] for step in range(rng.randint(4, 10)))
            for start in (rng.randrange(30) for _ in range(count))]


@pytest.fixture
def fake_hub(monkeypatch) -> FakeHub:
    hub = FakeHub()
    monkeypatch.setattr("transformers.trainer.hf_api", lambda: hub)
    monkeypatch.setattr("huggingface_hub.HfApi", lambda *args, **kwargs: hub)
    return hub


@pytest.fixture
def text(tmp_path) -> dict:
    (tmp_path / "train.txt").write_text("\n".join(documents(40, 0)) + "\n\n")
    (tmp_path / "dev.txt").write_text("\n".join(documents(10, 1)) + "\n")
    return {"train": str(tmp_path / "train.txt"), "validation": str(tmp_path / "dev.txt")}


def write_pairs(path: Path, count: int, seed: int, prompt: str = "prompt", completion: str = "completion") -> str:
    rng = random.Random(seed)
    with open(path, "w") as f:
        for _ in range(count):
            start = rng.randrange(30)
            f.write(json.dumps({prompt: " ".join(WORDS[(start + i) % 30] for i in range(rng.randint(2, 5))),
                                completion: " ".join(WORDS[(start + 5 + i) % 30] for i in range(rng.randint(1, 4)))})
                    + "\n")
    return str(path)


def flags(teacher: str, out: Path, **extra) -> list[str]:
    settings = {"teacher_model_name_or_path": teacher, "student_num_layers": 1, "output_dir": str(out),
                "block_size": 16, "per_device_train_batch_size": 4, "per_device_eval_batch_size": 3,
                "learning_rate": 1e-2, "teacher_learning_rate": 1e-2, "max_steps": 3, "logging_steps": 1,
                "report_to": "none", "save_strategy": "no", "use_cpu": True, "disable_tqdm": True, "seed": 0,
                "sample_max_new_tokens": 4, **extra}
    return [item for key, value in settings.items() if value is not None for item in (f"--{key}", str(value))]


def reloads_and_generates(out: Path, prompt: str) -> str:
    student = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert type(student) is GPT2LMHeadModel and student.config.n_layer == 1
    assert tokenizer.pad_token == "<eos>"  # set by the script, saved with the student
    inputs = tokenizer(prompt, return_tensors="pt")
    output = student.generate(**inputs, do_sample=False, max_new_tokens=4, pad_token_id=tokenizer.pad_token_id,
                              eos_token_id=tokenizer.eos_token_id)
    return tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)


@pytest.mark.parametrize("strategy", ["kd", "prokt"])
def test_text_blocks_distil_a_student_that_reloads_generates_and_reports_perplexity(script, teacher, text, tmp_path,
                                                                                      strategy):
    out = tmp_path / "out"
    results = script.main(["--train_file", text["train"], "--validation_file", text["validation"], "--do_train",
                           "--do_eval", *flags(teacher, out, strategy=strategy)])
    saved = json.loads((out / "eval_results.json").read_text())
    # Every block counts block_size - 1 predictions: the Trainer's row mean is the token mean.
    assert saved["eval_perplexity"] == pytest.approx(math.exp(saved["eval_loss"]), rel=1e-5)
    assert saved["eval_token_loss"] == pytest.approx(saved["eval_loss"], rel=1e-5)
    assert ("eval_teacher_perplexity" in saved) == (strategy == "prokt")
    if strategy == "prokt":
        assert saved["eval_teacher_perplexity"] == pytest.approx(math.exp(saved["eval_teacher_loss"]), rel=1e-5)
    first_dev = Path(text["validation"]).read_text().splitlines()[0]
    assert results["sample_prompt"] == first_dev  # fewer than 8 words: the whole document
    assert reloads_and_generates(out, results["sample_prompt"]) == results["sample_generated"]
    card = (out / "README.md").read_text()
    assert "pipeline_tag: text-generation" in card and "type: text-generation" in card
    assert f"- Prompt: `{first_dev}`\n- Generated: `{results['sample_generated']}`" in card
    assert "at most 4 new tokens" in card


def test_blocks_are_the_documents_with_eos_cut_to_block_size_every_token_a_label(script, teacher, text):
    tokenizer = AutoTokenizer.from_pretrained(teacher)
    data_args = script.DataTrainingArguments(train_file=text["train"])
    raw = datasets.load_dataset("text", data_files=text["train"], split="train")
    blocks = script.tokenize_into_blocks(raw, tokenizer, "text", 16, data_args, "train", end_of_document=1)
    lines = [line for line in Path(text["train"]).read_text().splitlines() if line.strip()]
    stream = [token for line in lines for token in [*tokenizer(line)["input_ids"], 1]]
    assert len(blocks) == len(stream) // 16
    assert [token for row in blocks["input_ids"] for token in row] == stream[:len(blocks) * 16]


def test_prompt_completion_pairs_train_the_completion_only(script, teacher, tmp_path):
    train = write_pairs(tmp_path / "train.jsonl", 24, 0, "question", "answer")
    out = tmp_path / "out"
    results = script.main(["--train_file", train, "--validation_split_percentage", "25", "--prompt_column",
                           "question", "--completion_column", "answer", "--do_train", "--do_eval",
                           *flags(teacher, out, strategy="kd")])
    tokenizer = AutoTokenizer.from_pretrained(teacher)
    rows = [json.loads(line) for line in Path(train).read_text().splitlines()]
    held_out = rows[:6]  # the first 25 %
    assert results["eval_samples"] == 6 and results["train_samples"] == 18
    assert results["sample_prompt"] == held_out[0]["question"]
    assert reloads_and_generates(out, held_out[0]["question"]) == results["sample_generated"]

    # The rows as the script builds them: prompt -100, completion and EOS labelled.
    pairs = script.tokenize_pairs(datasets.Dataset.from_list(held_out), tokenizer, "question", "answer", 16, "v")
    prompt = tokenizer(held_out[0]["question"])["input_ids"]
    answer = tokenizer(held_out[0]["answer"], add_special_tokens=False)["input_ids"]
    assert pairs[0]["input_ids"] == prompt + answer + [1]
    assert pairs[0]["labels"] == [-100] * len(prompt) + answer + [1]

    # The perplexity is over the completion tokens of the whole set, computed here by hand from the saved student.
    student = AutoModelForCausalLM.from_pretrained(out).eval()
    total, count = 0.0, 0
    for row in pairs:
        with torch.no_grad():
            logits = student(input_ids=torch.tensor([row["input_ids"]])).logits
        sums = next_token_loss_sums(logits, torch.tensor([row["labels"]]))
        total, count = total + sums[0, 0].item(), count + int(sums[0, 1].item())
    assert count == sum(sum(label != -100 for label in row["labels"][1:]) for row in pairs)
    saved = json.loads((out / "eval_results.json").read_text())
    assert saved["eval_perplexity"] == pytest.approx(math.exp(total / count), rel=1e-4)


def test_a_dataset_saved_to_disk_is_read_and_split(script, teacher, tmp_path):
    folder = tmp_path / "saved"
    datasets.Dataset.from_dict({"text": documents(30, 2)}).save_to_disk(str(folder))
    results = script.main(["--dataset_name", str(folder), "--validation_split_percentage", "20", "--do_train",
                           "--do_eval", *flags(teacher, tmp_path / "out", strategy="kd", max_steps=1)])
    assert results["eval_samples"] > 0 and results["eval_perplexity"] > 1


def test_an_earlier_run_is_refused_then_resumed_from_its_last_checkpoint(script, teacher, text, tmp_path):
    out = tmp_path / "out"
    argv = ["--train_file", text["train"], "--do_train",
            *flags(teacher, out, strategy="kd", max_steps=2, save_strategy="steps", save_steps=1)]
    script.main(argv)
    with pytest.raises(ValueError, match="already holds a training run.*--resume_from_checkpoint last"):
        script.main(argv)
    script.main([*argv, "--max_steps", "3", "--resume_from_checkpoint", "last"])
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 3


@pytest.mark.parametrize("make, message", [
    (lambda p: ["--block_size", str(POSITIONS + 1)], f"--block_size {POSITIONS + 1} is longer than the {POSITIONS}"),
    (lambda p: ["--train_file", str(p("empty.txt", "\n \n"))], r"--train_file .*empty.txt holds no text"),
    (lambda p: ["--train_file", str(p("pairs.jsonl", '{"prompt": "w1", "answer": "w2"}\n'))],
     r"pairs.jsonl has no column 'completion'.*--completion_column"),
    (lambda p: ["--train_file", str(p("none.jsonl", ""))], r"none.jsonl is empty"),
    (lambda p: ["--do_eval"], "--do_eval needs validation data"),
])
def test_bad_input_is_refused_before_anything_is_written(script, teacher, text, tmp_path, make, message):
    def put(name, content):
        (tmp_path / name).write_text(content)
        return tmp_path / name

    extra = make(put)
    argv = ([] if "--train_file" in extra else ["--train_file", text["train"]]) + extra
    with pytest.raises(ValueError, match=message):
        overridden = {"block_size": None} if "--block_size" in extra else {}  # the flag given here counts
        script.main([*argv, "--do_train", *flags(teacher, tmp_path / "out", strategy="kd", **overridden)])
    assert not (tmp_path / "out").exists()


def test_the_student_flag_names_a_checkpoint(script, teacher, tmp_path):
    model_args, _, _ = script.parse_arguments(["--student_model_name_or_path", teacher, "--train_file", "a.txt",
                                               "--output_dir", str(tmp_path)])
    assert model_args.model_name_or_path == teacher


def test_push_sends_the_student_with_a_text_generation_card_and_measured_compression(script, teacher, tmp_path,
                                                                                      fake_hub):
    train = write_pairs(tmp_path / "train.jsonl", 16, 3)
    out = tmp_path / "out"
    results = script.main(["--train_file", train, "--do_train", "--measure_compression", "--compression_batch_sizes",
                           "2", "--compression_repeats", "2", "--push_to_hub", "--hub_model_id", "me/tiny-clm",
                           *flags(teacher, out, strategy="prokt")])
    upload = fake_hub.uploads[-1]  # save_model pushes too ("Model save"), as the Trainer does; the card comes last
    assert {sent["repo_id"] for sent in fake_hub.uploads} == {"me/tiny-clm"}
    assert not any("teacher" in name for name in upload["files"])
    pushed = tmp_path / "pushed"
    for name, content in upload["contents"].items():
        (pushed / name).parent.mkdir(parents=True, exist_ok=True)
        (pushed / name).write_bytes(content)
    assert reloads_and_generates(pushed, "w3 w4") == reloads_and_generates(out, "w3 w4")
    card = upload["contents"]["README.md"].decode()
    assert "pipeline_tag: text-generation" in card and f"Generated: `{results['sample_generated']}`" in card
    teacher_model = AutoModelForCausalLM.from_pretrained(teacher)
    student = AutoModelForCausalLM.from_pretrained(pushed)
    assert results["parameter_ratio"] == teacher_model.num_parameters() / student.num_parameters() > 1
    assert f"| 2 | {results['teacher_latency_ms_bs2']:.2f} | {results['student_latency_ms_bs2']:.2f} |" in card


def test_kd_from_the_cached_top_k_is_computed_once_reused_and_steps_as_live_kd(script, teacher, text, tmp_path):
    argv = ["--train_file", text["train"], "--validation_file", text["validation"], "--do_train", "--do_eval"]
    live = script.main([*argv, *flags(teacher, tmp_path / "live", strategy="kd", distill_alpha=0.5)])
    cache = tmp_path / "top-k"
    cached_flags = ["--cache_teacher_topk", str(cache), "--teacher_topk_k", str(len(WORDS) + 2)]  # k = V
    first = script.main([*argv, *cached_flags, *flags(teacher, tmp_path / "first", strategy="kd", distill_alpha=0.5)])
    assert (cache / "teacher_cache_fingerprint.json").is_file()
    # k = V: the live KD step, up to the cache's fp16 rounding.
    assert first["eval_loss"] == pytest.approx(live["eval_loss"], rel=1e-3)
    again = script.main([*argv, *cached_flags, *flags(teacher, tmp_path / "again", strategy="kd",
                                                       distill_alpha=0.5)])
    assert again["eval_loss"] == first["eval_loss"]
    with pytest.raises(ValueError, match=r"was made from k=32 \(this run: 4\)"):
        script.main([*argv, "--cache_teacher_topk", str(cache), "--teacher_topk_k", "4",
                     *flags(teacher, tmp_path / "other", strategy="kd", distill_alpha=0.5)])
    with pytest.raises(ValueError, match="--cache_teacher_topk serves --strategy kd"):
        script.main([*argv, *cached_flags, *flags(teacher, tmp_path / "prokt", strategy="prokt")])
    assert not (tmp_path / "prokt").exists()
