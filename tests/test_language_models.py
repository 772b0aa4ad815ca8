"""Causal and seq2seq LMs: KD and ProKT on the predicted positions, checked against hand computations of one step;
token averages over the whole accumulation window; the refusals; students built from GPT-2 and Llama teachers."""

from __future__ import annotations

import copy

import datasets
import pytest
import torch
import torch.nn.functional as F
from transformers import (
    AutoModelForCausalLM,
    DataCollatorForLanguageModeling,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    T5Config,
    T5ForConditionalGeneration,
)

from hf_prokt import ProKTTrainer, student_from_teacher
from hf_prokt.strategies.distillation import Distillation
from tests.conftest import VOCAB_SIZE, make_args, parameters_of

ALPHA, LAMBDA, T, LR = 0.6, 0.3, 2.0, 0.5


def tiny_gpt2(seed: int = 0, layers: int = 2) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    return GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB_SIZE, n_embd=16, n_layer=layers, n_head=2, n_positions=32,
                                      resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))


def tiny_llama(seed: int = 0, layers: int = 2) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB_SIZE, hidden_size=16, intermediate_size=32,
                                        num_hidden_layers=layers, num_attention_heads=2, num_key_value_heads=1,
                                        max_position_embeddings=32, pad_token_id=0))


def tiny_t5(seed: int = 0, decoder_start_token_id: int = 0) -> T5ForConditionalGeneration:
    torch.manual_seed(seed)
    return T5ForConditionalGeneration(T5Config(vocab_size=VOCAB_SIZE, d_model=16, d_kv=8, d_ff=32, num_layers=1,
                                               num_heads=2, dropout_rate=0.0, pad_token_id=0,
                                               decoder_start_token_id=decoder_start_token_id))


def prompt_completion_dataset(prompt_lengths=(3, 1, 5, 2), length: int = 8, seed: int = 0) -> datasets.Dataset:
    """Token rows whose first ``prompt_lengths[i]`` labels are -100 (a masked prompt): completion-only training,
    with a different number of counted positions per row."""
    ids = torch.randint(5, VOCAB_SIZE, (len(prompt_lengths), length), generator=torch.Generator().manual_seed(seed))
    labels = ids.clone()
    for row, prompt in enumerate(prompt_lengths):
        labels[row, :prompt] = -100
    return datasets.Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": torch.ones_like(ids).tolist(),
                                       "labels": labels.tolist()})


def sgd_args(tmp_path, strategy: str, **overrides):
    """One plain SGD step: constant rates, no clipping, no weight decay, so a step is ``w - lr * grad``."""
    values = dict(strategy=strategy, optim="sgd", learning_rate=LR, teacher_learning_rate=LR, max_steps=1,
                  lr_scheduler_type="constant", max_grad_norm=0.0, weight_decay=0.0, distill_alpha=ALPHA,
                  distill_temperature=T, prokt_lambda=LAMBDA, per_device_train_batch_size=4)
    values.update(overrides)
    return make_args(tmp_path, **values)


def batch_of(dataset: datasets.Dataset) -> dict:
    return {name: torch.tensor(dataset[name]) for name in dataset.column_names}


def next_token_terms(logits: torch.Tensor, target_logits: torch.Tensor, labels: torch.Tensor):
    """By hand: ``logits[:, t]`` against ``labels[:, t + 1]`` on the positions whose label is not -100, both terms
    averaged over those positions: ``(T^2 * KL(softmax(target / T) || softmax(logits / T)), CE(logits, labels))``."""
    logits, target_logits, labels = logits[:, :-1], target_logits[:, :-1], labels[:, 1:]
    keep = labels != -100
    log_p = F.log_softmax(logits / T, dim=-1)[keep]
    log_q = F.log_softmax(target_logits / T, dim=-1)[keep]
    kl = (log_q.exp() * (log_q - log_p)).sum(-1).mean() * T**2
    ce = F.cross_entropy(logits[keep], labels[keep])
    return kl, ce


def sgd_step(model: torch.nn.Module, loss: torch.Tensor) -> dict:
    """The parameters after one SGD step on ``loss`` (a tied weight gets the sum of its uses' gradients)."""
    grads = torch.autograd.grad(loss, list(model.parameters()), allow_unused=True)
    return {name: (p - LR * g if g is not None else p).detach()
            for (name, p), g in zip(model.named_parameters(), grads, strict=True)}


def assert_parameters_equal(model: torch.nn.Module, expected: dict, atol: float = 1e-6) -> None:
    for name, value in parameters_of(model).items():
        torch.testing.assert_close(value, expected[name], atol=atol, rtol=0, msg=name)


@pytest.mark.parametrize("chunked", [None, False])
@pytest.mark.parametrize("make", [tiny_gpt2, tiny_llama])
def test_kd_on_a_causal_lm_is_the_next_token_step_on_the_completion(tmp_path, make, chunked):
    dataset = prompt_completion_dataset()
    student, teacher = make(0), make(1)
    reference_student, reference_teacher = copy.deepcopy(student), copy.deepcopy(teacher)
    trainer = ProKTTrainer(model=student, teacher_model=teacher, args=sgd_args(tmp_path, "kd", chunked_lm_loss=chunked),
                           train_dataset=dataset)
    assert trainer.strategy.chunked is (chunked is None)  # on by default for causal LMs
    trainer.train()

    batch = batch_of(dataset)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    with torch.no_grad():
        target = reference_teacher(**inputs).logits
    kl, ce = next_token_terms(reference_student(**inputs).logits, target, batch["labels"])
    assert_parameters_equal(trainer.model, sgd_step(reference_student, ALPHA * kl + (1 - ALPHA) * ce))
    assert_parameters_equal(trainer.teacher_model, parameters_of(reference_teacher), atol=0)  # frozen


@pytest.mark.parametrize("chunked", [None, False])
def test_prokt_on_a_causal_lm_is_the_four_steps_on_the_next_tokens(tmp_path, chunked):
    dataset = prompt_completion_dataset()
    student, teacher = tiny_gpt2(0), tiny_gpt2(1)
    reference_student, reference_teacher = copy.deepcopy(student), copy.deepcopy(teacher)
    trainer = ProKTTrainer(model=student, teacher_model=teacher,
                           args=sgd_args(tmp_path, "prokt", chunked_lm_loss=chunked), train_dataset=dataset)
    trainer.train()

    batch = batch_of(dataset)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    with torch.no_grad():
        anchor = reference_student(**inputs).logits  # 1. the student's prediction
    # 2. the teacher is pulled back towards it: (1 - lam) CE(z_T, y) + lam T^2 KL(p_S || p_T)
    proximity, teacher_ce = next_token_terms(reference_teacher(**inputs).logits, anchor, batch["labels"])
    stepped_teacher = sgd_step(reference_teacher, (1 - LAMBDA) * teacher_ce + LAMBDA * proximity)
    assert_parameters_equal(trainer.teacher_model, stepped_teacher)
    # 3. its prediction after the step; 4. the student's step towards it
    reference_teacher.load_state_dict(stepped_teacher, strict=False)
    with torch.no_grad():
        target = reference_teacher(**inputs).logits
    kl, ce = next_token_terms(reference_student(**inputs).logits, target, batch["labels"])
    assert_parameters_equal(trainer.model, sgd_step(reference_student, ALPHA * kl + (1 - ALPHA) * ce))


def test_kd_on_a_seq2seq_lm_gives_both_decoders_the_same_inputs(tmp_path):
    ids = torch.randint(5, VOCAB_SIZE, (4, 6), generator=torch.Generator().manual_seed(0))
    labels = torch.randint(5, VOCAB_SIZE, (4, 5), generator=torch.Generator().manual_seed(1))
    labels[1, 3:] = -100  # a shorter target, padded with -100
    dataset = datasets.Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": torch.ones_like(ids).tolist(),
                                          "labels": labels.tolist()})
    student, teacher = tiny_t5(0), tiny_t5(1)
    reference_student, reference_teacher = copy.deepcopy(student), copy.deepcopy(teacher)
    trainer = ProKTTrainer(model=student, teacher_model=teacher, args=sgd_args(tmp_path, "kd"),
                           train_dataset=dataset)
    trainer.train()

    # By hand: the decoder inputs are the labels shifted right from decoder_start_token_id (-100 read as pad).
    decoder_input_ids = torch.cat([torch.zeros(4, 1, dtype=torch.long), labels[:, :-1]], dim=1)
    decoder_input_ids = decoder_input_ids.masked_fill(decoder_input_ids == -100, 0)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "decoder_input_ids": decoder_input_ids}
    with torch.no_grad():
        target = reference_teacher(**inputs).logits
    logits, keep = reference_student(**inputs).logits, labels != -100
    log_p, log_q = F.log_softmax(logits / T, -1)[keep], F.log_softmax(target / T, -1)[keep]
    kl = (log_q.exp() * (log_q - log_p)).sum(-1).mean() * T**2
    ce = F.cross_entropy(logits[keep], labels[keep])
    assert_parameters_equal(trainer.model, sgd_step(reference_student, ALPHA * kl + (1 - ALPHA) * ce))


@pytest.mark.parametrize("strategy", ["kd", "prokt"])
def test_accumulation_averages_over_the_tokens_of_the_whole_window(tmp_path, monkeypatch, strategy):
    """Two micro-batches of 2 rows step as one batch of the 4 rows although their rows count 2, 3, 7 and 7
    positions: each micro-batch's mean weighs by its share of the window's tokens. A per-micro-batch mean (what a
    classifier gets) differs."""
    dataset = prompt_completion_dataset(prompt_lengths=(6, 5, 1, 0))

    def trained(folder, **overrides):
        args = sgd_args(tmp_path / folder, strategy, **overrides)
        trainer = ProKTTrainer(model=tiny_gpt2(0), teacher_model=tiny_gpt2(1), args=args, train_dataset=dataset)
        trainer.train()
        return trainer

    whole = trained("whole")
    accumulated = trained("accumulated", per_device_train_batch_size=2, gradient_accumulation_steps=2)
    assert accumulated.strategy._window_tokens.total == 2 + 3 + 7 + 7  # labelled next tokens per row
    assert_parameters_equal(accumulated.model, parameters_of(whole.model))
    assert_parameters_equal(accumulated.teacher_model, parameters_of(whole.teacher_model))

    monkeypatch.setattr(Distillation, "window_share", lambda self, inputs, n: 1.0 / n)
    per_micro_batch = trained("per_micro_batch", per_device_train_batch_size=2, gradient_accumulation_steps=2)
    difference = max((a - b).abs().max() for a, b in zip(per_micro_batch.model.parameters(),
                                                         whole.model.parameters(), strict=True))
    assert difference > 1e-4


def test_a_padded_collator_counts_only_the_real_next_tokens(tmp_path, local_tokenizer):
    rows = [[7, 8, 9, 10, 11, 12], [13, 14, 15], [16, 17, 18, 19], [20, 21]]
    dataset = datasets.Dataset.from_dict({"input_ids": rows})
    collator = DataCollatorForLanguageModeling(local_tokenizer, mlm=False)
    args = sgd_args(tmp_path, "kd", distill_alpha=1.0, remove_unused_columns=False)
    trainer = ProKTTrainer(model=tiny_gpt2(0), teacher_model=tiny_gpt2(1), args=args, train_dataset=dataset,
                           data_collator=collator, processing_class=local_tokenizer)
    reference_student, reference_teacher = copy.deepcopy(trainer.model), copy.deepcopy(trainer.teacher_model)
    trainer.train()
    assert trainer.strategy._window_tokens.total == sum(len(row) - 1 for row in rows)

    batch = collator([{"input_ids": row} for row in rows])  # right-padded, labels -100 on the padding
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    with torch.no_grad():
        target = reference_teacher(**inputs).logits
    kl, _ = next_token_terms(reference_student(**inputs).logits, target, batch["labels"])
    assert_parameters_equal(trainer.model, sgd_step(reference_student, kl))


# ------------------------------------------------------------------ the chunked LM loss


@pytest.mark.parametrize("variant", [
    dict(strategy="kd"),
    dict(strategy="kd", distill_alpha=1.0, label_smoothing_factor=0.1, distill_temperature=1.0),
    dict(strategy="prokt"),
    dict(strategy="prokt", prokt_constraint="dual", prokt_epsilon=0.05, dual_init=0.5, dual_lr=2.0),
    dict(strategy="prokt", prokt_target="stale", prokt_anchor="train"),
], ids=["kd", "kd-alpha1-smoothing", "prokt", "prokt-dual", "prokt-stale-train-anchor"])
def test_the_chunked_loss_trains_as_the_full_logits_do_without_computing_them(tmp_path, variant):
    """Two optimizer steps of two micro-batches each: the same student and teacher, chunked or not, while the
    chunked run's output layers never compute a position's logits in training."""
    dataset = prompt_completion_dataset(prompt_lengths=(6, 5, 1, 0, 2, 3, 4, 7))

    def trained(folder, chunked):
        args = sgd_args(tmp_path / folder, chunked_lm_loss=chunked, max_steps=2, per_device_train_batch_size=2,
                        gradient_accumulation_steps=2, **{"learning_rate": 0.1, "teacher_learning_rate": 0.1,
                                                          **variant})
        trainer = ProKTTrainer(model=tiny_gpt2(0), teacher_model=tiny_gpt2(1), args=args, train_dataset=dataset)
        positions = []
        hooks = [model.lm_head.register_forward_hook(lambda module, args, output: positions.append(output.shape[1]))
                 for model in (trainer.model, trainer.teacher_model)]
        trainer.train()
        for hook in hooks:
            hook.remove()
        return trainer, positions

    chunked, chunked_positions = trained("chunked", True)
    plain, plain_positions = trained("plain", False)
    assert chunked.strategy.chunked and not plain.strategy.chunked
    assert chunked_positions and set(chunked_positions) == {0} and set(plain_positions) == {8}
    assert_parameters_equal(chunked.model, parameters_of(plain.model), atol=1e-5)
    assert_parameters_equal(chunked.teacher_model, parameters_of(plain.teacher_model), atol=1e-5)
    chunked_logs = [entry for entry in chunked.state.log_history if "loss" in entry]
    plain_logs = [entry for entry in plain.state.log_history if "loss" in entry]
    for chunked_entry, plain_entry in zip(chunked_logs, plain_logs, strict=True):
        for name in ("loss", "student_distill_loss", "teacher_loss", "kl_student_teacher", "prokt_beta"):
            if name in plain_entry:
                assert chunked_entry[name] == pytest.approx(plain_entry[name], abs=1e-5), name


def test_a_lora_prokt_teacher_trains_the_same_with_the_chunked_loss(tmp_path):
    peft = pytest.importorskip("peft")
    dataset = prompt_completion_dataset(prompt_lengths=(6, 5, 1, 0))
    trained = {}
    for chunked in (True, False):
        teacher = peft.get_peft_model(tiny_gpt2(1), peft.LoraConfig(r=2, target_modules=["c_attn"], fan_in_fan_out=True,
                                                                    lora_dropout=0.0, init_lora_weights=False))
        args = sgd_args(tmp_path / str(chunked), "prokt", chunked_lm_loss=chunked, per_device_train_batch_size=2,
                        gradient_accumulation_steps=2, learning_rate=0.1, teacher_learning_rate=0.1)
        trainer = ProKTTrainer(model=tiny_gpt2(0), teacher_model=teacher, args=args, train_dataset=dataset)
        trainer.train()
        trained[chunked] = trainer
    assert trained[True].strategy.chunked
    assert_parameters_equal(trained[True].model, parameters_of(trained[False].model), atol=1e-6)
    assert_parameters_equal(trained[True].teacher_model, parameters_of(trained[False].teacher_model), atol=1e-6)
    lora = [name for name in parameters_of(trained[True].teacher_model) if "lora_" in name]
    assert lora and any(not torch.equal(parameters_of(trained[True].teacher_model)[name],
                                        parameters_of(peft.get_peft_model(tiny_gpt2(1), peft.LoraConfig(
                                            r=2, target_modules=["c_attn"], fan_in_fan_out=True, lora_dropout=0.0,
                                            init_lora_weights=False)))[name]) for name in lora)


def test_the_chunked_loss_is_refused_where_it_cannot_read_the_model(tmp_path):
    refused(tmp_path, "chunked_lm_loss=True, but the models are sequence-to-sequence language models.*causal LMs "
            "only.*chunked_lm_loss=False", tiny_t5(0), tiny_t5(1), args={"chunked_lm_loss": True},
            dataset=datasets.Dataset.from_dict({"input_ids": [[5, 6, 7]] * 4, "labels": [[8, 9]] * 4}))


# ------------------------------------------------------------------ refusals, before anything is written


def refused(tmp_path, match: str, student, teacher, strategy: str = "kd", dataset=None, **kwargs):
    args_overrides = kwargs.pop("args", {})
    args = make_args(tmp_path, strategy=strategy, **args_overrides)
    with pytest.raises(ValueError, match=match):
        ProKTTrainer(model=student, teacher_model=teacher, args=args,
                     train_dataset=dataset if dataset is not None else prompt_completion_dataset(), **kwargs)
    out = tmp_path / "out"  # the Trainer may have made the folder; nothing is written into it
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("strategy", ["finetune", "kd", "prokt"])
def test_zero_init_classifier_is_refused_for_lms(tmp_path, strategy):
    teacher = None if strategy == "finetune" else tiny_gpt2(1)
    refused(tmp_path, "zero_init_classifier=True, but the models are causal language models.*tied",
            tiny_gpt2(0), teacher, strategy, args={"zero_init_classifier": True})


def test_a_tokenizer_without_pad_token_is_refused(tmp_path, local_tokenizer):
    local_tokenizer.pad_token = None
    refused(tmp_path, r"has no pad token.*tokenizer.pad_token = tokenizer.eos_token", tiny_gpt2(0), tiny_gpt2(1),
            processing_class=local_tokenizer)


def test_seq2seq_decoders_that_start_differently_are_refused(tmp_path):
    refused(tmp_path, "decoder_start_token_id is 0 but the teacher's is 2", tiny_t5(0), tiny_t5(1, 2))


def test_lm_pairs_of_other_vocabularies_are_refused(tmp_path):
    teacher = GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB_SIZE + 7, n_embd=16, n_layer=1, n_head=2, n_positions=32))
    refused(tmp_path, f"vocabulary has {VOCAB_SIZE} tokens but the teacher's has {VOCAB_SIZE + 7}", tiny_gpt2(0),
            teacher)


def test_a_cache_of_full_lm_logits_is_refused(tmp_path):
    dataset = prompt_completion_dataset()
    dataset = dataset.add_column("teacher_logits", [[[0.0] * VOCAB_SIZE] * 8] * len(dataset))
    refused(tmp_path, "cached 'teacher_logits' for a causal language model.*pass teacher_model", tiny_gpt2(0),
            tiny_gpt2(1), dataset=dataset)


def test_intermediate_terms_on_a_seq2seq_lm_are_refused(tmp_path):
    refused(tmp_path, "intermediate distillation terms .* not supported for a sequence-to-sequence", tiny_t5(0),
            tiny_t5(1), args={"hidden_distill_weight": 1.0})


def test_prokt_on_unlabelled_lm_text_is_refused_naming_the_lm_collator(tmp_path):
    dataset = datasets.Dataset.from_dict({"input_ids": [[5, 6, 7, 8]] * 4})
    refused(tmp_path, r"no labels.*DataCollatorForLanguageModeling\(tokenizer, mlm=False\)", tiny_gpt2(0),
            tiny_gpt2(1), "prokt", dataset=dataset, data_collator=lambda rows: {
                "input_ids": torch.tensor([row["input_ids"] for row in rows])})


# ------------------------------------------------------------------ students of causal LMs


@pytest.mark.parametrize("make", [tiny_gpt2, tiny_llama])
def test_students_of_causal_lms_copy_the_chosen_layers_reload_and_generate(tmp_path, make):
    teacher = make(0, layers=4)
    student = student_from_teacher(teacher, num_layers=2)
    assert type(student) is type(teacher) and student.config.num_hidden_layers == 2
    def layer_stack(model):
        return getattr(model.base_model, "layers", None) or model.base_model.h  # Llama's, GPT-2's

    teacher_layers, student_layers = layer_stack(teacher), layer_stack(student)
    chosen = student.config.student_from_teacher["teacher_layers"]
    for student_layer, index in zip(student_layers, chosen, strict=True):
        for (name, value), (_, expected) in zip(student_layer.state_dict().items(),
                                                teacher_layers[index].state_dict().items(), strict=True):
            torch.testing.assert_close(value, expected, atol=0, rtol=0, msg=name)

    student.save_pretrained(tmp_path / "student")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "student")
    prompt = torch.tensor([[5, 6, 7]])
    generated = reloaded.generate(prompt, max_new_tokens=4, do_sample=False, pad_token_id=0)
    assert generated.shape == (1, 7) and torch.equal(generated[:, :3], prompt)
    torch.testing.assert_close(reloaded(prompt).logits, student(prompt).logits)


def test_a_model_whose_logits_are_transformed_after_its_head_falls_back_to_the_full_logits(tmp_path):
    """Logits scaled after the output layer (as Gemma 2 caps them): the hidden states and head do not give them,
    which the trainer finds on a probe batch; it then trains from the full logits, and refuses chunked=True."""

    def scale_logits(module, args, outputs):
        outputs.logits = outputs.logits * 2.0
        return outputs

    def scaled(seed):
        model = tiny_gpt2(seed)
        model.register_forward_hook(scale_logits)
        return model

    trainer = ProKTTrainer(model=scaled(0), teacher_model=scaled(1), args=sgd_args(tmp_path, "kd"),
                           train_dataset=prompt_completion_dataset())
    assert not trainer.strategy.chunked
    refused(tmp_path / "forced", "chunked_lm_loss=True, but the student cannot be read before its logits: its logits "
            "are not its output layer applied", scaled(0), scaled(1), args={"chunked_lm_loss": True})
