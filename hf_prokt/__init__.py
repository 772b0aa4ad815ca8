"""ProKT knowledge distillation for the Hugging Face `Trainer`."""

from .arguments import ProKTTrainingArguments
from .compression import CompressionReport, measure_compression
from .students import student_from_teacher
from .teacher.lm_topk_cache import cache_teacher_topk, load_or_cache_teacher_topk
from .teacher.logit_cache import cache_teacher_logits, load_or_cache_teacher_logits
from .trainer import ProKTTrainer

__all__ = ["CompressionReport", "ProKTTrainer", "ProKTTrainingArguments", "cache_teacher_logits",
           "cache_teacher_topk", "load_or_cache_teacher_logits", "load_or_cache_teacher_topk", "measure_compression",
           "student_from_teacher"]
__version__ = "0.1.0"
