"""Argument dataclasses shared by the example scripts, and the way they build a teacher and a student.

``run_glue.py``, ``run_ner.py`` and ``run_image_classification.py`` each parse three dataclasses with
`transformers.HfArgumentParser`: their own ``ModelArguments`` and ``DataTrainingArguments`` and
`ProKTTrainingArguments`. The flags the scripts have in common live here once, as small dataclasses the
scripts' own classes inherit from, so that a flag means the same thing (and is checked the same way) in
every script:

- `HubLoadingArguments`: where and how checkpoints are loaded (cache, revision, token, remote code, heads
  resized to the data's labels);
- `TeacherStudentArguments`: the teacher and the student of a text script, the student either a checkpoint
  or built from a teacher's (or another checkpoint's) layers; `build_teacher_and_student` reads them;
- `CompressionArguments`: ``--measure_compression`` and its settings;
- `RunOutputArguments`: ``--overwrite_output_dir`` and ``--plot``;
- `parse_config_and_flags`: a JSON config whose values flags on the command line override.

A script built like the examples can import them the same way.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from torch import nn

from ..compression import record_compression
from ..strategies import strategy_class
from ..students import student_from_teacher


@dataclass
class HubLoadingArguments:
    cache_dir: str | None = field(default=None, metadata={"help": "Where downloaded models and data are stored."})
    model_revision: str = field(default="main", metadata={"help": "Model revision (branch, tag or commit)."})
    token: str | None = field(default=None, metadata={"help": "Hub token for private models."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow custom model code from the Hub."})
    ignore_mismatched_sizes: bool = field(
        default=False,
        metadata={"help": "Give a pretrained checkpoint a new classification head when its size differs from the "
                          "data's labels (e.g. a checkpoint fine-tuned on another label set)."},
    )


@dataclass
class TeacherStudentArguments:
    teacher_model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Teacher: a Hub id or local folder of a checkpoint of the script's task (pretrained for "
                          "prokt, already fine-tuned on these labels for kd). Not used by finetune."},
    )
    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Student: a Hub id or local folder. Leave out and set --student_num_layers to build the "
                          "student from the teacher."},
    )
    student_num_layers: int | None = field(
        default=None,
        metadata={"help": "Build the student from the teacher: its config with N layers, initialised from N "
                          "uniformly spaced teacher layers (embeddings copied; selected when --student_hidden_size "
                          "etc. make it narrower)."},
    )
    student_init_from: str | None = field(
        default=None,
        metadata={"help": "With --student_num_layers: build the student from this checkpoint's layers (e.g. the "
                          "pretrained one the teacher was fine-tuned from) instead of the teacher's, so that a KD "
                          "student does not start with the fine-tuned teacher's layers and head."},
    )
    student_hidden_size: int | None = field(
        default=None,
        metadata={"help": "With --student_num_layers, for BERT, RoBERTa, XLM-RoBERTa, ELECTRA or DistilBERT: a "
                          "narrower student of this hidden size, its weights selected from the teacher's at evenly "
                          "spaced indices (default: the teacher's width)."},
    )
    student_intermediate_size: int | None = field(
        default=None,
        metadata={"help": "With --student_num_layers: the narrower student's feed-forward size (default: the "
                          "teacher's ratio to the hidden size, e.g. 1248 for 312 from BERT-base)."},
    )
    student_num_attention_heads: int | None = field(
        default=None,
        metadata={"help": "With --student_num_layers: the narrower student's attention heads, each selected whole "
                          "from one teacher head (default: the teacher's head size kept when the hidden size divides "
                          "by it, else the teacher's head count)."},
    )
    student_init: Literal["teacher", "random"] = field(
        default="teacher",
        metadata={"help": "With --student_num_layers: 'teacher' initialises the student from the teacher's (or "
                          "--student_init_from's) weights; 'random' builds the same student config freshly "
                          "initialised, as a baseline."},
    )
    tokenizer_name: str | None = field(
        default=None, metadata={"help": "Tokenizer (default: the teacher's, else the student's). It serves both."}
    )

    def student_width_arguments(self) -> dict:
        """The keyword arguments of `student_from_teacher` these flags give (width and init)."""
        return dict(hidden_size=self.student_hidden_size, intermediate_size=self.student_intermediate_size,
                    num_attention_heads=self.student_num_attention_heads, init=self.student_init)


@dataclass
class CompressionArguments:
    measure_compression: bool = field(
        default=False,
        metadata={"help": "After training, measure the student against the teacher (parameters, safetensors size, "
                          "inference latency on the training device): into all_results.json and the model card."},
    )
    compression_batch_sizes: list[int] = field(
        default_factory=lambda: [1, 32],
        metadata={"help": "Batch sizes timed by --measure_compression (the first is the headline speedup)."},
    )
    compression_repeats: int = field(
        default=20, metadata={"help": "Timed forwards per model and batch size (median reported)."}
    )


def measure_text_compression(trainer, teacher: nn.Module, dataset, data_collator, args: CompressionArguments) -> dict:
    """`hf_prokt.compression.record_compression` of ``trainer``'s student against ``teacher`` on a batch of the
    tokenized ``dataset`` (its ``input_ids``, ``attention_mask``, ``token_type_ids``), on the training device."""
    inputs = [name for name in ("input_ids", "attention_mask", "token_type_ids") if name in dataset.column_names]
    rows = dataset.select_columns(inputs).select(range(min(len(dataset), max(args.compression_batch_sizes))))
    return record_compression(trainer, teacher, data_collator([rows[i] for i in range(len(rows))]),
                              args.compression_batch_sizes, args.compression_repeats)


@dataclass
class RunOutputArguments:
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Train into an output_dir that holds an earlier run: its checkpoints, results, plot and "
                          "model are moved into output_dir/.previous-run, deleted once the new student is saved and "
                          "put back if the new run fails before its first checkpoint (without this flag, or "
                          "--resume_from_checkpoint, it is refused)."},
    )
    plot: bool = field(
        default=False,
        metadata={"help": "Save training_curves.png in output_dir: the student's and the teacher's metric over "
                          "steps and the KL between them (needs matplotlib; evaluate during training for more than "
                          "one point)."},
    )


def loads_teacher(args: TeacherStudentArguments, strategy: str, also_teacher: bool = False) -> bool:
    """Whether `build_teacher_and_student` loads the teacher: when it returns it (``kd``, ``prokt`` or
    ``also_teacher``) or builds the student from its layers. A script whose label order follows the loaded
    model's head asks this first."""
    if not args.teacher_model_name_or_path:
        return False
    builds_from_teacher = bool(args.student_num_layers) and not args.student_init_from
    return strategy_class(strategy).needs_teacher or also_teacher or builds_from_teacher


def build_teacher_and_student(
    args: TeacherStudentArguments, strategy: str, load: Callable[[str], nn.Module], also_teacher: bool = False,
) -> tuple[nn.Module | None, nn.Module]:
    """The teacher the strategy trains with (None for ``finetune``, unless ``also_teacher``) and the student,
    as the flags of `TeacherStudentArguments` name them.

    Args:
        args: the script's model arguments.
        strategy: ``"finetune"``, ``"kd"`` or ``"prokt"``.
        load: loads a checkpoint (Hub id or folder) as the script's model class, with the data's labels.
        also_teacher: return the teacher for ``finetune`` too (e.g. to measure the student against it),
            loaded once even when the student is built from it.

    The student is, in this order: ``student_num_layers`` layers of ``student_init_from``; that many layers of
    the teacher; or the checkpoint ``model_name_or_path``. A student built from layers is as wide as its
    source unless ``student_hidden_size``, ``student_intermediate_size`` or ``student_num_attention_heads``
    narrow it, and initialised from the source's weights unless ``student_init="random"`` (see
    `student_from_teacher`). The teacher is loaded only when it is returned or the student is built from it.

    Raises:
        ValueError: before anything is loaded, for a combination of flags that names no student, or no teacher
            where one is needed, or width / init flags without ``student_num_layers``.
    """
    needs_teacher = strategy_class(strategy).needs_teacher
    returns_teacher = needs_teacher or also_teacher
    init_from, num_layers = args.student_init_from, args.student_num_layers
    teacher_path = args.teacher_model_name_or_path
    if init_from and (not num_layers or args.model_name_or_path):
        raise ValueError("--student_init_from builds the student from a checkpoint's layers: give "
                         "--student_num_layers N, and no --model_name_or_path.")
    if needs_teacher and not teacher_path:
        raise ValueError(f"--strategy {strategy} needs --teacher_model_name_or_path.")
    if num_layers and not init_from and not teacher_path:
        raise ValueError("--student_num_layers builds the student from the teacher: give "
                         "--teacher_model_name_or_path (or --student_init_from).")
    if not num_layers and not args.model_name_or_path:
        raise ValueError("Give the student: --model_name_or_path, or --student_num_layers N with a teacher.")
    width = args.student_width_arguments()
    given = [f"--student_{name}" for name, value in width.items()
             if value is not None and (name, value) != ("init", "teacher")]
    if given and not num_layers:
        raise ValueError(f"{', '.join(given)}: only for a student built from a teacher's (or --student_init_from's) "
                         "layers: give --student_num_layers N (and no --model_name_or_path), or leave them out.")

    teacher = load(teacher_path) if loads_teacher(args, strategy, also_teacher) else None
    if init_from:
        student = student_from_teacher(load(init_from), num_layers, **width)
    elif num_layers:
        student = student_from_teacher(teacher, num_layers, **width)
    else:
        student = load(args.model_name_or_path)
    return (teacher if returns_teacher else None), student


def parse_config_and_flags(parser, argv: list[str]) -> tuple:
    """Parse command-line flags into an ``HfArgumentParser``'s dataclasses, or a JSON config followed by flags
    that override it (``run.py configs/prokt.json --output_dir runs/x``).

    The file's values stand where no flag is given (``null`` meaning the field's default); the merged values
    become the dataclasses through ``HfArgumentParser.parse_dict``, which refuses a key no dataclass has.
    """
    if not argv or not argv[0].endswith(".json"):
        return parser.parse_args_into_dataclasses(argv)
    with open(argv[0]) as f:
        config = {key: value for key, value in json.load(f).items() if value is not None}
    # argparse keeps what a given namespace already holds and sets only the flags it parses over it.
    merged = parser.parse_args(list(argv[1:]), namespace=argparse.Namespace(**config))
    return parser.parse_dict(vars(merged))
