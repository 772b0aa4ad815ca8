"""GLUE metric for ``evaluate.load(path_to_this_file, task)``, computed offline by ``hf_prokt.metrics``.

Same configuration names and result keys as the Hub's ``glue`` metric (``evaluate-metric/glue``):
cola, sst2, mrpc, qqp, stsb, mnli, mnli_matched, mnli_mismatched, qnli, rte, wnli (not ``hans``).
An unknown configuration raises ``ValueError`` (the Hub metric raises ``KeyError``).
"""

import datasets
import evaluate

from hf_prokt.metrics import get_glue_task, glue_metrics

_CITATION = """\
@inproceedings{wang2019glue,
  title={{GLUE}: A Multi-Task Benchmark and Analysis Platform for Natural Language Understanding},
  author={Wang, Alex and Singh, Amanpreet and Michael, Julian and Hill, Felix and Levy, Omer and Bowman, Samuel R.},
  note={In the Proceedings of ICLR.},
  year={2019}
}
"""

_DESCRIPTION = "GLUE benchmark metrics (https://gluebenchmark.com/), computed locally with scikit-learn and scipy."

_KWARGS_DESCRIPTION = """
Args:
    predictions: [N] predicted class ids (float scores for stsb).
    references: [N] gold class ids (float scores for stsb).
Returns, depending on the task:
    cola: matthews_correlation; mrpc, qqp: accuracy and f1 (of class 1); stsb: pearson and spearmanr;
    sst2, mnli, mnli_matched, mnli_mismatched, qnli, rte, wnli: accuracy.
"""


class Glue(evaluate.Metric):
    """The GLUE metric of one task, chosen by the configuration name given to ``evaluate.load``."""

    def _info(self):
        value_type = "float32" if get_glue_task(self.config_name).is_regression else "int64"
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value(value_type), "references": datasets.Value(value_type)}
            ),
            format="numpy",
        )

    def _compute(self, predictions, references):
        return glue_metrics(self.config_name, predictions, references)
