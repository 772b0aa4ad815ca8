import pytest
import torch

from hf_prokt import student_from_teacher
from hf_prokt.students import uniform_layer_selection
from tests.conftest import tiny_bert


def test_uniform_layer_selection():
    assert uniform_layer_selection(12, 6) == [0, 2, 4, 6, 8, 10]
    assert uniform_layer_selection(6, 2) == [0, 3]
    assert uniform_layer_selection(4, 4) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="1..4"):
        uniform_layer_selection(4, 5)


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


def test_bad_layer_choice():
    with pytest.raises(ValueError, match="must name 2 teacher layers"):
        student_from_teacher(tiny_bert(layers=4), 2, layers=[0, 4])
