"""GLUE, image and token-classification (NER) metrics, computed offline with scikit-learn, scipy and seqeval.

The GLUE metrics return the same keys, computed the same way, as ``evaluate.load("glue", task)``
(the Hub metric ``evaluate-metric/glue``), but need no download:

========================================  ====================================
task                                      keys
========================================  ====================================
cola                                      ``matthews_correlation``
sst2, mnli, qnli, rte, wnli               ``accuracy``
mrpc, qqp                                 ``accuracy``, ``f1`` (of class 1)
stsb                                      ``pearson``, ``spearmanr``
========================================  ====================================

MNLI's matched and mismatched validation sets are two evaluations with the same metric; the names
``mnli_matched`` and ``mnli_mismatched`` (accepted by ``evaluate``'s metric) resolve to ``mnli``.

Degenerate inputs: a correlation (Pearson, Spearman, Matthews) is undefined when the predictions
or the references are constant (or there is a single example). It is then defined here as ``0.0``,
"no correlation", which is what scikit-learn already returns for the Matthews correlation; scipy
would return NaN with a warning for Pearson and Spearman. A binary F1 with no positive example in
either array is ``0.0`` (scikit-learn's value, without its warning). Non-finite regression values
(NaN, inf) are not degenerate inputs but a failed model: they propagate and the metrics are NaN.

Named-entity recognition: `ner_metrics` returns the keys of ``evaluate.load("seqeval")`` as the
``transformers`` token-classification example reports them (``precision``, ``recall``, ``f1`` of the
entities, micro-averaged, and token ``accuracy``), scored by the `seqeval` package itself in its default
(CoNLL ``conlleval``) mode, without the download that ``evaluate.load`` needs. An evaluation in which
neither the predictions nor the references hold an entity scores 0.0 (no warning).

All values are plain Python ``float``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np
from scipy.stats import pearsonr, spearmanr
from seqeval.metrics import accuracy_score as seqeval_accuracy
from seqeval.metrics import classification_report as seqeval_report
from sklearn.metrics import f1_score, matthews_corrcoef

__all__ = [
    "GLUE_TASKS",
    "GlueTask",
    "classification_metrics",
    "compute_glue_metrics",
    "compute_metrics_for_labels",
    "compute_ner_metrics",
    "get_glue_task",
    "glue_metrics",
    "ner_metrics",
    "regression_metrics",
    "tags_of_labelled_tokens",
]


@dataclass(frozen=True)
class GlueTask:
    """What a GLUE task needs for training and evaluation.

    Attributes:
        name: the configuration name of the task in the Hub dataset ``nyu-mll/glue`` (``"sst2"``...).
        sentence_keys: the text columns ``(first, second)``; ``second`` is ``None`` for single-sentence tasks.
        num_labels: the number of outputs of the classifier head; 1 for the regression task (stsb).
        is_regression: whether labels are float scores (stsb) rather than class ids.
        metric_names: the keys that ``glue_metrics`` returns, in order.
        label_names: the class names, index ``i`` naming class id ``i`` as in the dataset's ``ClassLabel``;
            ``None`` for regression.
    """

    name: str
    sentence_keys: tuple[str, str | None]
    num_labels: int
    is_regression: bool
    metric_names: tuple[str, ...]
    label_names: tuple[str, ...] | None


def _classification_task(name: str, sentence_keys: tuple[str, str | None], label_names: tuple[str, ...],
                         metric_names: tuple[str, ...] = ("accuracy",)) -> GlueTask:
    return GlueTask(name, sentence_keys, len(label_names), False, metric_names, label_names)


#: The nine GLUE tasks by name (read-only).
GLUE_TASKS: Mapping[str, GlueTask] = MappingProxyType({
    "cola": _classification_task("cola", ("sentence", None), ("unacceptable", "acceptable"),
                                 ("matthews_correlation",)),
    "sst2": _classification_task("sst2", ("sentence", None), ("negative", "positive")),
    "mrpc": _classification_task("mrpc", ("sentence1", "sentence2"), ("not_equivalent", "equivalent"),
                                 ("accuracy", "f1")),
    "qqp": _classification_task("qqp", ("question1", "question2"), ("not_duplicate", "duplicate"),
                                ("accuracy", "f1")),
    "stsb": GlueTask("stsb", ("sentence1", "sentence2"), 1, True, ("pearson", "spearmanr"), None),
    "mnli": _classification_task("mnli", ("premise", "hypothesis"), ("entailment", "neutral", "contradiction")),
    "qnli": _classification_task("qnli", ("question", "sentence"), ("entailment", "not_entailment")),
    "rte": _classification_task("rte", ("sentence1", "sentence2"), ("entailment", "not_entailment")),
    "wnli": _classification_task("wnli", ("sentence1", "sentence2"), ("not_entailment", "entailment")),
})

_ALIASES = {"mnli_matched": "mnli", "mnli_mismatched": "mnli"}


def get_glue_task(task_name: str) -> GlueTask:
    """The `GlueTask` named ``task_name`` (case-insensitive; ``mnli_matched``/``mnli_mismatched`` give ``mnli``).

    Raises:
        ValueError: for an unknown name; the message lists the known tasks.
    """
    key = str(task_name).strip().lower()
    key = _ALIASES.get(key, key)
    if key not in GLUE_TASKS:
        raise ValueError(
            f"unknown GLUE task {task_name!r}; known tasks: {', '.join(GLUE_TASKS)} "
            f"(and {', '.join(_ALIASES)} for mnli)"
        )
    return GLUE_TASKS[key]


# ---------------------------------------------------------------------------------------------
# Input checks


def _as_1d(values: Any, what: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{what} must be one-dimensional [N], got shape {list(array.shape)}")
    if array.size == 0:
        raise ValueError(f"{what} is empty: no metric can be computed on zero examples")
    return array


def _pair(predictions: Any, references: Any) -> tuple[np.ndarray, np.ndarray]:
    predictions = _as_1d(predictions, "predictions")
    references = _as_1d(references, "references")
    if predictions.shape != references.shape:
        raise ValueError(f"{predictions.shape[0]} predictions for {references.shape[0]} references")
    return predictions, references


def _class_ids(values: np.ndarray, num_labels: int, what: str) -> np.ndarray:
    integral = np.issubdtype(values.dtype, np.integer) or np.issubdtype(values.dtype, np.bool_)
    if not integral and np.issubdtype(values.dtype, np.floating):
        integral = bool(np.all(np.isfinite(values) & (values == np.round(values))))
    if not integral:
        raise ValueError(f"{what} must be integer class ids, got non-integer {values.dtype} values")
    ids = values.astype(np.int64)
    bad = (ids < 0) | (ids >= num_labels)
    if bad.any():
        hint = " (GLUE test splits have hidden labels, stored as -1)" if (ids == -1).any() else ""
        raise ValueError(f"{what} must be class ids in [0, {num_labels}), found {ids[bad][0]}{hint}")
    return ids


def _classification_pair(predictions: Any, references: Any, num_labels: int) -> tuple[np.ndarray, np.ndarray]:
    if num_labels < 2:
        raise ValueError(f"a classification needs num_labels >= 2, got {num_labels}")
    predictions, references = _pair(predictions, references)
    return _class_ids(predictions, num_labels, "predictions"), _class_ids(references, num_labels, "references")


def _regression_pair(predictions: Any, references: Any) -> tuple[np.ndarray, np.ndarray]:
    predictions, references = _pair(predictions, references)
    return predictions.astype(np.float64), references.astype(np.float64)


# ---------------------------------------------------------------------------------------------
# The metrics, on checked arrays: class ids [N] (int64) or scores [N] (float64)


def _accuracy(predictions: np.ndarray, references: np.ndarray) -> float:
    return float(np.mean(predictions == references))


def _binary_f1(predictions: np.ndarray, references: np.ndarray) -> float:
    """F1 of class 1: ``2 TP / (2 TP + FP + FN)``; 0.0 when class 1 is absent from both arrays."""
    return float(f1_score(references, predictions, average="binary", pos_label=1, zero_division=0.0))


def _macro_f1(predictions: np.ndarray, references: np.ndarray) -> float:
    """Unweighted mean of the per-class F1 over the classes present in either array."""
    return float(f1_score(references, predictions, average="macro", zero_division=0.0))


def _is_constant(values: np.ndarray) -> bool:
    return values.size < 2 or bool(np.all(values == values[0]))


def _matthews(predictions: np.ndarray, references: np.ndarray) -> float:
    # Undefined (zero denominator) exactly when one array holds a single class: 0.0, as scikit-learn.
    if _is_constant(predictions) or _is_constant(references):
        return 0.0
    return float(matthews_corrcoef(references, predictions))


def _pearson(predictions: np.ndarray, references: np.ndarray) -> float:
    if _is_constant(predictions) or _is_constant(references):
        return 0.0
    return float(pearsonr(predictions, references)[0])


def _spearman(predictions: np.ndarray, references: np.ndarray) -> float:
    if _is_constant(predictions) or _is_constant(references):
        return 0.0
    return float(spearmanr(predictions, references)[0])


def _mse(predictions: np.ndarray, references: np.ndarray) -> float:
    return float(np.mean((predictions - references) ** 2))


_METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "accuracy": _accuracy,
    "f1": _binary_f1,
    "matthews_correlation": _matthews,
    "pearson": _pearson,
    "spearmanr": _spearman,
}


# ---------------------------------------------------------------------------------------------
# Public functions


def glue_metrics(task_name: str, predictions: Any, references: Any) -> dict[str, float]:
    """The official metrics of a GLUE task, keyed as ``evaluate.load("glue", task_name)`` keys them.

    Args:
        task_name: one of `GLUE_TASKS` (or ``mnli_matched``/``mnli_mismatched``).
        predictions: ``[N]`` class ids, or ``[N]`` float scores for stsb.
        references: ``[N]`` gold labels, same kind as ``predictions``.

    Returns:
        ``{metric_name: value}`` for the names in ``GLUE_TASKS[task].metric_names``, as Python floats.

    Raises:
        ValueError: unknown task (the message lists the known ones), arrays that are not ``[N]``, empty or of
            different lengths, or class ids outside ``[0, num_labels)`` (such as the -1 of a test split).
    """
    task = get_glue_task(task_name)
    if task.is_regression:
        predictions, references = _regression_pair(predictions, references)
    else:
        predictions, references = _classification_pair(predictions, references, task.num_labels)
    return {name: _METRICS[name](predictions, references) for name in task.metric_names}


def classification_metrics(predictions: Any, references: Any, num_labels: int) -> dict[str, float]:
    """Metrics for any single-label classification (a custom CSV/TSV dataset, say).

    Args:
        predictions: ``[N]`` class ids in ``[0, num_labels)``.
        references: ``[N]`` gold class ids in ``[0, num_labels)``.
        num_labels: the number of classes ``C >= 2``.

    Returns:
        ``accuracy`` and ``matthews_correlation`` (multi-class MCC when ``C > 2``) always; ``f1`` (of class 1)
        when ``C == 2``; ``macro_f1`` (unweighted mean over the classes present in either array) when ``C > 2``.
    """
    predictions, references = _classification_pair(predictions, references, num_labels)
    metrics = {
        "accuracy": _accuracy(predictions, references),
        "matthews_correlation": _matthews(predictions, references),
    }
    if num_labels == 2:
        metrics["f1"] = _binary_f1(predictions, references)
    else:
        metrics["macro_f1"] = _macro_f1(predictions, references)
    return metrics


def regression_metrics(predictions: Any, references: Any) -> dict[str, float]:
    """Metrics for a regression on scores.

    Args:
        predictions: ``[N]`` predicted scores.
        references: ``[N]`` gold scores.

    Returns:
        ``pearson``, ``spearmanr`` (each 0.0 when either array is constant or ``N == 1``) and ``mse``.
    """
    predictions, references = _regression_pair(predictions, references)
    return {
        "pearson": _pearson(predictions, references),
        "spearmanr": _spearman(predictions, references),
        "mse": _mse(predictions, references),
    }


def _eval_arrays(eval_prediction: Any, is_regression: bool) -> tuple[np.ndarray, np.ndarray]:
    """``(predictions [N], references [N])`` from an ``EvalPrediction``: argmax of ``[N, C]`` logits, or
    the ``[N, 1]``/``[N]`` output of a regressor. A tuple of model outputs contributes its first element;
    ``[N]`` class ids (from a ``preprocess_logits_for_metrics`` that took the argmax) are used as they are."""
    logits = eval_prediction.predictions
    if isinstance(logits, (tuple, list)):
        logits = logits[0]
    logits = np.asarray(logits)
    labels = eval_prediction.label_ids
    if isinstance(labels, (tuple, list)):
        if len(labels) != 1:
            raise ValueError(f"expected one label array, got {len(labels)} (several label_names?)")
        labels = labels[0]
    labels = np.asarray(labels)
    if is_regression:
        if logits.ndim == 2 and logits.shape[1] == 1:
            logits = logits[:, 0]
        elif logits.ndim != 1:
            raise ValueError(f"a regressor's predictions must be [N, 1] or [N], got {list(logits.shape)}")
        if labels.ndim == 2 and labels.shape[1] == 1:
            labels = labels[:, 0]
        return logits, labels
    if logits.ndim == 2:
        return np.argmax(logits, axis=-1), labels
    if logits.ndim == 1:
        return logits, labels
    raise ValueError(f"a classifier's predictions must be [N, C] logits or [N] class ids, got {list(logits.shape)}")


def compute_glue_metrics(task_name: str) -> Callable[[Any], dict[str, float]]:
    """A ``compute_metrics`` for ``Trainer`` that scores a GLUE task.

    The returned function takes an ``EvalPrediction`` whose ``predictions`` are logits ``[N, C]``
    (argmax taken), or for stsb ``[N, 1]``/``[N]`` scores, possibly inside a tuple of model outputs
    (the first element is used), and whose ``label_ids`` are ``[N]``. It returns `glue_metrics` plus,
    when the task has more than one metric (mrpc, qqp, stsb), ``combined_score``: their mean, as the
    ``transformers`` ``run_glue.py`` example reports it.

    Raises:
        ValueError: at once, for an unknown task.
    """
    task = get_glue_task(task_name)

    def compute_metrics(eval_prediction: Any) -> dict[str, float]:
        predictions, references = _eval_arrays(eval_prediction, task.is_regression)
        metrics = glue_metrics(task.name, predictions, references)
        if len(metrics) > 1:
            metrics["combined_score"] = float(np.mean(list(metrics.values())))
        return metrics

    compute_metrics.__name__ = f"compute_{task.name}_metrics"
    return compute_metrics


def compute_metrics_for_labels(num_labels: int) -> Callable[[Any], dict[str, float]]:
    """A ``compute_metrics`` for ``Trainer`` on a non-GLUE dataset: `regression_metrics` when
    ``num_labels == 1`` (a one-output head), else `classification_metrics` with ``num_labels`` classes.
    Takes an ``EvalPrediction`` as `compute_glue_metrics`'s function does; adds no ``combined_score``."""
    if num_labels < 1:
        raise ValueError(f"num_labels must be >= 1, got {num_labels}")

    def compute_metrics(eval_prediction: Any) -> dict[str, float]:
        predictions, references = _eval_arrays(eval_prediction, num_labels == 1)
        if num_labels == 1:
            return regression_metrics(predictions, references)
        return classification_metrics(predictions, references, num_labels)

    return compute_metrics


def top_k_accuracy(logits: Any, references: Any, k: int) -> float:
    """Share of examples whose gold class is among the ``k`` highest scores.

    Args:
        logits: ``[N, C]`` class scores.
        references: ``[N]`` gold class ids.
        k: ``1 <= k <= C``; ``k = 1`` is plain accuracy. Ties count in favour of lower class ids, as
            with a stable sort.
    """
    logits, references = np.asarray(logits), _as_1d(references, "references").astype(np.int64)
    if logits.ndim != 2 or logits.shape[0] != references.shape[0]:
        raise ValueError(f"logits must be [N, C] with N = {references.shape[0]}, got {list(logits.shape)}")
    if not 1 <= k <= logits.shape[1]:
        raise ValueError(f"k must be in 1..{logits.shape[1]} (the number of classes), got {k}")
    top = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    return float((top == references[:, None]).any(axis=1).mean())


def compute_image_classification_metrics(num_labels: int, top_k: int = 5) -> Callable[[Any], dict[str, float]]:
    """A ``compute_metrics`` for ``Trainer`` on image classification: ``accuracy`` (top-1) and, when there
    are more than ``top_k`` classes, ``top{top_k}_accuracy``. Takes an ``EvalPrediction`` with logits
    ``[N, C]`` (or a tuple starting with them) and ``label_ids [N]``; computed locally, no download."""
    if num_labels < 2:
        raise ValueError(f"image classification needs at least 2 classes, got num_labels={num_labels}")

    def compute_metrics(eval_prediction: Any) -> dict[str, float]:
        logits = eval_prediction.predictions
        if isinstance(logits, (tuple, list)):
            logits = logits[0]
        labels = eval_prediction.label_ids
        metrics = {"accuracy": top_k_accuracy(logits, labels, 1)}
        if num_labels > top_k:
            metrics[f"top{top_k}_accuracy"] = top_k_accuracy(logits, labels, top_k)
        return metrics

    return compute_metrics


# ------------------------------------------------------------------------------ token classification (NER)


def ner_metrics(predictions: list[list[str]], references: list[list[str]],
                entity_level: bool = False) -> dict[str, float]:
    """Entity-level ``precision``, ``recall``, ``f1`` (micro-averaged over entity types) and token
    ``accuracy`` of tag sequences (``[["B-PER", "I-PER", "O"], ...]``, IOB1/IOB2 tags), by `seqeval`.

    With ``entity_level=True``, also ``{TYPE}_precision``, ``{TYPE}_recall``, ``{TYPE}_f1`` and
    ``{TYPE}_number`` (gold entities) for every entity type.
    """
    if len(predictions) != len(references) or any(len(p) != len(r) for p, r in zip(predictions, references)):
        raise ValueError("predictions and references must hold the same number of sentences and, in each, of tags")
    with warnings.catch_warnings():  # no entity at all: seqeval averages empty arrays (the scores are 0)
        warnings.simplefilter("ignore", RuntimeWarning)
        report = seqeval_report(references, predictions, output_dict=True, zero_division=0)
    overall = report.pop("micro avg", None) or {"precision": 0.0, "recall": 0.0, "f1-score": 0.0}
    metrics = {
        "precision": float(overall["precision"]),
        "recall": float(overall["recall"]),
        "f1": float(overall["f1-score"]),
        "accuracy": float(seqeval_accuracy(references, predictions)) if any(map(len, references)) else 0.0,
    }
    if entity_level:
        for entity_type, scores in report.items():
            if entity_type.endswith(" avg"):
                continue
            metrics.update({f"{entity_type}_precision": float(scores["precision"]),
                            f"{entity_type}_recall": float(scores["recall"]),
                            f"{entity_type}_f1": float(scores["f1-score"]),
                            f"{entity_type}_number": float(scores["support"])})
    return metrics


def tags_of_labelled_tokens(predictions: Any, label_ids: Any,
                            label_names: list[str]) -> tuple[list[list[str]], list[list[str]]]:
    """``(predicted tags, gold tags)`` per sentence, over the tokens whose label is not -100.

    Args:
        predictions: ``[N, L, C]`` logits (argmax taken) or ``[N, L]`` tag ids.
        label_ids: ``[N, L]`` gold tag ids, -100 on padding, special tokens and the sub-tokens that carry
            no label.
        label_names: the tag of each id.
    """
    predictions, label_ids = np.asarray(predictions), np.asarray(label_ids)
    if predictions.ndim == 3:
        predictions = np.argmax(predictions, axis=-1)
    if predictions.shape != label_ids.shape:
        raise ValueError(f"token predictions {list(predictions.shape)} and labels {list(label_ids.shape)} "
                         "must have the same [N, L] shape")
    predicted, gold = [], []
    for sentence_predictions, sentence_labels in zip(predictions, label_ids):
        keep = sentence_labels != -100
        predicted.append([label_names[i] for i in sentence_predictions[keep]])
        gold.append([label_names[i] for i in sentence_labels[keep]])
    return predicted, gold


def compute_ner_metrics(label_names: list[str], entity_level: bool = False) -> Callable[[Any], dict[str, float]]:
    """A ``compute_metrics`` for ``Trainer`` on token classification: `ner_metrics` of the tokens that carry
    a label. Takes an ``EvalPrediction`` with logits ``[N, L, C]`` (or a tuple starting with them) and
    ``label_ids [N, L]``; computed locally, no download. ``label_names``: the tag of each class id."""
    label_names = [str(name) for name in label_names]

    def compute_metrics(eval_prediction: Any) -> dict[str, float]:
        logits = eval_prediction.predictions
        if isinstance(logits, (tuple, list)):
            logits = logits[0]
        predicted, gold = tags_of_labelled_tokens(logits, eval_prediction.label_ids, label_names)
        return ner_metrics(predicted, gold, entity_level)

    return compute_metrics
