"""`hf_prokt.scripting.arguments`: the flags the three example scripts share mean the same in each, and
`build_teacher_and_student` loads exactly the checkpoints a strategy needs and builds the student from the
right one."""

import pytest
import torch
from transformers import HfArgumentParser

from hf_prokt import ProKTTrainingArguments
from hf_prokt.scripting.arguments import TeacherStudentArguments, build_teacher_and_student, loads_teacher
from tests.conftest import load_example, tiny_bert
from tests.test_image_classification import SCRIPT as IMAGE_SCRIPT
from tests.test_run_glue import SCRIPT as GLUE_SCRIPT
from tests.test_run_ner import SCRIPT as NER_SCRIPT

SHARED_FLAGS = ["--cache_dir", "cache", "--model_revision", "v2", "--token", "secret", "--trust_remote_code", "true",
                "--ignore_mismatched_sizes", "true", "--overwrite_output_dir", "true", "--plot", "true"]
SCRIPTS = {  # script, the name it is loaded as, the flags its data arguments need
    "glue": (GLUE_SCRIPT, "run_glue", ["--task_name", "sst2"]),
    "ner": (NER_SCRIPT, "run_ner", ["--train_file", "train.txt"]),
    "image": (IMAGE_SCRIPT, "run_image_classification", []),
}


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_every_script_parses_the_shared_flags_alike(name):
    path, module, data_flags = SCRIPTS[name]
    script = load_example(path, module)
    parser = HfArgumentParser((script.ModelArguments, script.DataTrainingArguments, ProKTTrainingArguments))
    model_args, data_args, _ = parser.parse_args_into_dataclasses(
        args=[*SHARED_FLAGS, *data_flags, "--output_dir", "out"])
    assert (model_args.cache_dir, model_args.model_revision, model_args.token) == ("cache", "v2", "secret")
    assert model_args.trust_remote_code and model_args.ignore_mismatched_sizes
    assert data_args.overwrite_output_dir and data_args.plot
    if name != "ner":  # the scripts that measure compression
        compression, _ = HfArgumentParser((script.ModelArguments, ProKTTrainingArguments)).parse_args_into_dataclasses(
            args=["--measure_compression", "true", "--compression_batch_sizes", "4", "8", "--output_dir", "out"])
        assert compression.measure_compression and compression.compression_batch_sizes == [4, 8]
    if name != "image":  # the text scripts build students from a teacher's or another checkpoint's layers
        assert isinstance(model_args, TeacherStudentArguments)


class RecordingLoader:
    """``load(name)`` for `build_teacher_and_student`: hands out tiny 4-layer BERTs (one per name, different
    weights) and records which names were loaded."""

    def __init__(self):
        self.loaded, self.models = [], {}

    def __call__(self, name):
        self.loaded.append(name)
        return self.models.setdefault(name, tiny_bert(layers=4, seed=len(self.models) + 3))


def layers_equal(student, source, source_layers):
    return all(torch.equal(s, t) for i, j in enumerate(source_layers)
               for s, t in zip(student.bert.encoder.layer[i].parameters(), source.bert.encoder.layer[j].parameters()))


@pytest.mark.parametrize("strategy", ["finetune", "kd", "prokt"])
def test_the_student_comes_from_student_init_from_and_the_teacher_is_loaded_only_when_trained_with(strategy):
    load = RecordingLoader()
    args = TeacherStudentArguments(teacher_model_name_or_path="teacher", student_num_layers=2,
                                   student_init_from="pretrained")
    teacher, student = build_teacher_and_student(args, strategy, load)
    assert load.loaded == (["pretrained"] if strategy == "finetune" else ["teacher", "pretrained"])
    assert (teacher is None) == (strategy == "finetune")
    assert student.config.num_hidden_layers == 2
    assert layers_equal(student, load.models["pretrained"], [0, 2])
    assert student.config.student_from_teacher["teacher_layers"] == [0, 2]
    if teacher is not None:
        assert teacher is load.models["teacher"] and not layers_equal(student, teacher, [0, 2])


@pytest.mark.parametrize("strategy", ["finetune", "kd"])
def test_without_student_init_from_the_student_is_built_from_the_teacher(strategy):
    load = RecordingLoader()
    teacher, student = build_teacher_and_student(
        TeacherStudentArguments(teacher_model_name_or_path="teacher", student_num_layers=2), strategy, load)
    assert load.loaded == ["teacher"] and (teacher is None) == (strategy == "finetune")
    assert layers_equal(student, load.models["teacher"], [0, 2])


@pytest.mark.parametrize("student_flags", [dict(student_num_layers=2), dict(model_name_or_path="student")])
def test_also_teacher_returns_a_finetune_teacher_loaded_once(student_flags):
    load = RecordingLoader()
    teacher, student = build_teacher_and_student(
        TeacherStudentArguments(teacher_model_name_or_path="teacher", **student_flags), "finetune", load,
        also_teacher=True)
    assert load.loaded.count("teacher") == 1 and teacher is load.models["teacher"]
    assert student is not teacher


@pytest.mark.parametrize("strategy", ["finetune", "kd", "prokt"])
@pytest.mark.parametrize("also_teacher", [False, True])
@pytest.mark.parametrize("student_flags", [dict(student_num_layers=2), dict(model_name_or_path="student"),
                                           dict(student_num_layers=2, student_init_from="pretrained")])
def test_loads_teacher_says_whether_the_teacher_is_loaded(strategy, also_teacher, student_flags):
    args = TeacherStudentArguments(teacher_model_name_or_path="teacher", **student_flags)
    load = RecordingLoader()
    build_teacher_and_student(args, strategy, load, also_teacher=also_teacher)
    assert loads_teacher(args, strategy, also_teacher) == ("teacher" in load.loaded)


def test_a_student_checkpoint_is_loaded_as_it_is():
    load = RecordingLoader()
    teacher, student = build_teacher_and_student(
        TeacherStudentArguments(teacher_model_name_or_path="teacher", model_name_or_path="student"), "prokt", load)
    assert load.loaded == ["teacher", "student"]
    assert teacher is load.models["teacher"] and student is load.models["student"]


WIDTH_FLAGS = ["--student_hidden_size", "8", "--student_intermediate_size", "12", "--student_num_attention_heads", "2",
               "--student_init", "random"]


@pytest.mark.parametrize("name", ["glue", "ner"])
def test_the_text_scripts_parse_and_show_the_student_width_flags(name):
    path, module, data_flags = SCRIPTS[name]
    script = load_example(path, module)
    parser = HfArgumentParser((script.ModelArguments, script.DataTrainingArguments, ProKTTrainingArguments))
    model_args, _, _ = parser.parse_args_into_dataclasses(
        args=[*WIDTH_FLAGS, "--student_num_layers", "2", *data_flags, "--output_dir", "out"])
    assert (model_args.student_hidden_size, model_args.student_intermediate_size,
            model_args.student_num_attention_heads, model_args.student_init) == (8, 12, 2, "random")
    defaults, _, _ = parser.parse_args_into_dataclasses(args=[*data_flags, "--output_dir", "out"])
    assert (defaults.student_hidden_size, defaults.student_intermediate_size, defaults.student_num_attention_heads,
            defaults.student_init) == (None, None, None, "teacher")
    shown = parser.format_help()
    for flag in ("--student_hidden_size", "--student_intermediate_size", "--student_num_attention_heads",
                 "--student_init {teacher,random}"):
        assert flag in shown
    with pytest.raises(SystemExit):  # argparse refuses an init that is neither
        parser.parse_args_into_dataclasses(args=["--student_init", "pretrained", *data_flags, "--output_dir", "out"])


@pytest.mark.parametrize("init_from", [None, "pretrained"])
def test_the_width_flags_reach_student_from_teacher(init_from):
    load = RecordingLoader()  # 4-layer BERTs 16 wide, 2 heads of 8, feed-forward 32
    args = TeacherStudentArguments(teacher_model_name_or_path="teacher", student_num_layers=2,
                                   student_init_from=init_from, student_hidden_size=8,
                                   student_num_attention_heads=2, student_intermediate_size=12)
    _, student = build_teacher_and_student(args, "kd", load)
    source = load.models[init_from or "teacher"]
    config = student.config
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads, config.intermediate_size) == \
        (2, 8, 2, 12)
    # selected from the source: word embedding columns 0, 2, ..., 14; feed-forward rows floor(i * 32 / 12)
    assert torch.equal(student.bert.embeddings.word_embeddings.weight,
                       source.bert.embeddings.word_embeddings.weight[:, ::2])
    assert torch.equal(student.bert.encoder.layer[1].intermediate.dense.bias,
                       source.bert.encoder.layer[2].intermediate.dense.bias[[0, 2, 5, 8, 10, 13, 16, 18, 21, 24, 26,
                                                                             29]])
    assert config.student_from_teacher["init"] == "teacher"

    load = RecordingLoader()
    args = TeacherStudentArguments(teacher_model_name_or_path="teacher", student_num_layers=2,
                                   student_init_from=init_from, student_hidden_size=8, student_init="random")
    _, random = build_teacher_and_student(args, "kd", load)
    assert random.config.student_from_teacher["init"] == "random" and random.config.hidden_size == 8
    assert torch.equal(random.bert.embeddings.LayerNorm.weight, torch.ones(8))


@pytest.mark.parametrize("flags, strategy, message", [
    (dict(student_num_layers=2), "prokt", "--strategy prokt needs --teacher_model_name_or_path"),
    (dict(teacher_model_name_or_path="t", model_name_or_path="s", student_hidden_size=8), "kd",
     "--student_hidden_size: only for a student built from a teacher.s .*give --student_num_layers N"),
    (dict(teacher_model_name_or_path="t", model_name_or_path="s", student_intermediate_size=8,
          student_num_attention_heads=2), "finetune",
     "--student_intermediate_size, --student_num_attention_heads: only for a student built from"),
    (dict(teacher_model_name_or_path="t", model_name_or_path="s", student_init="random"), "prokt",
     "--student_init: only for a student built from"),
    (dict(student_num_layers=2), "finetune", "--student_num_layers builds the student from the teacher"),
    (dict(student_init_from="pretrained", teacher_model_name_or_path="t"), "kd", "give --student_num_layers N"),
    (dict(student_init_from="pretrained", student_num_layers=2, model_name_or_path="s"), "finetune",
     "and no --model_name_or_path"),
    (dict(teacher_model_name_or_path="t"), "kd", "Give the student"),
])
def test_flag_combinations_that_name_no_model_are_refused_before_loading_anything(flags, strategy, message):
    load = RecordingLoader()
    with pytest.raises(ValueError, match=message):
        build_teacher_and_student(TeacherStudentArguments(**flags), strategy, load)
    assert load.loaded == []
