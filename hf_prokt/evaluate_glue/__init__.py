"""The GLUE metric as a local ``evaluate`` module, for code that wants ``evaluate``'s interface offline.

Example::

    import evaluate
    from hf_prokt.evaluate_glue import GLUE_METRIC_PATH

    metric = evaluate.load(GLUE_METRIC_PATH, "mrpc")
    metric.compute(predictions=[0, 1], references=[0, 1])  # {'accuracy': 1.0, 'f1': 1.0}

The values and keys are those of ``hf_prokt.metrics.glue_metrics``, which match the Hub's ``glue`` metric.
"""

from pathlib import Path

#: Path of the metric script, to pass to ``evaluate.load``.
GLUE_METRIC_PATH: str = str(Path(__file__).with_name("glue.py"))

__all__ = ["GLUE_METRIC_PATH"]
