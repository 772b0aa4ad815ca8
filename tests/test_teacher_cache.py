"""`cache_teacher_logits`: the teacher's logits per example, in a column that stays with its example."""

import datasets
import numpy as np
import pytest
import torch
from transformers import (
    BertConfig,
    BertForTokenClassification,
    DataCollatorForTokenClassification,
    DataCollatorWithPadding,
)

from hf_prokt import cache_teacher_logits
from hf_prokt.teacher.logit_cache import TeacherLogitsCollator, has_on_the_fly_transform, load_or_cache_teacher_logits
from tests.conftest import VOCAB_SIZE, image_dataset, tiny_bert, tiny_vit, toy_dataset


def logits_of(model, example: dict) -> np.ndarray:
    """The model's logits for one example alone (no padding), computed directly."""
    inputs = {k: torch.tensor([example[k]]) for k in ("input_ids", "attention_mask")}
    with torch.no_grad():
        return model(**inputs).logits[0].numpy()


def assert_rows_match(cached: datasets.Dataset, model, atol=1e-5):
    for example in cached:
        np.testing.assert_allclose(np.array(example["teacher_logits"]), logits_of(model, example), atol=atol)


def tiny_token_classifier(num_labels=3, seed=0) -> BertForTokenClassification:
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=VOCAB_SIZE, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=32, num_labels=num_labels,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return BertForTokenClassification(config)


def ragged_dataset(n=10, seed=0, token_labels=False) -> datasets.Dataset:
    """Unpadded token sequences of lengths 2..8, with raw text the teacher must not see."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, 9, (n,), generator=generator).tolist()
    ids = [torch.randint(5, VOCAB_SIZE, (length,), generator=generator).tolist() for length in lengths]
    data = {"input_ids": ids, "attention_mask": [[1] * len(x) for x in ids], "text": [f"row {i}" for i in range(n)]}
    data["labels"] = [[i % 3 for i in range(len(x))] for x in ids] if token_labels else [x[0] % 2 for x in ids]
    return datasets.Dataset.from_dict(data)


def test_sequence_classification_logits_per_example_and_unchanged_input():
    teacher = tiny_bert(layers=2, hidden=16, seed=1)
    teacher.train()
    data = toy_dataset(n=11)
    cached = cache_teacher_logits(teacher, data, batch_size=4, disable_tqdm=True)
    assert "teacher_logits" not in data.column_names  # a new dataset
    assert cached.column_names == [*data.column_names, "teacher_logits"]
    assert cached.features["teacher_logits"] == datasets.List(datasets.Value("float32"))
    assert teacher.training  # its mode restored
    teacher.eval()
    assert_rows_match(cached, teacher)


def test_padded_batches_give_the_unpadded_logits(local_tokenizer):
    teacher = tiny_bert(layers=2, hidden=16, seed=1).eval()
    data = ragged_dataset(n=9)
    cached = cache_teacher_logits(teacher, data, batch_size=4, processing_class=local_tokenizer, disable_tqdm=True)
    assert_rows_match(cached, teacher)


def test_ragged_inputs_without_a_padding_collator_are_refused_with_the_fix():
    with pytest.raises(ValueError, match="processing_class=<tokenizer>"):
        cache_teacher_logits(tiny_bert(), ragged_dataset(n=6), batch_size=6, disable_tqdm=True)


def test_regression_teacher_gives_one_value_per_example():
    teacher = tiny_bert(layers=2, hidden=16, seed=1, num_labels=1).eval()
    cached = cache_teacher_logits(teacher, toy_dataset(n=6, regression=True), batch_size=4, disable_tqdm=True)
    assert all(len(row) == 1 for row in cached["teacher_logits"])
    assert_rows_match(cached, teacher)


def test_token_classification_logits_trimmed_to_each_example(local_tokenizer):
    teacher = tiny_token_classifier().eval()
    data = ragged_dataset(n=9, token_labels=True)
    cached = cache_teacher_logits(teacher, data, batch_size=4,
                                  data_collator=DataCollatorForTokenClassification(local_tokenizer),
                                  disable_tqdm=True)
    assert cached.features["teacher_logits"] == datasets.List(datasets.List(datasets.Value("float32")))
    for example in cached:
        assert np.array(example["teacher_logits"]).shape == (len(example["input_ids"]), 3)
    assert_rows_match(cached, teacher)


def test_left_padded_token_logits_keep_the_last_positions(local_tokenizer):
    """With left padding an example's tokens are the last ``L_i`` positions of its padded row."""
    teacher = tiny_token_classifier().eval()
    local_tokenizer.padding_side = "left"
    collator = DataCollatorForTokenClassification(local_tokenizer)
    data = ragged_dataset(n=8, token_labels=True)
    cached = cache_teacher_logits(teacher, data, batch_size=4, data_collator=collator, disable_tqdm=True)
    for start in (0, 4):
        rows = [data[i] for i in range(start, start + 4)]
        batch = collator([{k: row[k] for k in ("input_ids", "attention_mask")} for row in rows])
        with torch.no_grad():
            padded_logits = teacher(**batch).logits.numpy()
        assert (batch["attention_mask"][:, 0] == 0).any()  # some rows really are padded on the left
        for offset, row in enumerate(rows):
            length = len(row["input_ids"])
            np.testing.assert_allclose(np.array(cached[start + offset]["teacher_logits"]),
                                       padded_logits[offset, -length:], atol=1e-6)


def test_column_survives_disk_select_shuffle_and_map(tmp_path):
    teacher = tiny_bert(layers=2, hidden=16, seed=1).eval()
    cached = cache_teacher_logits(teacher, toy_dataset(n=12), batch_size=5, disable_tqdm=True)
    cached.save_to_disk(str(tmp_path / "cache"))
    reloaded = datasets.load_from_disk(str(tmp_path / "cache"))
    assert reloaded["teacher_logits"] == cached["teacher_logits"]
    reshaped = (reloaded.shuffle(seed=3).select([7, 1, 4, 0, 9])
                .map(lambda row: {"input_ids": row["input_ids"], "doubled": 2 * row["labels"]})
                .filter(lambda row: row["labels"] >= 0))
    assert reshaped["input_ids"] != cached.select(range(5))["input_ids"]  # the order did change
    assert_rows_match(reshaped, teacher)


def test_precision_runs_the_teacher_under_autocast():
    teacher = tiny_bert(layers=2, hidden=16, seed=1).eval()
    data = toy_dataset(n=4)
    cached = cache_teacher_logits(teacher, data, batch_size=4, precision="bf16", disable_tqdm=True)
    inputs = {k: torch.tensor(data[k]) for k in ("input_ids", "attention_mask")}
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = teacher(**inputs).logits.float().numpy()
    np.testing.assert_array_equal(np.array(cached["teacher_logits"], dtype=np.float32), expected)
    with pytest.raises(ValueError, match="precision"):
        cache_teacher_logits(teacher, data, precision="float16")


def test_transformed_images_are_read_through_their_transform():
    teacher = tiny_vit(layers=1, seed=1).eval()
    images = image_dataset(n=5).with_format(None)
    plain = cache_teacher_logits(teacher, images.with_format("torch"), batch_size=2, disable_tqdm=True)

    def brighten(batch):
        return {"pixel_values": [torch.tensor(p) + 1.0 for p in batch["pixel_values"]], "labels": batch["labels"]}

    transformed = images.with_transform(brighten)
    assert has_on_the_fly_transform(transformed) and not has_on_the_fly_transform(images)
    cached = cache_teacher_logits(teacher, transformed, batch_size=2, disable_tqdm=True)
    with torch.no_grad():
        expected = teacher(pixel_values=torch.tensor(images["pixel_values"]) + 1.0).logits
    np.testing.assert_allclose(np.array(cached.with_format(None)["teacher_logits"]), expected.numpy(), atol=1e-5)
    assert not np.allclose(np.array(plain.with_format(None)["teacher_logits"]), expected.numpy(), atol=1e-3)


def test_refusals():
    data = toy_dataset(n=4)
    cached = cache_teacher_logits(tiny_bert(), data, disable_tqdm=True)
    with pytest.raises(ValueError, match="already has a 'teacher_logits' column"):
        cache_teacher_logits(tiny_bert(), cached, disable_tqdm=True)
    with pytest.raises(TypeError, match="map-style"):
        cache_teacher_logits(tiny_bert(), data.to_iterable_dataset(), disable_tqdm=True)


def counting_forwards(model) -> list:
    calls = []
    model.register_forward_pre_hook(lambda *_: calls.append(1))
    return calls


def test_saved_cache_is_reused_not_recomputed(tmp_path):
    path = str(tmp_path / "cache")
    teacher, data = tiny_bert(layers=2, hidden=16, seed=1).eval(), toy_dataset(n=10)
    calls = counting_forwards(teacher)
    first = load_or_cache_teacher_logits(path, teacher, data, batch_size=4, disable_tqdm=True)
    assert len(calls) == 3  # ceil(10 / 4) batches
    again = load_or_cache_teacher_logits(path, teacher, toy_dataset(n=10), batch_size=4, disable_tqdm=True)
    assert len(calls) == 3  # read from disk: no teacher forward
    assert again["teacher_logits"] == first["teacher_logits"]
    assert_rows_match(again, teacher)


def test_cache_from_another_teacher_data_or_precision_is_refused(tmp_path):
    path = str(tmp_path / "cache")
    teacher, data = tiny_bert(layers=2, hidden=16, seed=1), toy_dataset(n=10)
    load_or_cache_teacher_logits(path, teacher, data, disable_tqdm=True)
    written = sorted(p.name for p in (tmp_path / "cache").iterdir())

    with torch.no_grad():
        teacher.classifier.bias[0] += 1e-3  # the same config, one weight changed
    with pytest.raises(ValueError, match="another teacher"):
        load_or_cache_teacher_logits(path, teacher, data, disable_tqdm=True)
    with torch.no_grad():
        teacher.classifier.bias[0] -= 1e-3
    with pytest.raises(ValueError, match="another teacher"):
        load_or_cache_teacher_logits(path, tiny_bert(layers=2, hidden=16, seed=1, num_labels=3), data)
    with pytest.raises(ValueError, match="other training data"):
        load_or_cache_teacher_logits(path, teacher, data.select(range(9)), disable_tqdm=True)
    with pytest.raises(ValueError, match="other training data"):
        load_or_cache_teacher_logits(path, teacher, toy_dataset(n=10, seed=1), disable_tqdm=True)
    with pytest.raises(ValueError, match="logits in the teacher's own dtype .this run: bf16"):
        load_or_cache_teacher_logits(path, teacher, data, precision="bf16", disable_tqdm=True)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == written  # nothing overwritten
    load_or_cache_teacher_logits(path, teacher, data, disable_tqdm=True)  # the original pair still reads it

    (tmp_path / "other").mkdir()
    with pytest.raises(ValueError, match="holds no teacher-logits cache"):
        load_or_cache_teacher_logits(str(tmp_path / "other"), teacher, data, disable_tqdm=True)


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_collator_pads_per_token_logits_to_the_batch_length(local_tokenizer, padding_side):
    local_tokenizer.padding_side = padding_side
    collator = TeacherLogitsCollator(DataCollatorForTokenClassification(local_tokenizer))
    features = [{"input_ids": [5, 6, 7], "labels": [0, 1, 2], "teacher_logits": [[1.0, 2.0]] * 3},
                {"input_ids": [8], "labels": [1], "teacher_logits": [[3.0, 4.0]]}]
    batch = collator(features)
    assert batch["input_ids"].shape == (2, 3)
    expected_short = [[0.0, 0.0], [0.0, 0.0], [3.0, 4.0]] if padding_side == "left" else [[3.0, 4.0], [0.0, 0.0],
                                                                                            [0.0, 0.0]]
    assert batch["teacher_logits"].tolist() == [[[1.0, 2.0]] * 3, expected_short]
    assert batch["teacher_logits"].dtype == torch.float32
    assert collator([{k: v for k, v in f.items() if k != "teacher_logits"} for f in features]).keys() == {
        "input_ids", "attention_mask", "labels"}


def test_collator_stacks_sequence_logits_and_refuses_mixed_shapes(local_tokenizer):
    collator = TeacherLogitsCollator(DataCollatorWithPadding(local_tokenizer))
    batch = collator([{"input_ids": [5, 6], "labels": 1, "teacher_logits": [0.5, -0.5]},
                      {"input_ids": [7], "labels": 0, "teacher_logits": [1.5, 2.5]}])
    assert batch["teacher_logits"].tolist() == [[0.5, -0.5], [1.5, 2.5]] and batch["input_ids"].shape == (2, 2)
    with pytest.raises(ValueError, match="different shapes"):
        collator([{"input_ids": [5], "teacher_logits": [0.5, -0.5]}, {"input_ids": [7], "teacher_logits": [1.5]}])
