"""ProKT knowledge distillation for the Hugging Face `Trainer`."""

from .arguments import ProKTTrainingArguments
from .students import student_from_teacher
from .trainer import ProKTTrainer

__all__ = ["ProKTTrainer", "ProKTTrainingArguments", "student_from_teacher"]
__version__ = "0.1.0"
