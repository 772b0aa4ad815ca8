"""`examples/token_classification/run_ner.py` end to end, offline: tiny taggers saved to folders, small CoNLL
and JSON files written here."""

import json
import random
import re
from pathlib import Path

import pytest
import torch
from seqeval.metrics import f1_score
from transformers import AutoModelForTokenClassification, AutoTokenizer, BertTokenizerFast

from tests.conftest import VOCAB_SIZE, check_example_outputs, load_example, tiny_tagger

SCRIPT = Path(__file__).resolve().parent.parent / "examples" / "token_classification" / "run_ner.py"
# 33 words and two suffix pieces: "w3s" is two sub-tokens, "w3" and "##s".
WORDS = [f"w{i}" for i in range(VOCAB_SIZE - 7)]
PIECES = ["##s", "##t"]
TAGS = ["B-LOC", "B-PER", "I-LOC", "I-PER", "O"]  # sorted, as the script orders the training tags


@pytest.fixture(scope="module")
def run_ner():
    return load_example(SCRIPT, "run_ner")


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    return save_taggers(tmp_path_factory.mktemp("taggers"))


def save_taggers(root: Path) -> dict[str, str]:
    """A 4-layer teacher and a 2-layer student tagging len(TAGS) tags, saved in ``root`` with one local WordPiece
    tokenizer: ``{"teacher": folder, "student": folder}``."""
    root.mkdir(parents=True, exist_ok=True)
    vocab = root / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS + PIECES) + "\n")
    tokenizer = BertTokenizerFast(vocab=str(vocab))
    assert len(tokenizer) == VOCAB_SIZE and tokenizer.tokenize("w3s w4") == ["w3", "##s", "w4"]
    dirs = {}
    for name, model in (("teacher", tiny_tagger(layers=4, hidden=32, num_labels=len(TAGS), seed=2)),
                        ("student", tiny_tagger(layers=2, num_labels=len(TAGS), seed=1))):
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
        dirs[name] = str(root / name)
    return dirs


def tagged_sentences(n, seed):
    """Sentences whose tags follow the words: w0-w7 are persons, w8-w15 places, a run of them one entity."""
    rng = random.Random(seed)
    sentences = []
    for _ in range(n):
        words, tags, previous = [], [], "O"
        for _ in range(rng.randint(2, 7)):
            index = rng.randrange(len(WORDS))
            word = WORDS[index] + (rng.choice(["s", "t"]) if rng.random() < 0.3 else "")
            kind = "PER" if index < 8 else "LOC" if index < 16 else None
            tag = "O" if kind is None else ("I-" if previous.endswith(kind) else "B-") + kind
            words.append(word)
            tags.append(tag)
            previous = tag
        sentences.append((words, tags))
    return sentences


def write_conll(path, sentences, tagged=True, docstart=True):
    """CoNLL-2003 layout: -DOCSTART-, then `word POS chunk tag` lines (the tag last), blank lines between."""
    lines = ["-DOCSTART- -X- -X- O", ""] if docstart else []
    for words, tags in sentences:
        lines += [f"{w} NN I-NP {t}" if tagged else w for w, t in zip(words, tags)] + [""]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def write_jsonl(path, sentences):
    path.write_text("".join(json.dumps({"tokens": w, "ner_tags": t}) + "\n" for w, t in sentences))
    return str(path)


def common_args(tmp_path, **extra):
    args = {"output_dir": str(tmp_path / "out"), "do_train": True, "do_eval": True, "max_steps": 6,
            "per_device_train_batch_size": 8, "learning_rate": 3e-3, "teacher_learning_rate": 1e-3,
            "report_to": "none", "save_strategy": "no", "use_cpu": True, "logging_steps": 2,
            "disable_tqdm": True, "max_seq_length": 32, **extra}  # 32: the tiny models' positions
    return [item for key, value in args.items() for item in (f"--{key}", str(value))]


def first_subtoken_predictions(model_dir, sentences):
    """The tags the saved student gives each word (on its first sub-token), computed here."""
    model = AutoModelForTokenClassification.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    encoded = tokenizer([w for w, _ in sentences], is_split_into_words=True, padding=True, return_tensors="pt")
    with torch.no_grad():
        ids = model(**encoded).logits.argmax(-1)
    predictions = []
    for index, (words, _) in enumerate(sentences):
        word_ids = encoded.word_ids(batch_index=index)
        first = {w: p for p, w in reversed(list(enumerate(word_ids))) if w is not None}
        predictions.append([model.config.id2label[int(ids[index, first[i]])] for i in range(len(words))])
    return predictions


@pytest.mark.parametrize("strategy", ["prokt", "kd", "finetune"])
def test_conll_files_train_evaluate_predict_and_reload(run_ner, model_dirs, tmp_path, strategy):
    train_sentences, dev_sentences, test_sentences = (tagged_sentences(48, 0), tagged_sentences(12, 1),
                                                      tagged_sentences(5, 2))
    train = write_conll(tmp_path / "train.txt", train_sentences)
    dev = write_conll(tmp_path / "dev.txt", dev_sentences)
    test = write_conll(tmp_path / "test.txt", test_sentences, tagged=False, docstart=False)
    argv = common_args(tmp_path, strategy=strategy, train_file=train, validation_file=dev, test_file=test,
                       do_predict=True, plot=True, eval_strategy="steps", eval_steps=3)
    if strategy == "finetune":
        argv += ["--model_name_or_path", model_dirs["student"]]
    else:
        argv += ["--teacher_model_name_or_path", model_dirs["teacher"], "--student_num_layers", "2"]
    results = run_ner.main(argv)

    out = tmp_path / "out"
    eval_results = check_example_outputs(out, strategy, "f1", extra_files=("predictions.txt",))
    assert {"eval_precision", "eval_recall", "eval_f1", "eval_accuracy", "eval_loss"} <= set(eval_results)
    assert results["eval_f1"] == eval_results["eval_f1"]
    card = (out / "README.md").read_text()
    assert "token-classification" in card and "eval_f1" not in card and "f1" in card

    student = AutoModelForTokenClassification.from_pretrained(out)
    assert type(student).__name__ == "BertForTokenClassification" and student.config.num_hidden_layers == 2
    assert student.config.id2label == dict(enumerate(TAGS))
    # The reported F1 is the saved student's entity F1 on the validation file (first sub-tokens), by hand.
    predicted = first_subtoken_predictions(out, dev_sentences)
    assert eval_results["eval_f1"] == pytest.approx(f1_score([t for _, t in dev_sentences], predicted))
    # predictions.txt: every test word in order with the tag the saved student gives it, a blank line between.
    blocks = (out / "predictions.txt").read_text().strip("\n").split("\n\n")
    assert len(blocks) == len(test_sentences)
    for block, (words, _), tags in zip(blocks, test_sentences, first_subtoken_predictions(out, test_sentences)):
        assert [line.split() for line in block.split("\n")] == [[w, t] for w, t in zip(words, tags)]


def test_the_task_losses_of_both_models_fall(run_ner, model_dirs, tmp_path):
    train = write_conll(tmp_path / "train.txt", tagged_sentences(64, 0))
    argv = common_args(tmp_path, strategy="prokt", train_file=train, do_eval=False, max_steps=40, logging_steps=10,
                       distill_alpha=0.5, teacher_model_name_or_path=model_dirs["teacher"],
                       model_name_or_path=model_dirs["student"])
    run_ner.main(argv)
    history = json.loads((tmp_path / "out" / "trainer_state.json").read_text())["log_history"]
    for key in ("student_task_loss", "teacher_loss"):
        values = [entry[key] for entry in history if key in entry]
        assert len(values) == 4 and values[-1] < 0.9 * values[0], (key, values)


def test_json_lines_from_a_json_config_with_flag_overrides(run_ner, model_dirs, tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", tagged_sentences(40, 3))
    dev = write_jsonl(tmp_path / "dev.jsonl", tagged_sentences(10, 4))
    config = tmp_path / "kd.json"
    config.write_text(json.dumps({
        "teacher_model_name_or_path": model_dirs["teacher"], "student_num_layers": 2, "strategy": "kd",
        "train_file": train, "validation_file": dev, "do_train": True, "do_eval": True, "max_steps": 2,
        "output_dir": str(tmp_path / "ignored"), "report_to": "none", "use_cpu": True, "evaluate_teacher": True,
        "label_all_tokens": True, "return_entity_level_metrics": True, "max_seq_length": 32,
    }))
    results = run_ner.main([str(config), "--output_dir", str(tmp_path / "out"), "--max_steps", "4"])
    assert not (tmp_path / "ignored").exists()
    state = json.loads((tmp_path / "out" / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    assert {"eval_f1", "eval_teacher_f1", "eval_PER_f1", "eval_LOC_f1", "eval_PER_number"} <= set(results)
    assert AutoModelForTokenClassification.from_pretrained(tmp_path / "out").config.label2id == {
        t: i for i, t in enumerate(TAGS)}


def test_student_init_from_builds_the_kd_student_from_a_pretrained_encoder_not_the_teacher(run_ner, model_dirs,
                                                                                          tmp_path):
    # A "pretrained" encoder (no tagging head) of the teacher's shape, with other weights than the teacher's.
    init_dir = tmp_path / "pretrained"
    pretrained = tiny_tagger(layers=4, hidden=32, num_labels=len(TAGS), seed=9)
    pretrained.bert.save_pretrained(init_dir)
    train = write_conll(tmp_path / "train.txt", tagged_sentences(16, 0))
    argv = common_args(tmp_path, strategy="kd", train_file=train, do_eval=False, max_steps=1, learning_rate=0.0,
                       teacher_model_name_or_path=model_dirs["teacher"], student_num_layers=2,
                       student_init_from=str(init_dir))
    run_ner.main(argv)
    student = AutoModelForTokenClassification.from_pretrained(tmp_path / "out")
    teacher = AutoModelForTokenClassification.from_pretrained(model_dirs["teacher"])
    assert student.config.student_from_teacher["teacher"] == str(init_dir)
    assert student.config.id2label == dict(enumerate(TAGS))
    for student_index, source_index in enumerate([0, 2]):  # learning rate 0: still the copied layers
        s_state = student.bert.encoder.layer[student_index].state_dict()
        p_state = pretrained.bert.encoder.layer[source_index].state_dict()
        t_state = teacher.bert.encoder.layer[source_index].state_dict()
        assert all(torch.equal(s_state[k], p_state[k]) for k in p_state)
        assert not all(torch.equal(s_state[k], t_state[k]) for k in t_state)


def test_label_all_tokens_continues_the_entity_on_later_subtokens(run_ner):
    word_ids = [None, 0, 0, 1, 2, 2, 2, None, None]
    b_per, i_per, o = TAGS.index("B-PER"), TAGS.index("I-PER"), TAGS.index("O")
    continuation = {i: TAGS.index("I-" + t[2:]) if t.startswith("B-") else i for i, t in enumerate(TAGS)}
    assert run_ner.align_labels(word_ids, [b_per, i_per, o], continuation, False) == [
        -100, b_per, -100, i_per, o, -100, -100, -100, -100]
    assert run_ner.align_labels(word_ids, [b_per, i_per, o], continuation, True) == [
        -100, b_per, i_per, i_per, o, o, o, -100, -100]


@pytest.mark.parametrize("fmt", ["conll", "jsonl"])
def test_a_validation_file_with_a_tag_unseen_in_training_is_refused_before_anything(run_ner, model_dirs, tmp_path,
                                                                                    fmt):
    dev_sentences = tagged_sentences(6, 1)
    dev_sentences[3][1][1] = "B-MISC"
    if fmt == "conll":
        train = write_conll(tmp_path / "train.txt", tagged_sentences(20, 0))
        dev = write_conll(tmp_path / "dev.txt", dev_sentences)
        line = Path(dev).read_text().splitlines().index(f"{dev_sentences[3][0][1]} NN I-NP B-MISC") + 1
        where = f"{dev}, line {line}:"
    else:
        train = write_jsonl(tmp_path / "train.jsonl", tagged_sentences(20, 0))
        dev = write_jsonl(tmp_path / "dev.jsonl", dev_sentences)
        where = f"{dev}, sentence 4:"
    argv = common_args(tmp_path, train_file=train, validation_file=dev, strategy="prokt",
                       teacher_model_name_or_path=model_dirs["teacher"], student_num_layers=2)
    with pytest.raises(ValueError) as error:
        run_ner.main(argv)
    message = str(error.value)
    assert message.startswith(where) and "'B-MISC'" in message and "not in the training data's tag set" in message
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("tokens", "tags", "message"), [
    (None, None, "a sentence without words (tokens is None)"),
    ([], [], "a sentence without words (tokens is [])"),
    (["w1", None], ["O", "O"], "word 2 of the sentence is None, not a word"),
    (["w1", " "], ["O", "O"], "word 2 of the sentence is ' ', not a word"),
    (["w1", "w2"], None, "no tags (ner_tags is null), but the file's other sentences have them"),
])
def test_a_sentence_without_words_or_tags_is_refused_naming_it(run_ner, model_dirs, tmp_path, tokens, tags,
                                                               message):
    rows = [{"tokens": words, "ner_tags": word_tags} for words, word_tags in tagged_sentences(6, 0)]
    rows[2] = {"tokens": tokens, "ner_tags": tags}
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(row) + "\n" for row in rows))
    argv = common_args(tmp_path, train_file=str(train), do_eval=False, strategy="finetune",
                       model_name_or_path=model_dirs["student"])
    with pytest.raises(ValueError, match="^" + re.escape(f"{train}, sentence 3: {message}")):
        run_ner.main(argv)
    assert not (tmp_path / "out").exists()


def test_a_max_seq_length_beyond_the_models_positions_is_refused_up_front(run_ner, model_dirs, tmp_path):
    sentences = tagged_sentences(16, 0) + [(["w20"] * 40, ["O"] * 40)]  # longer than the 32 positions
    train = write_conll(tmp_path / "train.txt", sentences)
    argv = common_args(tmp_path, train_file=train, do_eval=False, strategy="finetune", max_seq_length=48,
                       model_name_or_path=model_dirs["student"])
    with pytest.raises(ValueError, match=rf"^--max_seq_length 48 is longer than the 32 tokens of --model_name_or_path "
                                         rf"{re.escape(model_dirs['student'])} \(max_position_embeddings 32\)"):
        run_ner.main(argv)
    assert not (tmp_path / "out").exists()


def test_a_sequence_classification_checkpoint_is_refused_naming_run_glue(run_ner, model_dirs, tmp_path):
    from tests.conftest import tiny_bert

    classifier = tmp_path / "classifier"
    tiny_bert(layers=4, hidden=32, num_labels=len(TAGS), seed=3).save_pretrained(classifier)
    train = write_conll(tmp_path / "train.txt", tagged_sentences(16, 0))
    argv = common_args(tmp_path, train_file=train, do_eval=False, strategy="kd",
                       model_name_or_path=model_dirs["student"], teacher_model_name_or_path=str(classifier),
                       tokenizer_name=model_dirs["teacher"])
    with pytest.raises(ValueError, match=rf"^--teacher_model_name_or_path {re.escape(str(classifier))} is a "
                                         r"sequence-classification checkpoint \(BertForSequenceClassification\), "
                                         r"but run_ner\.py .*use examples/glue/run_glue\.py"):
        run_ner.main(argv)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("fmt", ["conll", "jsonl"])
def test_a_byte_order_mark_is_no_part_of_the_first_word(run_ner, tmp_path, fmt):
    sentences = tagged_sentences(4, 0)
    path = (write_conll(tmp_path / "train.txt", sentences) if fmt == "conll"
            else write_jsonl(tmp_path / "train.jsonl", sentences))
    Path(path).write_bytes(b"\xef\xbb\xbf" + Path(path).read_bytes())
    data_args = run_ner.DataTrainingArguments(train_file=path)
    dataset, _ = run_ner.read_file(path, data_args, str(tmp_path / "cache"))
    assert dataset["tokens"] == [words for words, _ in sentences]  # no "\ufeff-DOCSTART-" sentence
    assert dataset["ner_tags"] == [tags for _, tags in sentences]


@pytest.mark.parametrize("config", sorted((SCRIPT.parent / "configs").glob("*.json")), ids=lambda p: p.stem)
def test_the_shipped_configs_parse(run_ner, config):
    model_args, data_args, training_args = run_ner.parse_arguments([str(config), "--output_dir", "elsewhere"])
    assert data_args.dataset_name == "conll2003" and training_args.output_dir == "elsewhere"
    assert training_args.strategy == json.loads(config.read_text())["strategy"]
