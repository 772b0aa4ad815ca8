"""What each student shape of the TinyBERT table costs: ``hf_prokt.measure_compression`` of MiniLM-L6 against
every student `student_from_teacher` builds for it (parameters, safetensors bytes, CPU latency at batch 1 and 32
on SST-2 dev sentences padded to ``--seq_len`` tokens), one process, the shapes measured one after the other
against the same teacher.

Weights do not change these figures, so the students are built from the pretrained MiniLM-L6 (a general-distilled
student of the same shape costs the same).

    OMP_NUM_THREADS=1 python -m benchmarks.student_sizes       # about 3 minutes on one idle core
    python -m benchmarks.student_sizes --tiny                  # tiny models, seconds (the smoke test)

Results: ``benchmarks/results/tinybert/student_sizes.json``. Latency depends on the machine and its load: run it
on a quiet machine (the JSON records the 1-minute load average before and after).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch

if __package__ in (None, ""):  # run as `python benchmarks/student_sizes.py`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import machine_description  # noqa: E402
from hf_prokt import measure_compression, student_from_teacher  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "tinybert", "student_sizes.json")
# (name, layers, hidden size or None for the teacher's): the students of docs/benchmarks.md's TinyBERT table.
SHAPES = (("L2", 2, None), ("L4", 4, None), ("L4_H312", 4, 312), ("L4_H192", 4, 192))
TINY_SHAPES = (("L2", 2, None), ("L2_H16", 2, 16))


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seq_len", type=int, default=64, help="length the latency inputs are padded to")
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--data_dir", default=None, help="SST-2 folder (default: the shared data)")
    parser.add_argument("--tiny", action="store_true", help="tiny models and made-up sentences: a smoke run")
    parser.add_argument("--output", default=RESULTS)
    return parser.parse_args(argv)


def teacher_and_batch(args) -> tuple[torch.nn.Module, dict, tuple]:
    """``(teacher, example batch, shapes)``: MiniLM-L6 and SST-2 dev sentences, or tiny stand-ins."""
    count = max(args.batch_sizes)
    if args.tiny:
        from transformers import BertConfig, BertForSequenceClassification

        torch.manual_seed(0)
        config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                            intermediate_size=64, max_position_embeddings=128, num_labels=2)
        input_ids = torch.randint(5, 100, (count, args.seq_len))
        batch = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
        return BertForSequenceClassification(config), batch, TINY_SHAPES
    from benchmarks.common import DEFAULT_SST2_DIR, load_teacher, load_tokenizer, read_sst2

    tokenizer = load_tokenizer()
    sentences = list(read_sst2("validation", args.data_dir or DEFAULT_SST2_DIR).select(range(count))["sentence"])
    batch = dict(tokenizer(sentences, padding="max_length", truncation=True, max_length=args.seq_len,
                           return_tensors="pt"))
    return load_teacher(num_labels=2, seed=0), batch, SHAPES


def main(argv=None) -> dict:
    args = parse_args(argv)
    teacher, batch, shapes = teacher_and_batch(args)
    load_before = os.getloadavg()[0]
    students = {}
    for name, layers, width in shapes:
        student = student_from_teacher(teacher, layers, hidden_size=width)
        report = measure_compression(teacher, student, batch, batch_sizes=tuple(args.batch_sizes),
                                     repeats=args.repeats, warmup=args.warmup, device="cpu").to_dict()
        report.update(layers=layers, hidden_size=student.config.hidden_size,
                      intermediate_size=student.config.intermediate_size,
                      num_attention_heads=student.config.num_attention_heads)
        students[name] = report
        print(name, json.dumps({key: value for key, value in report.items()
                                if key in ("student_parameters", "student_size_bytes", "parameter_ratio")
                                or key.startswith("speedup_")}))
    results = {"machine": machine_description(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
               "load_average_1min": {"before": load_before, "after": os.getloadavg()[0]},
               "settings": vars(args), "students": students}
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output + ".partial", "w") as f:
        json.dump(results, f, indent=1)
    os.replace(args.output + ".partial", args.output)
    return results


if __name__ == "__main__":
    main()
