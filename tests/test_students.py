"""`student_from_teacher`: shallower students of any architecture with one layer list, and narrower BERT-family
students whose weights are selected from the teacher's at evenly spaced indices."""

import re

import pytest
import torch
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    BertConfig,
    BertForMaskedLM,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
    DistilBertConfig,
    DistilBertForMaskedLM,
    DistilBertForSequenceClassification,
    ElectraConfig,
    ElectraForMaskedLM,
    ElectraForSequenceClassification,
    ElectraModel,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    RobertaConfig,
    RobertaForMaskedLM,
    RobertaForSequenceClassification,
    XLMRobertaConfig,
    XLMRobertaForSequenceClassification,
)

from hf_prokt import student_from_teacher
from hf_prokt.model_card import student_origin
from hf_prokt.students import uniform_indices, uniform_layer_selection
from tests.conftest import tiny_bert

VOCAB = 40


def test_uniform_layer_selection():
    assert uniform_layer_selection(12, 6) == [0, 2, 4, 6, 8, 10]
    assert uniform_layer_selection(6, 2) == [0, 3]
    assert uniform_layer_selection(4, 4) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="1..4"):
        uniform_layer_selection(4, 5)


def test_uniform_indices():
    assert uniform_indices(16, 8) == [0, 2, 4, 6, 8, 10, 12, 14]
    assert uniform_indices(768, 312)[:6] == [0, 2, 4, 7, 9, 12]  # 768 / 312 = 2.46 apart
    assert uniform_indices(5, 5) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("layers", [None, [1, 3]])
def test_student_layers_equal_the_chosen_teacher_layers(layers):
    teacher = tiny_bert(layers=4, hidden=16, id2label={0: "neg", 1: "pos"}, label2id={"neg": 0, "pos": 1})
    student = student_from_teacher(teacher, 2, layers=layers)
    chosen = layers or [0, 2]
    assert student.config.num_hidden_layers == 2 and teacher.config.num_hidden_layers == 4
    assert type(student) is type(teacher) and student.config.label2id == {"neg": 0, "pos": 1}
    for student_index, teacher_index in enumerate(chosen):
        s_layer, t_layer = student.bert.encoder.layer[student_index], teacher.bert.encoder.layer[teacher_index]
        for (name, s_param), (_, t_param) in zip(s_layer.named_parameters(), t_layer.named_parameters()):
            assert torch.equal(s_param, t_param), name
    for name in ("bert.embeddings.word_embeddings.weight", "bert.pooler.dense.weight", "classifier.weight"):
        assert torch.equal(student.state_dict()[name], teacher.state_dict()[name])
    # A copy, not a view: training the student leaves the teacher alone.
    with torch.no_grad():
        student.classifier.weight.add_(1.0)
    assert not torch.equal(student.classifier.weight, teacher.classifier.weight)
    data = torch.randint(5, 40, (2, 6))
    assert student(input_ids=data).logits.shape == (2, 2)
    # A depth-only student's record is the same as before widths existed.
    assert student.config.student_from_teacher == {"teacher": None, "teacher_num_layers": 4,
                                                   "teacher_layers": chosen}


def test_bad_layer_choice():
    with pytest.raises(ValueError, match="must name 2 teacher layers"):
        student_from_teacher(tiny_bert(layers=4), 2, layers=[0, 4])


# ---- Narrower students: weight selection ----

def scrambled(model):
    """Every parameter drawn afresh (N(0, 1)), so that LayerNorm ones and zero biases do not hide a wrong index."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator))
    return model.eval()


def bert_config(**overrides):
    kwargs = dict(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=4, num_attention_heads=4, intermediate_size=32,
                  max_position_embeddings=32, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                  num_labels=3)
    kwargs.update(overrides)
    return kwargs


def make(model_class, config_class, **overrides):
    torch.manual_seed(0)
    return scrambled(model_class(config_class(**bert_config(**overrides))))


def distilbert(model_class=DistilBertForSequenceClassification, **overrides):
    torch.manual_seed(0)
    config = DistilBertConfig(vocab_size=VOCAB, dim=16, n_layers=4, n_heads=4, hidden_dim=32,
                              max_position_embeddings=32, dropout=0.0, attention_dropout=0.0, num_labels=3,
                              **overrides)
    return scrambled(model_class(config))


# The expected indices of a student 6 wide with 2 heads (and the default feed-forward 32 * 6 / 16 = 12) of a
# teacher 16 wide with 4 heads of 4 and feed-forward 32, written out by hand: hidden floor(i * 16 / 6), teacher
# heads 0 and 2 (floor(i * 4 / 2)), head dims 0, 1, 2 of each (floor(i * 4 / 3)), neurons floor(i * 32 / 12).
HIDDEN_6 = [0, 2, 5, 8, 10, 13]
HEADS_2x3 = [0, 1, 2, 8, 9, 10]
FFN_12 = [0, 2, 5, 8, 10, 13, 16, 18, 21, 24, 26, 29]
H, A, F, E = "hidden", "heads", "ffn", "embedding"


def expected_axes(name):
    """The test's reading of each parameter's axes (None: kept whole: vocabulary, positions, labels)."""
    if re.search(r"(query|key|value|[qkv]_lin)\.weight$", name):
        return (A, H)
    if re.search(r"(query|key|value|[qkv]_lin)\.bias$", name):
        return (A,)
    if re.search(r"(attention\.output\.dense|out_lin)\.weight$", name):
        return (H, A)
    if re.search(r"(intermediate\.dense|lin1)\.weight$", name):
        return (F, H)
    if re.search(r"(intermediate\.dense|lin1)\.bias$", name):
        return (F,)
    if re.search(r"(layer\.\d+\.output\.dense|lin2)\.weight$", name):
        return (H, F)
    if name.startswith("generator_predictions."):
        return (E, H) if name.endswith("dense.weight") else (E,)
    if name.startswith("generator_lm_head."):
        return (None, E) if name.endswith("weight") else (None,)
    if re.search(r"embeddings\.\w+_embeddings\.weight$", name):
        return (None, E)
    if re.search(r"embeddings\.LayerNorm\.", name):
        return (E,)
    if name.endswith("embeddings_project.weight"):
        return (H, E)
    if re.search(r"(decoder|vocab_projector|out_proj)\.weight$", name) or name == "classifier.weight":
        return (None, H)
    if re.search(r"(decoder|vocab_projector|out_proj|predictions)\.bias$", name) or name in ("classifier.bias",
                                                                                           "lm_head.bias"):
        return (None,)
    if re.search(r"(dense|pre_classifier|vocab_transform)\.weight$", name):
        return (H, H)
    return (H,)  # LayerNorms and the remaining biases


def assert_selected(student, teacher, teacher_layers, indices):
    """Every student tensor is the teacher's (layer ``teacher_layers[i]`` for student layer ``i``) at ``indices``."""
    teacher_state, student_state = teacher.state_dict(), student.state_dict()
    for name, tensor in student_state.items():
        teacher_name = re.sub(r"\.layer\.(\d+)\.", lambda m: f".layer.{teacher_layers[int(m.group(1))]}.", name)
        expected = teacher_state[teacher_name]
        axes = expected_axes(name)
        assert expected.dim() == len(axes), name
        for dim, axis in enumerate(axes):
            if axis is not None:
                expected = expected.index_select(dim, torch.tensor(indices[axis]))
        assert torch.equal(tensor, expected), name


BERT_FAMILY = {
    "bert-sequence": (BertForSequenceClassification, BertConfig),
    "bert-token": (BertForTokenClassification, BertConfig),
    "bert-mlm": (BertForMaskedLM, BertConfig),
    "bert-headless": (BertModel, BertConfig),
    "roberta-sequence": (RobertaForSequenceClassification, RobertaConfig),
    "roberta-mlm": (RobertaForMaskedLM, RobertaConfig),
    "xlm-roberta-sequence": (XLMRobertaForSequenceClassification, XLMRobertaConfig),
    "electra-sequence": (ElectraForSequenceClassification, ElectraConfig),
    "electra-mlm": (ElectraForMaskedLM, ElectraConfig),
}


@pytest.mark.parametrize("name", sorted(BERT_FAMILY))
def test_every_student_tensor_is_the_teacher_tensor_at_the_evenly_spaced_indices(name):
    model_class, config_class = BERT_FAMILY[name]
    extra = dict(max_position_embeddings=34) if "roberta" in name else {}  # RoBERTa's positions start at 2
    if "electra" in name:
        extra = dict(embedding_size=16)  # no projection: the embeddings narrow with the hidden size
    teacher = make(model_class, config_class, **extra)
    student = student_from_teacher(teacher, 2, hidden_size=6, num_attention_heads=2)
    assert type(student) is model_class
    assert (student.config.hidden_size, student.config.num_attention_heads, student.config.intermediate_size) == \
        (6, 2, 12)
    assert_selected(student, teacher, [0, 2], {H: HIDDEN_6, A: HEADS_2x3, F: FFN_12, E: HIDDEN_6})
    positions = student.base_model.embeddings.position_embeddings.weight
    assert positions.shape == (teacher.config.max_position_embeddings, 6)  # every row, padding offset included
    if student.get_output_embeddings() is not None:  # the MLM decoder stays tied to the word embeddings
        assert student.get_output_embeddings().weight is student.get_input_embeddings().weight
    out = student(input_ids=torch.randint(5, VOCAB, (2, 7)))
    assert torch.isfinite(out[0]).all()


def test_electra_keeps_its_separate_embedding_width():
    for model_class in (ElectraForMaskedLM, ElectraModel):
        teacher = make(model_class, ElectraConfig, embedding_size=8)
        student = student_from_teacher(teacher, 2, hidden_size=6, num_attention_heads=2)
        assert (student.config.embedding_size, student.config.hidden_size) == (8, 6)
        assert_selected(student, teacher, [0, 2], {H: HIDDEN_6, A: HEADS_2x3, F: FFN_12, E: list(range(8))})
        assert student.base_model.embeddings_project.weight.shape == (6, 8)
    assert student.get_input_embeddings().weight.shape == (VOCAB, 8)
    # An ELECTRA whose embedding width is its hidden size narrows both: no projection in teacher or student.
    same = student_from_teacher(make(ElectraForMaskedLM, ElectraConfig, embedding_size=16), 2, hidden_size=6,
                                num_attention_heads=2)
    assert same.config.embedding_size == 6 and not hasattr(same.electra, "embeddings_project")


@pytest.mark.parametrize("model_class", [DistilBertForSequenceClassification, DistilBertForMaskedLM])
def test_distilbert_students_are_selected_too(model_class):
    teacher = distilbert(model_class)
    student = student_from_teacher(teacher, 2, hidden_size=6, num_attention_heads=2)
    assert (student.config.dim, student.config.n_heads, student.config.hidden_dim) == (6, 2, 12)
    assert_selected(student, teacher, [0, 2], {H: HIDDEN_6, A: HEADS_2x3, F: FFN_12, E: HIDDEN_6})
    if model_class is DistilBertForMaskedLM:
        assert student.vocab_projector.weight is student.distilbert.embeddings.word_embeddings.weight


@pytest.mark.parametrize("hidden, heads, head_dims, columns", [
    (8, 2, [0, 1, 2, 3], [0, 2, 4, 6, 8, 10, 12, 14]),  # the default: the head size 4 kept, 2 heads
    (4, 2, [0, 2], [0, 4, 8, 12]),  # heads of 2: dims 0 and 2 of each teacher head
])
def test_heads_are_selected_whole(hidden, heads, head_dims, columns):
    teacher = make(BertForSequenceClassification, BertConfig)  # 4 heads of 4
    asked = dict(hidden_size=hidden) if hidden == 8 else dict(hidden_size=hidden, num_attention_heads=heads)
    student = student_from_teacher(teacher, 2, **asked)
    assert student.config.num_attention_heads == heads
    d = len(head_dims)
    for s_layer, t_layer in zip(student.bert.encoder.layer, teacher.bert.encoder.layer[::2]):
        for part in ("query", "key", "value"):
            s_w, t_w = getattr(s_layer.attention.self, part).weight, getattr(t_layer.attention.self, part).weight
            # [heads, head dim, in]: student head k is teacher head 2k, at the same head dims, at the hidden columns
            assert torch.equal(s_w.view(heads, d, hidden), t_w.view(4, 4, 16)[[0, 2]][:, head_dims][:, :, columns])
        s_o, t_o = s_layer.attention.output.dense.weight, t_layer.attention.output.dense.weight
        assert torch.equal(s_o.view(hidden, heads, d), t_o.view(16, 4, 4)[columns][:, [0, 2]][:, :, head_dims])


@pytest.mark.parametrize("teacher_sizes, asked, expected", [
    ((16, 4, 32), dict(hidden_size=8), (8, 2, 16)),  # the teacher's head size 4 kept
    ((24, 4, 48), dict(hidden_size=12), (12, 2, 24)),  # head size 6 kept
    ((24, 4, 48), dict(hidden_size=8), (8, 4, 16)),  # 8 does not divide by 6: the teacher's 4 heads, of 2
    ((24, 4, 48), dict(hidden_size=8, num_attention_heads=2, intermediate_size=10), (8, 2, 10)),
    ((16, 4, 32), dict(intermediate_size=20), (16, 4, 20)),  # only the feed-forward narrower
    ((768, 12, 3072), dict(hidden_size=312), (312, 12, 1248)),  # TinyBERT's width from BERT-base: 12 heads of 26
])
def test_default_widths(teacher_sizes, asked, expected):
    hidden, heads, ffn = teacher_sizes
    teacher = BertModel(BertConfig(**bert_config(hidden_size=hidden, num_attention_heads=heads, intermediate_size=ffn,
                                                 num_hidden_layers=1, max_position_embeddings=4)))
    student = student_from_teacher(teacher, 1, **asked)
    config = student.config
    assert (config.hidden_size, config.num_attention_heads, config.intermediate_size) == expected
    record = config.student_from_teacher
    assert (record["student_hidden_size"], record["student_num_attention_heads"],
            record["student_intermediate_size"]) == expected
    assert (record["teacher_hidden_size"], record["teacher_num_attention_heads"],
            record["teacher_intermediate_size"]) == teacher_sizes
    assert record["init"] == "teacher"


def test_same_width_selection_is_the_depth_only_student():
    teacher = make(BertForMaskedLM, BertConfig)
    depth_only = student_from_teacher(teacher, 2, layers=[1, 3])
    same = student_from_teacher(teacher, 2, layers=[1, 3], hidden_size=16, intermediate_size=32, num_attention_heads=4)
    assert depth_only.state_dict().keys() == same.state_dict().keys()
    for name, tensor in depth_only.state_dict().items():
        assert torch.equal(tensor, same.state_dict()[name]), name
    assert same.cls.predictions.decoder.weight is same.bert.embeddings.word_embeddings.weight


def test_a_narrower_student_keeps_the_teachers_dtype():
    teacher = make(BertForSequenceClassification, BertConfig).to(torch.bfloat16)
    student = student_from_teacher(teacher, 2, hidden_size=6, num_attention_heads=2)
    assert {p.dtype for p in student.parameters()} == {torch.bfloat16}
    assert_selected(student, teacher, [0, 2], {H: HIDDEN_6, A: HEADS_2x3, F: FFN_12, E: HIDDEN_6})


def test_init_random_is_the_models_own_initialisation_of_the_same_config():
    teacher = make(BertForSequenceClassification, BertConfig)
    selected = student_from_teacher(teacher, 2, hidden_size=8)
    torch.manual_seed(5)
    random = student_from_teacher(teacher, 2, hidden_size=8, init="random")
    torch.manual_seed(5)
    reference = BertForSequenceClassification(random.config)
    for name, tensor in random.state_dict().items():
        assert torch.equal(tensor, reference.state_dict()[name]), name
        assert tensor.shape == selected.state_dict()[name].shape
        if tensor.dim() == 2:
            assert not torch.equal(tensor, selected.state_dict()[name]), name
    # _init_weights, not the scrambled teacher: LayerNorms at 1, word embeddings at initializer_range
    assert torch.equal(random.bert.embeddings.LayerNorm.weight, torch.ones(8))
    assert random.bert.embeddings.word_embeddings.weight.std().item() == pytest.approx(0.02, rel=0.3)
    assert (random.config.hidden_size, random.config.num_attention_heads, random.config.intermediate_size) == (8, 2, 16)
    assert random.config.student_from_teacher["init"] == "random"
    assert random.config.student_from_teacher["teacher_layers"] is None


@pytest.mark.parametrize("make_teacher, kwargs, message", [
    (lambda: make(BertForSequenceClassification, BertConfig), dict(hidden_size=13),
     r"hidden_size=13 divides neither by the teacher's head size 4 nor by its 4 heads"),
    (lambda: make(BertForSequenceClassification, BertConfig), dict(hidden_size=8, num_attention_heads=3),
     r"8 does not divide into 3 heads .* one of \[2, 4\]"),
    (lambda: make(BertForSequenceClassification, BertConfig), dict(num_attention_heads=2),
     r"2 heads of 8 are wider than the teacher's heads of 4 .* one of \[4\]"),
    (lambda: make(BertForSequenceClassification, BertConfig), dict(hidden_size=8, num_attention_heads=8),
     r"more than the teacher's 4 heads"),
    (lambda: make(BertForSequenceClassification, BertConfig), dict(hidden_size=32),
     r"hidden_size=32 is wider than the teacher's 16.*hidden_size <= 16"),
    (lambda: make(BertForSequenceClassification, BertConfig), dict(intermediate_size=64),
     r"intermediate_size=64 is wider than the teacher's 32"),
    (lambda: make(BertForSequenceClassification, BertConfig), dict(hidden_size=0), r"hidden_size=0 must be a positive"),
    (lambda: make(BertForQuestionAnswering, BertConfig), dict(hidden_size=8),
     r"no width rule .* covers \['qa_outputs\.weight', 'qa_outputs\.bias'\]"),
    (lambda: make(ElectraForSequenceClassification, ElectraConfig, embedding_size=8), dict(hidden_size=8),
     r"hidden_size=8 equals the teacher's embedding_size 8: such a student has no embeddings_project"),
    (lambda: distilbert(sinusoidal_pos_embds=True), dict(hidden_size=8), r"sinusoidal_pos_embds=True"),
    (lambda: make(BertForSequenceClassification, BertConfig), dict(init="selection"), r"init='selection': use"),
    (lambda: make(BertForSequenceClassification, BertConfig), dict(init="random", layers=[0, 1]),
     r"init='random' copies none"),
])
def test_refusals_name_the_numbers_and_the_fix(make_teacher, kwargs, message):
    with pytest.raises(ValueError, match=message):
        student_from_teacher(make_teacher(), 2, **kwargs)


@pytest.mark.parametrize("model_class, auto_class", [
    (BertForSequenceClassification, AutoModelForSequenceClassification),
    (BertForTokenClassification, AutoModelForTokenClassification),
    (BertForMaskedLM, AutoModelForMaskedLM),
    (BertModel, AutoModel),
    (RobertaForMaskedLM, AutoModelForMaskedLM),
    (ElectraForMaskedLM, AutoModelForMaskedLM),
    (DistilBertForSequenceClassification, AutoModelForSequenceClassification),
])
def test_a_narrower_student_reloads_with_from_pretrained(model_class, auto_class, tmp_path):
    if model_class is DistilBertForSequenceClassification:
        teacher = distilbert(model_class)
    else:
        config_class = {"Bert": BertConfig, "Roberta": RobertaConfig, "Electra": ElectraConfig}[
            re.match(r"[A-Z][a-z]+", model_class.__name__).group()]
        teacher = make(model_class, config_class, **(dict(embedding_size=8) if config_class is ElectraConfig else {}))
    student = student_from_teacher(teacher, 2, hidden_size=6, num_attention_heads=2)
    student.save_pretrained(tmp_path)
    reloaded = auto_class.from_pretrained(tmp_path)
    assert type(reloaded) is model_class
    assert reloaded.state_dict().keys() == student.state_dict().keys()
    for name, tensor in student.state_dict().items():
        assert torch.equal(tensor, reloaded.state_dict()[name]), name
    assert reloaded.config.student_from_teacher == student.config.student_from_teacher
    if reloaded.get_output_embeddings() is not None:
        assert reloaded.get_output_embeddings().weight is reloaded.get_input_embeddings().weight


def test_the_model_card_says_how_narrow_the_student_is():
    teacher = make(BertForSequenceClassification, BertConfig)
    teacher.config._name_or_path = "tiny-bert"
    assert student_origin(student_from_teacher(teacher, 2)) == (
        "built from `tiny-bert` with student_from_teacher: 2 of the teacher's 4 layers (0, 2), every other weight "
        "copied")
    assert student_origin(student_from_teacher(teacher, 2, hidden_size=8)) == (
        "built from `tiny-bert` with student_from_teacher: 2 of the teacher's 4 layers (0, 2), narrowed to hidden "
        "size 8, 2 attention heads, feed-forward size 16 (the teacher's 16, 4, 32), every weight selected from the "
        "teacher's (evenly spaced hidden, head and feed-forward indices)")
    assert student_origin(student_from_teacher(teacher, 2, hidden_size=8, init="random")) == (
        "built from `tiny-bert`'s config with student_from_teacher: 2 layers (the teacher has 4), narrowed to hidden "
        "size 8, 2 attention heads, feed-forward size 16 (the teacher's 16, 4, 32), every weight initialised at "
        "random (no teacher weight copied)")


# ---- Depth-only students of decoder LMs; narrowing them is refused ----

def causal_lm(family):
    torch.manual_seed(0)
    common = dict(vocab_size=VOCAB, bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=True)
    if family == "gpt2":
        return GPT2LMHeadModel(GPT2Config(n_embd=16, n_layer=4, n_head=2, n_positions=32, **common)).eval()
    llama_like = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=4, num_attention_heads=2,
                      num_key_value_heads=1, max_position_embeddings=32, **common)
    if family == "qwen2":  # layers 2 and 3 slide: the layer types differ along the stack
        return Qwen2ForCausalLM(Qwen2Config(use_sliding_window=True, sliding_window=4, max_window_layers=2,
                                            **llama_like)).eval()
    model_class, config_class = {"llama": (LlamaForCausalLM, LlamaConfig),
                                 "mistral": (MistralForCausalLM, MistralConfig)}[family]
    return model_class(config_class(**llama_like)).eval()


@pytest.mark.parametrize("family", ["gpt2", "llama", "qwen2", "mistral"])
def test_depth_only_causal_lm_students(family, tmp_path):
    teacher = scrambled(causal_lm(family))
    student = student_from_teacher(teacher, 2, layers=[1, 3]).eval()  # built in training mode, as from_config
    stack = (lambda m: m.transformer.h) if family == "gpt2" else (lambda m: m.model.layers)
    for s_layer, t_layer in zip(stack(student), [stack(teacher)[1], stack(teacher)[3]]):
        for (name, s_param), (_, t_param) in zip(s_layer.named_parameters(), t_layer.named_parameters()):
            assert torch.equal(s_param, t_param), name
    assert len(stack(student)) == 2
    assert student.get_output_embeddings().weight is student.get_input_embeddings().weight
    if family == "qwen2":
        assert teacher.config.layer_types == ["full_attention", "full_attention", "sliding_attention",
                                              "sliding_attention"]
        assert student.config.layer_types == ["full_attention", "sliding_attention"]
    student.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(reloaded) is type(teacher)
    for name, tensor in student.state_dict().items():
        assert torch.equal(tensor, reloaded.state_dict()[name]), name
    assert reloaded.get_output_embeddings().weight is reloaded.get_input_embeddings().weight
    assert getattr(reloaded.config, "layer_types", None) == getattr(student.config, "layer_types", None)
    prompt = torch.tensor([[3, 4, 5, 6, 7, 8]])  # longer than Qwen2's sliding window of 4
    generated = reloaded.generate(prompt, max_new_tokens=4, do_sample=False)
    assert generated.shape == (1, 10)
    assert torch.equal(generated, student.generate(prompt, max_new_tokens=4, do_sample=False))


@pytest.mark.parametrize("family, auto_class", [("gpt2", "AutoModelForCausalLM"), ("llama", "AutoModelForCausalLM")])
def test_narrower_students_of_other_architectures_are_refused_with_how_to_build_one(family, auto_class):
    with pytest.raises(ValueError, match=rf"can only be made shallower.*{auto_class}\.from_config\(config\).*model="):
        student_from_teacher(causal_lm(family), 2, hidden_size=8)
    # A random baseline of the same depth needs no width rule.
    random = student_from_teacher(causal_lm(family), 2, init="random")
    assert random.config.student_from_teacher["init"] == "random"
    assert random.get_output_embeddings().weight is random.get_input_embeddings().weight
