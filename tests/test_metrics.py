"""hf_prokt.metrics against values computed by hand from the metrics' definitions."""

import dataclasses
import json
import math
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
from transformers import EvalPrediction

from hf_prokt.metrics import (
    GLUE_TASKS,
    GlueTask,
    classification_metrics,
    compute_glue_metrics,
    compute_metrics_for_labels,
    get_glue_task,
    glue_metrics,
    regression_metrics,
)

# A binary case: TP = 3 (ids 0, 3, 6), FP = 2 (1, 7), TN = 2 (2, 5), FN = 1 (4).
BIN_PRED = [1, 1, 0, 1, 0, 0, 1, 1]
BIN_REF = [1, 0, 0, 1, 1, 0, 1, 0]
BIN_ACCURACY = 5 / 8
BIN_F1 = 2 * (3 / 5) * (3 / 4) / (3 / 5 + 3 / 4)  # precision TP/(TP+FP) = 3/5, recall TP/(TP+FN) = 3/4
BIN_MCC = (3 * 2 - 2 * 1) / math.sqrt((3 + 2) * (3 + 1) * (2 + 2) * (2 + 1))  # 4 / sqrt(240)

# A 3-class case: 5 of 8 correct; true counts t = (3, 3, 2), predicted counts p = (2, 4, 2).
MC_PRED = [0, 2, 2, 0, 1, 1, 1, 1]
MC_REF = [0, 1, 2, 0, 1, 2, 0, 1]
MC_MCC = (5 * 8 - (2 * 3 + 4 * 3 + 2 * 2)) / math.sqrt((64 - (4 + 16 + 4)) * (64 - (9 + 9 + 4)))  # 18/sqrt(1680)
MC_MACRO_F1 = (4 / 5 + 4 / 7 + 2 / 4) / 3  # per class 2TP/(2TP+FP+FN): (2,0,1), (2,2,1), (1,1,1)


def pearson_by_definition(x, y):
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    dx, dy = x - x.mean(), y - y.mean()
    return float((dx * dy).sum() / math.sqrt((dx**2).sum() * (dy**2).sum()))


def all_python_floats(metrics):
    return all(type(value) is float for value in metrics.values())


# --- the task table ------------------------------------------------------------------------------------------

EXPECTED_TASKS = {
    "cola": (("sentence", None), ("unacceptable", "acceptable"), ("matthews_correlation",)),
    "sst2": (("sentence", None), ("negative", "positive"), ("accuracy",)),
    "mrpc": (("sentence1", "sentence2"), ("not_equivalent", "equivalent"), ("accuracy", "f1")),
    "qqp": (("question1", "question2"), ("not_duplicate", "duplicate"), ("accuracy", "f1")),
    "stsb": (("sentence1", "sentence2"), None, ("pearson", "spearmanr")),
    "mnli": (("premise", "hypothesis"), ("entailment", "neutral", "contradiction"), ("accuracy",)),
    "qnli": (("question", "sentence"), ("entailment", "not_entailment"), ("accuracy",)),
    "rte": (("sentence1", "sentence2"), ("entailment", "not_entailment"), ("accuracy",)),
    "wnli": (("sentence1", "sentence2"), ("not_entailment", "entailment"), ("accuracy",)),
}


@pytest.mark.parametrize("name", sorted(EXPECTED_TASKS))
def test_glue_task_table(name):
    keys, labels, metric_names = EXPECTED_TASKS[name]
    task = GLUE_TASKS[name]
    assert task.name == name
    assert task.sentence_keys == keys
    assert task.label_names == labels
    assert task.metric_names == metric_names
    assert task.is_regression == (name == "stsb")
    assert task.num_labels == (1 if labels is None else len(labels))


def test_task_table_is_complete_and_read_only():
    assert set(GLUE_TASKS) == set(EXPECTED_TASKS)
    with pytest.raises(dataclasses.FrozenInstanceError):
        GLUE_TASKS["sst2"].num_labels = 3
    with pytest.raises(TypeError):
        GLUE_TASKS["ax"] = GLUE_TASKS["mnli"]
    assert isinstance(GLUE_TASKS["rte"], GlueTask)


def test_task_names_are_case_insensitive_and_mnli_splits_are_mnli():
    assert get_glue_task("SST2") is GLUE_TASKS["sst2"]
    assert get_glue_task("mnli_matched") is GLUE_TASKS["mnli"]
    assert get_glue_task("mnli_mismatched") is GLUE_TASKS["mnli"]
    assert glue_metrics("mnli_mismatched", [0, 2, 1], [0, 2, 2]) == {"accuracy": 2 / 3}


@pytest.mark.parametrize("call", [
    lambda: glue_metrics("sst-5", [0], [0]),
    lambda: compute_glue_metrics("hans"),  # raises at construction, not at the first evaluation
    lambda: get_glue_task("ax"),
])
def test_unknown_task_names_the_known_ones(call):
    with pytest.raises(ValueError, match="unknown GLUE task") as info:
        call()
    for name in EXPECTED_TASKS:
        assert name in str(info.value)


# --- values ---------------------------------------------------------------------------------------------------

def test_cola_matthews_correlation_matches_the_confusion_matrix_formula():
    result = glue_metrics("cola", BIN_PRED, BIN_REF)
    assert result == {"matthews_correlation": pytest.approx(BIN_MCC, abs=1e-12)}
    assert BIN_MCC == pytest.approx(0.2581988897, abs=1e-9)
    assert all_python_floats(result)


@pytest.mark.parametrize("task", ["mrpc", "qqp"])
def test_accuracy_and_f1_of_class_one(task):
    result = glue_metrics(task, BIN_PRED, BIN_REF)
    assert list(result) == ["accuracy", "f1"]
    assert result["accuracy"] == pytest.approx(BIN_ACCURACY)
    assert result["f1"] == pytest.approx(BIN_F1, abs=1e-12)
    assert BIN_F1 == pytest.approx(6 / 9)
    # F1 is of class 1: swapping the class ids changes it (class 0: TP=2, FP=1, FN=2 -> 4/7)
    swapped = glue_metrics(task, [1 - p for p in BIN_PRED], [1 - r for r in BIN_REF])
    assert swapped["f1"] == pytest.approx(4 / 7, abs=1e-12)
    assert swapped["accuracy"] == pytest.approx(BIN_ACCURACY)
    assert all_python_floats(result)


@pytest.mark.parametrize("task", ["sst2", "mnli", "qnli", "rte", "wnli"])
def test_accuracy_only_tasks(task):
    predictions = np.array([0, 1, 1, 0, 1])
    references = np.array([0, 1, 0, 0, 0])
    assert glue_metrics(task, predictions, references) == {"accuracy": 3 / 5}


def test_stsb_pearson_and_spearman_from_their_definitions():
    predictions = [0.5, 1.0, 4.0, 2.0, 2.5, 5.0]
    references = [0.0, 2.0, 3.5, 2.0, 1.0, 4.5]
    result = glue_metrics("stsb", np.array(predictions, dtype=np.float32), references)
    assert list(result) == ["pearson", "spearmanr"]
    assert result["pearson"] == pytest.approx(pearson_by_definition(predictions, references), abs=1e-6)
    # ranks by hand; the two references equal to 2.0 share the average rank 3.5
    prediction_ranks = [1, 2, 5, 3, 4, 6]
    reference_ranks = [1, 3.5, 5, 3.5, 2, 6]
    spearman = pearson_by_definition(prediction_ranks, reference_ranks)
    assert result["spearmanr"] == pytest.approx(spearman, abs=1e-12)
    assert abs(result["pearson"] - result["spearmanr"]) > 1e-3
    assert all_python_floats(result)


def test_spearman_sees_only_the_order():
    result = regression_metrics([1.0, 2.0, 3.0, 4.0, 100.0], [1.0, 2.0, 3.0, 4.0, 5.0])
    assert result["spearmanr"] == pytest.approx(1.0)
    assert result["pearson"] == pytest.approx(pearson_by_definition([1, 2, 3, 4, 100], [1, 2, 3, 4, 5]))
    assert result["pearson"] < 0.8
    assert result["mse"] == pytest.approx(95.0**2 / 5)


def test_regression_metrics_values():
    result = regression_metrics([1.0, 2.0, 3.0, 4.0, 5.0], [2.0, 1.0, 4.0, 3.0, 5.0])
    assert result == {"pearson": pytest.approx(0.8), "spearmanr": pytest.approx(0.8), "mse": pytest.approx(4 / 5)}
    assert all_python_floats(result)


def test_binary_classification_metrics():
    result = classification_metrics(BIN_PRED, BIN_REF, num_labels=2)
    assert result == {
        "accuracy": pytest.approx(BIN_ACCURACY),
        "matthews_correlation": pytest.approx(BIN_MCC, abs=1e-12),
        "f1": pytest.approx(BIN_F1, abs=1e-12),
    }
    assert all_python_floats(result)


def test_multiclass_classification_metrics():
    result = classification_metrics(MC_PRED, MC_REF, num_labels=3)
    assert result == {
        "accuracy": pytest.approx(5 / 8),
        "matthews_correlation": pytest.approx(MC_MCC, abs=1e-12),
        "macro_f1": pytest.approx(MC_MACRO_F1, abs=1e-12),
    }
    assert MC_MCC == pytest.approx(0.4391550328, abs=1e-9)
    assert all_python_floats(result)


# --- degenerate inputs: defined, finite, silent ---------------------------------------------------------------

@pytest.fixture
def no_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


@pytest.mark.usefixtures("no_warnings")
@pytest.mark.parametrize("predictions, references", [
    ([2.0, 2.0, 2.0], [1.0, 2.0, 3.0]),  # constant predictions
    ([1.0, 2.0, 3.0], [4.0, 4.0, 4.0]),  # constant references
    ([3.0, 3.0], [3.0, 3.0]),  # both constant, even equal
    ([1.5], [4.0]),  # a single example
])
def test_constant_scores_give_zero_correlations(predictions, references):
    assert glue_metrics("stsb", predictions, references) == {"pearson": 0.0, "spearmanr": 0.0}
    result = regression_metrics(predictions, references)
    assert result["pearson"] == 0.0 and result["spearmanr"] == 0.0
    assert result["mse"] == pytest.approx(np.mean((np.array(predictions) - np.array(references)) ** 2))


@pytest.mark.usefixtures("no_warnings")
def test_constant_classes_give_zero_matthews_and_f1():
    assert glue_metrics("cola", [1, 1, 1, 1], [0, 1, 1, 0]) == {"matthews_correlation": 0.0}
    assert glue_metrics("cola", [0, 1, 1, 0], [1, 1, 1, 1]) == {"matthews_correlation": 0.0}
    assert glue_metrics("cola", [0, 0], [0, 0]) == {"matthews_correlation": 0.0}
    # no positive in either array: F1 of class 1 is 0 (scikit-learn's value), accuracy is perfect
    assert glue_metrics("mrpc", [0, 0, 0], [0, 0, 0]) == {"accuracy": 1.0, "f1": 0.0}
    # positives never predicted
    assert glue_metrics("qqp", [0, 0, 0, 0], [0, 1, 1, 0]) == {"accuracy": 0.5, "f1": 0.0}
    assert classification_metrics([2, 2, 2], [0, 1, 2], num_labels=3)["matthews_correlation"] == 0.0


def test_non_finite_regression_outputs_stay_visible():
    result = regression_metrics([np.nan, 1.0, 2.0], [1.0, 2.0, 3.0])
    assert all(math.isnan(value) for value in result.values())


# --- input checks ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("task, predictions, references, message", [
    ("sst2", [0, 1], [0, 1, 1], "2 predictions for 3 references"),
    ("sst2", [], [], "empty"),
    ("sst2", [[0, 1]], [[0, 1]], "one-dimensional"),
    ("rte", [0, 1], [-1, -1], "hidden labels"),
    ("mnli", [0, 3], [0, 1], r"\[0, 3\)"),
    ("cola", [0.5, 1.0], [0, 1], "integer class ids"),
])
def test_bad_inputs_are_refused(task, predictions, references, message):
    with pytest.raises(ValueError, match=message):
        glue_metrics(task, predictions, references)


def test_integral_float_class_ids_are_accepted():
    assert glue_metrics("sst2", np.array([0.0, 1.0]), np.array([0, 0])) == {"accuracy": 0.5}


# --- compute_metrics for the Trainer --------------------------------------------------------------------------

def logits_for(class_ids, num_classes, seed=0):
    """Random logits ``[N, C]`` whose argmax is ``class_ids``."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(len(class_ids), num_classes)).astype(np.float32)
    logits[np.arange(len(class_ids)), class_ids] = logits.max(axis=1) + 1.0
    return logits


def test_compute_metrics_takes_the_argmax_and_adds_combined_score():
    compute_metrics = compute_glue_metrics("mrpc")
    logits = logits_for(BIN_PRED, 2)
    result = compute_metrics(EvalPrediction(predictions=logits, label_ids=np.array(BIN_REF)))
    assert result == {
        "accuracy": pytest.approx(BIN_ACCURACY),
        "f1": pytest.approx(BIN_F1),
        "combined_score": pytest.approx((BIN_ACCURACY + BIN_F1) / 2),
    }
    assert all_python_floats(result)


def test_compute_metrics_uses_the_first_element_of_tuple_predictions():
    logits = logits_for(MC_PRED, 3, seed=1)
    hidden = np.zeros((len(MC_PRED), 4, 5), dtype=np.float32)  # e.g. hidden states returned with the logits
    result = compute_glue_metrics("mnli")(EvalPrediction(predictions=(logits, hidden), label_ids=np.array(MC_REF)))
    assert result == {"accuracy": pytest.approx(5 / 8)}  # one metric: no combined_score


def test_compute_metrics_accepts_class_ids_from_preprocess_logits():
    result = compute_glue_metrics("cola")(EvalPrediction(predictions=np.array(BIN_PRED), label_ids=np.array(BIN_REF)))
    assert result == {"matthews_correlation": pytest.approx(BIN_MCC)}


@pytest.mark.parametrize("shape", ["[N, 1]", "[N]"])
def test_compute_metrics_for_stsb_squeezes_the_regression_output(shape):
    predictions = np.array([0.5, 1.0, 4.0, 2.0, 2.5, 5.0], dtype=np.float32)
    references = np.array([0.0, 2.0, 3.5, 2.0, 1.0, 4.5], dtype=np.float32)
    outputs = predictions[:, None] if shape == "[N, 1]" else predictions
    result = compute_glue_metrics("stsb")(EvalPrediction(predictions=outputs, label_ids=references))
    pearson = pearson_by_definition(predictions, references)
    spearman = pearson_by_definition([1, 2, 5, 3, 4, 6], [1, 3.5, 5, 3.5, 2, 6])
    assert result == {
        "pearson": pytest.approx(pearson, abs=1e-6),
        "spearmanr": pytest.approx(spearman, abs=1e-12),
        "combined_score": pytest.approx((pearson + spearman) / 2, abs=1e-6),
    }


def test_compute_metrics_for_stsb_refuses_a_multi_output_head():
    with pytest.raises(ValueError, match=r"\[N, 1\] or \[N\]"):
        compute_glue_metrics("stsb")(EvalPrediction(predictions=np.zeros((4, 2)), label_ids=np.zeros(4)))


def test_compute_metrics_for_custom_datasets():
    classify = compute_metrics_for_labels(3)
    result = classify(EvalPrediction(predictions=logits_for(MC_PRED, 3, seed=2), label_ids=np.array(MC_REF)))
    assert result == {
        "accuracy": pytest.approx(5 / 8),
        "matthews_correlation": pytest.approx(MC_MCC),
        "macro_f1": pytest.approx(MC_MACRO_F1),
    }
    regress = compute_metrics_for_labels(1)
    outputs = np.array([[1.0], [2.0], [3.0], [4.0], [5.0]], dtype=np.float32)
    result = regress(EvalPrediction(predictions=outputs, label_ids=np.array([2.0, 1.0, 4.0, 3.0, 5.0])))
    assert result == {"pearson": pytest.approx(0.8), "spearmanr": pytest.approx(0.8), "mse": pytest.approx(0.8)}


# --- the local `evaluate` module ------------------------------------------------------------------------------

EVALUATE_SCRIPT = """
import json, sys
import evaluate
from hf_prokt.evaluate_glue import GLUE_METRIC_PATH
cases = json.loads(sys.argv[1])
results = {}
for task, predictions, references in cases:
    metric = evaluate.load(GLUE_METRIC_PATH, task, cache_dir=sys.argv[2])
    results[task] = metric.compute(predictions=predictions, references=references)
print(json.dumps(results))
"""


def test_local_evaluate_module_loads_offline_and_agrees(tmp_path):
    cases = [
        ["cola", BIN_PRED, BIN_REF],
        ["mrpc", BIN_PRED, BIN_REF],
        ["stsb", [0.5, 1.0, 4.0, 2.0, 2.5, 5.0], [0.0, 2.0, 3.5, 2.0, 1.0, 4.5]],
        ["mnli_matched", MC_PRED, MC_REF],
    ]
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"),
               HF_MODULES_CACHE=str(tmp_path / "modules"))
    completed = subprocess.run(
        [sys.executable, "-c", EVALUATE_SCRIPT, json.dumps(cases), str(tmp_path / "cache")],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = json.loads(completed.stdout.strip().splitlines()[-1])
    assert results["cola"] == {"matthews_correlation": pytest.approx(BIN_MCC)}
    assert results["mrpc"] == {"accuracy": pytest.approx(BIN_ACCURACY), "f1": pytest.approx(BIN_F1)}
    assert results["stsb"] == {
        "pearson": pytest.approx(pearson_by_definition(cases[2][1], cases[2][2]), abs=1e-6),
        "spearmanr": pytest.approx(pearson_by_definition([1, 2, 5, 3, 4, 6], [1, 3.5, 5, 3.5, 2, 6])),
    }
    assert results["mnli_matched"] == {"accuracy": pytest.approx(5 / 8)}


# ------------------------------------------------------------------------------ token classification (NER)


def test_ner_metrics_score_entities_and_tokens():
    from hf_prokt.metrics import ner_metrics

    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-ORG", "I-ORG", "O"]]
    predicted = [["B-PER", "I-PER", "O", "B-ORG"], ["O", "B-ORG", "O", "O"]]
    # Gold entities: PER(0-1), LOC(3), ORG(1-2); predicted: PER(0-1) right, ORG(3) wrong, ORG(1) wrong span.
    metrics = ner_metrics(predicted, gold, entity_level=True)
    assert metrics["precision"] == pytest.approx(1 / 3) and metrics["recall"] == pytest.approx(1 / 3)
    assert metrics["f1"] == pytest.approx(1 / 3) and metrics["accuracy"] == pytest.approx(6 / 8)
    assert metrics["PER_f1"] == 1.0 and metrics["LOC_recall"] == 0.0 and metrics["ORG_number"] == 1.0


def test_compute_ner_metrics_reads_only_the_labelled_tokens():
    from transformers import EvalPrediction

    from hf_prokt.metrics import compute_ner_metrics

    names = ["B-PER", "I-PER", "O"]
    labels = np.array([[-100, 0, 1, -100, 2, -100], [-100, 2, 0, -100, -100, -100]])
    right = np.array([[2, 0, 1, 0, 2, 0], [2, 2, 0, 0, 1, 1]])  # wrong only where labels are -100
    logits = np.eye(3)[right] * 5.0  # [N, L, C]
    metrics = compute_ner_metrics(names)(EvalPrediction(predictions=logits, label_ids=labels))
    assert metrics == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "accuracy": 1.0}
    wrong = right.copy()
    wrong[0, 2] = 2  # the first person loses its second word: 1 of 2 entities right, 4 of 5 tokens
    metrics = compute_ner_metrics(names)(EvalPrediction(predictions=np.eye(3)[wrong], label_ids=labels))
    assert metrics["precision"] == 0.5 and metrics["recall"] == 0.5 and metrics["accuracy"] == pytest.approx(4 / 5)


def test_ner_metrics_without_any_entity_are_zero_without_warnings():
    from hf_prokt.metrics import ner_metrics

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ner_metrics([["O", "O"]], [["O", "O"]]) == {"precision": 0.0, "recall": 0.0, "f1": 0.0,
                                                          "accuracy": 1.0}
