"""Model kinds are read from the model itself, and each recipe reads models through its kind; a recipe or a
kind added in a file of its own is used by the trainer without any other change."""

from __future__ import annotations

import datasets
import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    T5Config,
    T5ForConditionalGeneration,
)

from hf_prokt import ProKTTrainer, ProKTTrainingArguments
from hf_prokt.model_kinds import OUTPUT_SHAPE, TEACHER_LOGITS, model_kind_of
from hf_prokt.model_kinds.language_models import CAUSAL_LM, SEQ2SEQ_LM
from hf_prokt.model_kinds.token_classification import TOKEN_CLASSIFICATION
from hf_prokt.strategies import register_strategy, strategy_class
from hf_prokt.strategies.distillation import Distillation, Target
from tests.conftest import VOCAB_SIZE, tiny_bert, tiny_tagger, tiny_vit, toy_dataset


def tiny_gpt2(seed: int = 0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    return GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB_SIZE, n_embd=16, n_layer=2, n_head=2, n_positions=32))


def tiny_t5(seed: int = 0) -> T5ForConditionalGeneration:
    torch.manual_seed(seed)
    return T5ForConditionalGeneration(T5Config(vocab_size=VOCAB_SIZE, d_model=16, d_kv=8, d_ff=32, num_layers=1,
                                               num_heads=2, decoder_start_token_id=0))


def lm_dataset(n: int = 8) -> datasets.Dataset:
    ids = torch.randint(5, VOCAB_SIZE, (n, 8), generator=torch.Generator().manual_seed(0))
    return datasets.Dataset.from_dict({"input_ids": ids.tolist(), "labels": ids.tolist()})


def test_the_kind_is_read_from_the_model_through_peft():
    assert model_kind_of(tiny_bert()).name == "sequence classification"
    assert model_kind_of(tiny_tagger()) is TOKEN_CLASSIFICATION
    assert model_kind_of(tiny_vit()).auto_class == "AutoModelForImageClassification"
    assert model_kind_of(tiny_gpt2()) is CAUSAL_LM
    assert model_kind_of(LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB_SIZE, hidden_size=16, intermediate_size=32,
                                                      num_hidden_layers=1, num_attention_heads=2))) is CAUSAL_LM
    assert model_kind_of(tiny_t5()) is SEQ2SEQ_LM
    lora = get_peft_model(tiny_tagger(), LoraConfig(r=2, target_modules=["query", "value"], task_type="TOKEN_CLS"))
    assert model_kind_of(lora) is TOKEN_CLASSIFICATION
    assert model_kind_of(torch.nn.Linear(2, 2)) is OUTPUT_SHAPE


def test_a_kind_gives_both_models_the_batch_without_labels_and_cached_logits():
    batch = {"input_ids": torch.ones(2, 3), "labels": torch.zeros(2), TEACHER_LOGITS: torch.zeros(2, 2)}
    kind = model_kind_of(tiny_bert())
    assert set(kind.model_inputs(batch)) == {"input_ids"}
    assert kind.labels(batch) is batch["labels"]


def test_a_causal_lm_and_a_seq2seq_lm_are_refused_as_a_pair():
    args = ProKTTrainingArguments(output_dir="unused", strategy="kd", report_to=[], use_cpu=True)
    with pytest.raises(ValueError, match="GPT2LMHeadModel .*T5ForConditionalGeneration.*AutoModelForSeq2SeqLM"):
        ProKTTrainer(model=tiny_gpt2(), teacher_model=tiny_t5(), args=args, train_dataset=lm_dataset())


def test_finetuning_a_causal_lm_uses_its_own_loss(tmp_path):
    args = ProKTTrainingArguments(output_dir=str(tmp_path), strategy="finetune", max_steps=2, report_to=[],
                                  use_cpu=True, save_strategy="no", per_device_train_batch_size=4)
    trainer = ProKTTrainer(model=tiny_gpt2(), args=args, train_dataset=lm_dataset())
    trainer.train()
    losses = [entry["train_loss"] for entry in trainer.state.log_history if "train_loss" in entry]
    assert losses and all(torch.isfinite(torch.tensor(losses)))


class ScaledTargetKD(Distillation):
    """A recipe in a file of its own: KD from the frozen teacher's logits multiplied by ``scale``."""

    name = "scaled-target-kd-for-tests"
    scale = 2.0

    def target(self, model, inputs, student_outputs):
        prediction = self.teacher_prediction(inputs)
        return Target(prediction.logits * self.scale)


def test_a_registered_recipe_is_used_without_any_other_change(tmp_path):
    register_strategy(ScaledTargetKD)
    assert strategy_class(ScaledTargetKD.name) is ScaledTargetKD
    student, teacher, data = tiny_bert(1, seed=1), tiny_bert(2, seed=2), toy_dataset(8)
    args = ProKTTrainingArguments(output_dir=str(tmp_path), strategy=ScaledTargetKD.name, report_to=[], use_cpu=True)
    trainer = ProKTTrainer(model=student, teacher_model=teacher, args=args, train_dataset=data)
    assert trainer.strategy.__class__ is ScaledTargetKD and not args.should_evaluate_teacher
    batch = trainer.example_batch(4)
    loss, _ = trainer.strategy.compute_loss(student, batch)
    with torch.no_grad():
        target = 2.0 * teacher.eval()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logits = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    expected = (target.softmax(-1) * (target.log_softmax(-1) - logits.log_softmax(-1))).sum(-1).mean()
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="already registered"):
        register_strategy(type("Other", (ScaledTargetKD,), {}))
