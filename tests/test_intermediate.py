"""Hidden-state, embedding and attention terms: shapes, layer maps, gradients, optimizer membership."""

import pytest
import torch

from hf_prokt import ProKTTrainer
from hf_prokt.losses import FeatureProjection, IntermediateDistiller, resolve_layer_map, uniform_layer_map
from tests.conftest import make_args, tiny_bert, toy_dataset


def test_uniform_layer_map():
    assert uniform_layer_map(6, 12) == [2, 4, 6, 8, 10, 12]
    assert uniform_layer_map(2, 6) == [3, 6]
    assert uniform_layer_map(4, 4) == [1, 2, 3, 4]
    assert uniform_layer_map(4, 6) == [2, 3, 5, 6]
    assert resolve_layer_map([1, 5], 2, 6) == [1, 5]
    with pytest.raises(ValueError, match="outside the teacher's 1..6"):
        resolve_layer_map([1, 7], 2, 6)


def test_projection_shapes_and_identity_start():
    tokens = FeatureProjection((2, 5, 16), (2, 5, 24))
    assert tokens(torch.randn(2, 5, 16)).shape == (2, 5, 24)
    same = FeatureProjection((2, 5, 16), (2, 5, 16))
    x = torch.randn(2, 5, 16)
    torch.testing.assert_close(same(x), x)
    maps = FeatureProjection((2, 8, 6, 6), (2, 32, 3, 3))
    assert maps(torch.randn(2, 8, 6, 6)).shape == (2, 32, 3, 3)
    with pytest.raises(ValueError, match="7 tokens are not a patch grid"):
        FeatureProjection((2, 7, 16), (2, 8, 4, 4))


def outputs_of(model, batch, **flags):
    return model(**{k: v for k, v in batch.items() if k != "labels"}, **flags)


def test_distiller_loss_by_hand_and_gradients():
    student = tiny_bert(layers=2, hidden=16, seed=1, attn_implementation="eager")
    teacher = tiny_bert(layers=4, hidden=24, seed=2, attn_implementation="eager")
    data = toy_dataset(4, padded=True)
    batch = {k: torch.tensor(data[k]) for k in data.column_names}
    flags = {"output_hidden_states": True, "output_attentions": True}
    s_out = outputs_of(student, batch, **flags)
    with torch.no_grad():
        t_out = outputs_of(teacher, batch, **flags)
    distiller = IntermediateDistiller(s_out, t_out, "uniform", hidden_weight=2.0, embedding_weight=0.5,
                                      attention_weight=3.0)
    assert distiller.layer_map == [2, 4]
    loss, parts = distiller(s_out, t_out, batch["attention_mask"])

    mask = batch["attention_mask"].float()

    def masked(diff):  # mean over kept tokens (and every feature of them)
        weights = mask.view(*mask.shape, *([1] * (diff.dim() - 2))).expand_as(diff)
        return (diff.pow(2) * weights).sum() / weights.sum()

    hidden = torch.stack([
        masked(distiller.hidden_projections[i](s_out.hidden_states[i + 1]) - t_out.hidden_states[t])
        for i, t in enumerate([2, 4])
    ]).mean()
    embedding = masked(distiller.embedding_projection(s_out.hidden_states[0]) - t_out.hidden_states[0])
    attention = torch.stack([
        masked((s_out.attentions[i] - t_out.attentions[t - 1]).transpose(1, 2)) for i, t in enumerate([2, 4])
    ]).mean()
    torch.testing.assert_close(parts["hidden_loss"], hidden.detach())
    torch.testing.assert_close(parts["embedding_loss"], embedding.detach())
    torch.testing.assert_close(parts["attention_loss"], attention.detach())
    torch.testing.assert_close(loss, 2.0 * hidden + 0.5 * embedding + 3.0 * attention)

    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in distiller.parameters())
    assert student.bert.encoder.layer[0].attention.self.query.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())


def test_padding_does_not_count():
    student, teacher = tiny_bert(layers=1, seed=1), tiny_bert(layers=1, hidden=24, seed=2)
    data = toy_dataset(2, padded=True)
    batch = {k: torch.tensor(data[k]) for k in data.column_names}
    s_out = outputs_of(student, batch, output_hidden_states=True)
    t_out = outputs_of(teacher, batch, output_hidden_states=True)
    distiller = IntermediateDistiller(s_out, t_out, hidden_weight=1.0)
    reference, _ = distiller(s_out, t_out, batch["attention_mask"])
    padded = batch["attention_mask"] == 0
    assert padded.any()
    t_hidden = list(t_out.hidden_states)
    t_hidden[1] = t_hidden[1].masked_fill(padded[..., None], 1e3)  # garbage where the mask is 0
    t_out.hidden_states = tuple(t_hidden)
    changed, _ = distiller(s_out, t_out, batch["attention_mask"])
    torch.testing.assert_close(changed, reference)


@pytest.mark.parametrize("strategy", ["prokt", "kd"])
def test_projections_train_with_the_student_and_stay_out_of_it(tmp_path, strategy):
    student, teacher = tiny_bert(seed=1), tiny_bert(layers=4, hidden=24, seed=2)
    args = make_args(tmp_path, strategy=strategy, hidden_distill_weight=1.0, embedding_distill_weight=1.0,
                     layer_map=[1, 3], max_steps=3)
    trainer = ProKTTrainer(model=student, teacher_model=teacher, args=args, train_dataset=toy_dataset(24))
    distiller = trainer.intermediate_distiller
    assert distiller.layer_map == [1, 3]
    before = [p.detach().clone() for p in distiller.parameters()]
    trainer.train()
    in_optimizer = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert all(id(p) in in_optimizer for p in distiller.parameters())
    assert all(not torch.equal(a, b) for a, b in zip(before, distiller.parameters()))
    assert not any(name.startswith(("hidden_projections", "embedding_projection"))
                   for name in student.state_dict())
    logged = [entry for entry in trainer.state.log_history if "student_hidden_loss" in entry]
    assert logged and all("student_embedding_loss" in entry for entry in logged)
    if strategy == "prokt":
        teacher_params = {id(p) for group in trainer.teacher_optimizer.param_groups for p in group["params"]}
        assert not teacher_params & {id(p) for p in distiller.parameters()}


def test_attention_term_trains_with_eager_models(tmp_path):
    student = tiny_bert(seed=1, attn_implementation="eager")
    teacher = tiny_bert(layers=4, hidden=24, seed=2, attn_implementation="eager")
    args = make_args(tmp_path, attention_distill_weight=1.0, max_steps=2)
    trainer = ProKTTrainer(model=student, teacher_model=teacher, args=args, train_dataset=toy_dataset(16))
    trainer.train()
    assert any("student_attention_loss" in entry for entry in trainer.state.log_history)
