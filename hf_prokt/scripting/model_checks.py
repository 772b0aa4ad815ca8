"""Checks of the checkpoints a script is about to load, made from their configs before any weight is loaded.

- `checkpoint_configs`: the config of every checkpoint `build_teacher_and_student` will load, with the flag
  that names it;
- `check_architectures`: refuses a checkpoint fine-tuned for another kind of task than the script's (a
  token classifier given to ``run_glue.py``): loaded as the script's model class, it would silently lose its
  head and get a fresh one, with only a "missing weights" line in the log;
- `check_max_seq_length`: refuses a ``--max_seq_length`` longer than a model's position embeddings (or its
  tokenizer's ``model_max_length``): the run would crash at the first example that long, mid-training.
"""

from __future__ import annotations

from collections.abc import Sequence

from transformers import AutoConfig, PretrainedConfig

from .arguments import TeacherStudentArguments, loads_teacher


def checkpoints_to_load(args: TeacherStudentArguments, strategy: str,
                        also_teacher: bool = False) -> list[tuple[str, str]]:
    """``(flag, checkpoint)`` for each checkpoint `build_teacher_and_student` loads with these arguments: the
    teacher when it is loaded, then the student's source (``--student_init_from``, or ``--model_name_or_path``
    when the student is not built from the teacher's layers)."""
    found = []
    if loads_teacher(args, strategy, also_teacher):
        found.append(("--teacher_model_name_or_path", args.teacher_model_name_or_path))
    if args.student_init_from:
        found.append(("--student_init_from", args.student_init_from))
    elif not args.student_num_layers and args.model_name_or_path:
        found.append(("--model_name_or_path", args.model_name_or_path))
    return found


def checkpoint_configs(args, strategy: str, also_teacher: bool = False) -> list[tuple[str, str, PretrainedConfig]]:
    """``(flag, checkpoint, config)`` for each checkpoint of `checkpoints_to_load`; only the configs are read.
    ``args`` holds `TeacherStudentArguments` and `HubLoadingArguments` (a script's ``ModelArguments``)."""
    return [(flag, path, AutoConfig.from_pretrained(path, cache_dir=args.cache_dir, revision=args.model_revision,
                                                    token=args.token, trust_remote_code=args.trust_remote_code))
            for flag, path in checkpoints_to_load(args, strategy, also_teacher)]


# The heads each script builds, the heads it refuses, and the script that trains those.
_OTHER_TASKS = {
    "sequence-classification": ("ForTokenClassification", "token-classification",
                                "examples/token_classification/run_ner.py"),
    "token-classification": ("ForSequenceClassification", "sequence-classification", "examples/glue/run_glue.py"),
}


def check_architectures(configs: Sequence[tuple[str, str, PretrainedConfig]], task: str, script: str) -> None:
    """Refuse a checkpoint whose config's ``architectures`` is a model of the other text task.

    Args:
        configs: `checkpoint_configs`.
        task: the script's task, ``"sequence-classification"`` or ``"token-classification"``.
        script: the script's name, for the message (``"run_glue.py"``).

    Raises:
        ValueError: naming the flag, the checkpoint, its architecture and the script to use.
    """
    suffix, other_task, other_script = _OTHER_TASKS[task]
    for flag, path, config in configs:
        wrong = [name for name in (getattr(config, "architectures", None) or []) if name.endswith(suffix)]
        if wrong:
            raise ValueError(
                f"{flag} {path} is a {other_task} checkpoint ({wrong[0]}), but {script} trains "
                f"{task} models: loaded as one, it would lose its head and get a new one. For {other_task}, use "
                f"{other_script}; here, give a {task} checkpoint or a pretrained (not fine-tuned) one."
            )


# Models whose position ids start after the padding index (RoBERTa's scheme), so that ``padding_idx + 1`` of
# their ``max_position_embeddings`` rows are never a position: 514 rows hold 512 positions.
PADDING_OFFSET_MODEL_TYPES = frozenset({
    "roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "longformer", "data2vec-text", "ibert",
    "roberta-prelayernorm", "mpnet", "xmod", "markuplm", "luke",
})
# Beyond this, a tokenizer's model_max_length means "not set" (transformers uses int(1e30)).
_UNSET_TOKENIZER_LENGTH = 1_000_000


def position_limit(config: PretrainedConfig) -> tuple[int, str] | None:
    """``(longest input in tokens, why)`` that the model of ``config`` embeds positions for, or None when it
    has no such limit (no absolute position embeddings)."""
    positions = getattr(config, "max_position_embeddings", None)
    if not isinstance(positions, int) or positions <= 0:
        return None
    if config.model_type in ("deberta", "deberta-v2") and not getattr(config, "position_biased_input", True):
        return None  # relative positions only
    if config.model_type in PADDING_OFFSET_MODEL_TYPES:
        offset = (config.pad_token_id if config.pad_token_id is not None else 1) + 1
        return positions - offset, f"max_position_embeddings {positions} less the padding offset {offset}"
    return positions, f"max_position_embeddings {positions}"


def check_max_seq_length(max_seq_length: int, configs: Sequence[tuple[str, str, PretrainedConfig]] = (),
                         tokenizer=None, flag: str = "--max_seq_length") -> None:
    """Refuse a ``--max_seq_length`` (or the length flag ``flag``, e.g. ``--block_size``) above what a model to be
    loaded (`checkpoint_configs`) or the tokenizer accepts: the tokenizer's ``model_max_length`` counts when it is
    set and smaller.

    Raises:
        ValueError: naming the flag, the checkpoint (or tokenizer), its limit and where the limit comes from.
    """
    limits = []
    for model_flag, path, config in configs:
        found = position_limit(config)
        if found is not None:
            limits.append((found[0], f"{model_flag} {path} ({found[1]})"))
    length = getattr(tokenizer, "model_max_length", None)
    if isinstance(length, int) and 0 < length < _UNSET_TOKENIZER_LENGTH:
        limits.append((length, f"the tokenizer of {tokenizer.name_or_path} (model_max_length {length})"))
    if not limits:
        return
    limit, source = min(limits, key=lambda item: item[0])
    if max_seq_length > limit:
        raise ValueError(
            f"{flag} {max_seq_length} is longer than the {limit} tokens of {source}: the first "
            f"example that long would crash the run. Pass {flag} {limit} or less."
        )
