"""Image classifiers through the same API: ViT and ResNet pairs, token-grid and feature-map alignment."""

import os

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForImageClassification

from hf_prokt import ProKTTrainer
from hf_prokt.losses import FeatureProjection, IntermediateDistiller, TokenGrid, token_grid
from tests.conftest import image_dataset, make_args, parameters_of, tiny_resnet, tiny_vit

PAIRS = {
    # teacher, student: ViTs on different patch grids (17 vs 5 tokens), ResNets of other widths, and across
    "vit->vit": (lambda: tiny_vit(patch=2, hidden=24, layers=4, seed=1), lambda: tiny_vit(patch=4, hidden=16, seed=2)),
    "resnet->resnet": (lambda: tiny_resnet((16, 32), seed=1), lambda: tiny_resnet((8, 16), seed=2)),
    "vit->resnet": (lambda: tiny_vit(patch=2, hidden=24, seed=1), lambda: tiny_resnet((8, 16), seed=2)),
    "resnet->vit": (lambda: tiny_resnet((16, 32), seed=1), lambda: tiny_vit(patch=4, hidden=16, seed=2)),
}


@pytest.mark.parametrize("pair", sorted(PAIRS))
def test_prokt_trains_every_pair_with_hidden_state_terms(tmp_path, pair):
    teacher, student = (build() for build in PAIRS[pair])
    teacher_before, student_before = parameters_of(teacher), parameters_of(student)
    trainer = ProKTTrainer(
        model=student, teacher_model=teacher, train_dataset=image_dataset(32),
        args=make_args(tmp_path, strategy="prokt", max_steps=3, hidden_distill_weight=1.0,
                       embedding_distill_weight=0.5),
    )
    projections = {k: v.clone() for k, v in trainer.intermediate_distiller.state_dict().items()}
    trainer.train()

    logs = [entry for entry in trainer.state.log_history if "student_hidden_loss" in entry]
    assert len(logs) == 3 and all(torch.isfinite(torch.tensor(e["student_hidden_loss"])) for e in logs)
    assert all(e["student_embedding_loss"] > 0 for e in logs)
    for before, model in ((teacher_before, teacher), (student_before, student)):
        after = parameters_of(model)
        assert any(not torch.equal(before[name], after[name]) for name in before)
    moved = trainer.intermediate_distiller.state_dict()
    assert any(not torch.equal(projections[k], moved[k]) for k in projections)


def test_logit_distillation_alone_needs_no_alignment(tmp_path):
    teacher, student = tiny_vit(patch=2, seed=1), tiny_resnet(seed=2)
    trainer = ProKTTrainer(model=student, teacher_model=teacher, train_dataset=image_dataset(16),
                           args=make_args(tmp_path, strategy="prokt", max_steps=2))
    assert trainer.intermediate_distiller is None
    trainer.train()
    assert trainer.state.global_step == 2


def test_token_grid_from_config_and_from_count():
    vit = tiny_vit(patch=2).config
    assert token_grid(17, vit) == TokenGrid(1, 4, 4)
    assert token_grid(197) == TokenGrid(1, 14, 14)     # [CLS] + 14x14
    assert token_grid(198) == TokenGrid(2, 14, 14)     # [CLS], distillation token + 14x14
    assert token_grid(64) == TokenGrid(0, 8, 8)        # no leading token
    assert token_grid(7) is None
    vit.image_size, vit.patch_size = (8, 16), 4        # rectangular images: 2x4 patches, from the config
    assert token_grid(9, vit) == TokenGrid(1, 2, 4)


def test_token_grids_upsampled_with_cls_apart():
    """Student [CLS] + 2x2 patches -> teacher [CLS] + 4x4 patches, widths equal (identity projection)."""
    projection = FeatureProjection((2, 5, 3), (2, 17, 3))
    student = torch.randn(2, 5, 3)
    aligned = projection(student)
    assert aligned.shape == (2, 17, 3)
    torch.testing.assert_close(aligned[:, 0], student[:, 0])   # [CLS] is matched as is, never resized
    grid = student[:, 1:].transpose(1, 2).reshape(2, 3, 2, 2)
    expected = F.interpolate(grid, size=(4, 4), mode="bilinear", align_corners=False)
    torch.testing.assert_close(aligned[:, 1:], expected.flatten(2).transpose(1, 2))
    # a corner patch of a bilinear 2x -> 4x resize (half-pixel centres) is the corner input itself
    torch.testing.assert_close(aligned[:, 1], student[:, 1])
    teacher = torch.randn(2, 17, 3)
    torch.testing.assert_close(projection.target(teacher), teacher)


def test_token_grids_pooled_by_hand():
    """Student 4x4 patches -> teacher 2x2: each teacher patch is compared with the mean of a 2x2 block."""
    projection = FeatureProjection((1, 17, 1), (1, 5, 1))
    values = torch.arange(16.0)  # row-major 4x4 grid: 0 1 2 3 / 4 5 6 7 / ...
    student = torch.cat([torch.tensor([[100.0]]), values[:, None]])[None]  # [1, 17, 1], [CLS] = 100
    aligned = projection(student)[0, :, 0]
    block_means = [(0 + 1 + 4 + 5) / 4, (2 + 3 + 6 + 7) / 4, (8 + 9 + 12 + 13) / 4, (10 + 11 + 14 + 15) / 4]
    torch.testing.assert_close(aligned, torch.tensor([100.0, *block_means]))


def test_leading_tokens_other_than_cls_are_left_out():
    """A DeiT-like student ([CLS], distillation token) against a ViT teacher ([CLS] only)."""
    projection = FeatureProjection((1, 6, 4), (1, 17, 4))
    assert (projection.student_grid, projection.teacher_grid) == (TokenGrid(2, 2, 2), TokenGrid(1, 4, 4))
    student = torch.randn(1, 6, 4)
    aligned = projection(student)
    assert aligned.shape == (1, 17, 4)
    torch.testing.assert_close(aligned[:, 0], student[:, 0])
    changed = student.clone()
    changed[:, 1] += 5.0  # the distillation token has no teacher counterpart
    torch.testing.assert_close(projection(changed), aligned)


def test_tokens_against_feature_maps_both_ways():
    to_maps = FeatureProjection((2, 5, 6), (2, 8, 4, 4))        # ViT student -> ResNet teacher stage
    student = torch.randn(2, 5, 6)
    assert to_maps(student).shape == (2, 8, 4, 4)
    changed = student.clone()
    changed[:, 0] += 1.0                                          # [CLS] has no place in a map
    torch.testing.assert_close(to_maps(changed), to_maps(student))
    teacher_map = torch.randn(2, 8, 4, 4)
    assert to_maps.target(teacher_map) is teacher_map

    to_tokens = FeatureProjection((2, 8, 4, 4), (2, 5, 6))      # ResNet student -> ViT teacher
    assert to_tokens(torch.randn(2, 8, 4, 4)).shape == (2, 4, 6)
    teacher_tokens = torch.randn(2, 5, 6)
    torch.testing.assert_close(to_tokens.target(teacher_tokens), teacher_tokens[:, 1:])


def test_feature_map_alignment_shapes_and_gradients():
    """Projections and the student get gradients from the hidden-state term; the teacher's targets do not."""
    teacher, student = tiny_resnet((16, 32), seed=1), tiny_resnet((8, 16), seed=2)
    pixels = image_dataset(4)[:]["pixel_values"]
    s_out = student(pixel_values=pixels, output_hidden_states=True)
    t_out = teacher(pixel_values=pixels, output_hidden_states=True)
    assert [tuple(h.shape[1:]) for h in t_out.hidden_states] == [(16, 2, 2), (16, 2, 2), (32, 1, 1)]
    distiller = IntermediateDistiller(s_out, t_out, "uniform", hidden_weight=1.0, embedding_weight=1.0)
    assert [p.proj.kernel_size for p in distiller.hidden_projections] == [(1, 1), (1, 1)]
    assert [tuple(p.proj.weight.shape[:2]) for p in distiller.hidden_projections] == [(16, 8), (32, 16)]
    loss, parts = distiller(s_out, t_out)
    manual = torch.stack([
        F.mse_loss(distiller.hidden_projections[i](s_out.hidden_states[i + 1]), t_out.hidden_states[i + 1])
        for i in range(2)
    ]).mean() + F.mse_loss(distiller.embedding_projection(s_out.hidden_states[0]), t_out.hidden_states[0])
    torch.testing.assert_close(loss, manual)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in distiller.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    assert all(p.grad is None for p in teacher.parameters())


def test_attention_maps_of_different_grids_are_refused_before_training(tmp_path):
    teacher, student = tiny_vit(patch=2, seed=1), tiny_vit(patch=4, seed=2)
    for model in (teacher, student):
        model.config._attn_implementation = "eager"
    with pytest.raises(ValueError, match="same patch grid.*hidden_distill_weight"):
        ProKTTrainer(model=student, teacher_model=teacher, train_dataset=image_dataset(8),
                     args=make_args(tmp_path, strategy="prokt", attention_distill_weight=1.0))
    assert not os.path.exists(tmp_path / "out") or not os.listdir(tmp_path / "out")  # nothing written


@pytest.mark.parametrize("teacher_kwargs, match", [
    (dict(channels=1), "teacher could not read a training batch"),           # 1-channel teacher, RGB data
    (dict(image_size=16), "teacher could not read a training batch"),        # ViT built for 16x16 images
])
def test_pairs_that_cannot_read_the_same_images_are_refused_up_front(tmp_path, teacher_kwargs, match):
    teacher, student = tiny_vit(seed=1, **teacher_kwargs), tiny_resnet(seed=2)
    with pytest.raises(ValueError, match=match) as error:
        ProKTTrainer(model=student, teacher_model=teacher, train_dataset=image_dataset(8),
                     args=make_args(tmp_path, strategy="prokt"))
    assert "pixel_values" in str(error.value) and "[2, 3, 8, 8]" in str(error.value)
    assert not os.path.exists(tmp_path / "out") or not os.listdir(tmp_path / "out")  # nothing written


def test_saved_image_student_reloads(tmp_path):
    teacher, student = tiny_resnet((16, 32), seed=1), tiny_vit(patch=4, seed=2)
    trainer = ProKTTrainer(model=student, teacher_model=teacher, train_dataset=image_dataset(16),
                           args=make_args(tmp_path, strategy="prokt", max_steps=2, hidden_distill_weight=1.0))
    trainer.train()
    trainer.save_model(str(tmp_path / "student"))
    reloaded = AutoModelForImageClassification.from_pretrained(tmp_path / "student")
    assert type(reloaded).__name__ == "ViTForImageClassification"
    pixels = image_dataset(4)[:]["pixel_values"]
    student.eval()
    torch.testing.assert_close(reloaded(pixel_values=pixels).logits, student(pixel_values=pixels).logits)
    assert set(reloaded.state_dict()) == set(student.state_dict())  # no distillation projection inside
