"""What the 2-layer student gains over its MiniLM-L6 teacher, and what caching the teacher's logits costs.

1. ``hf_prokt.measure_compression`` on MiniLM-L6-H384 and its 2-layer copy (``student_from_teacher``):
   parameters, safetensors bytes, CPU latency at batch 1 and 32 on real SST-2 validation sentences padded to
   ``--seq_len`` tokens.
2. ``hf_prokt.cache_teacher_logits`` over the SST-2 training sentences the quality benchmark uses (a fixed
   subset of ``--train_samples``, tokenized to 64 tokens, padded per batch): the wall time of that one
   teacher pass and the bytes the cache adds on disk (``save_to_disk`` with the column minus without it).

Run: ``OMP_NUM_THREADS=1 python -m benchmarks.compression`` (about 2 minutes on one core); ``--tiny`` for a
smoke run with tiny models and synthetic sentences. Results: ``benchmarks/results/compression.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import datasets
import torch

if __package__ in (None, ""):  # run as `python benchmarks/compression.py`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import machine_description  # noqa: E402
from hf_prokt import cache_teacher_logits, measure_compression, student_from_teacher  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "compression.json")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--student_layers", type=int, default=2)
    parser.add_argument("--seq_len", type=int, default=64, help="Length the latency inputs are padded to.")
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--train_samples", type=int, default=8000, help="Sentences the teacher pass caches.")
    parser.add_argument("--cache_batch_size", type=int, default=64)
    parser.add_argument("--data_dir", default=None, help="SST-2 folder (default: the shared data).")
    parser.add_argument("--skip_cache", action="store_true", help="Measure compression only (no teacher pass).")
    parser.add_argument("--tiny", action="store_true", help="Tiny models and synthetic data: a smoke run.")
    parser.add_argument("--output", default=RESULTS)
    return parser.parse_args(argv)


def models_and_data(args):
    """``(teacher, student, tokenizer, validation sentences, training sentences)``."""
    if args.tiny:
        from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

        torch.manual_seed(0)
        words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(95)]
        folder = tempfile.mkdtemp()
        with open(os.path.join(folder, "vocab.txt"), "w") as f:
            f.write("\n".join(words) + "\n")
        tokenizer = BertTokenizerFast(vocab=os.path.join(folder, "vocab.txt"))
        config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                            intermediate_size=64, max_position_embeddings=128, num_labels=2)
        teacher = BertForSequenceClassification(config)
        sentences = [" ".join(f"w{(7 * i + j) % 95}" for j in range(3 + i % 20)) for i in range(200)]
        validation = datasets.Dataset.from_dict({"sentence": sentences[:64], "label": [i % 2 for i in range(64)]})
        train = datasets.Dataset.from_dict({"sentence": sentences, "label": [i % 2 for i in range(200)]})
    else:
        from benchmarks.common import DEFAULT_SST2_DIR, load_teacher, load_tokenizer, read_sst2

        teacher, tokenizer = load_teacher(num_labels=2, seed=0), load_tokenizer()
        data_dir = args.data_dir or DEFAULT_SST2_DIR
        validation = read_sst2("validation", data_dir)
        train = read_sst2("train", data_dir, max_samples=args.train_samples, seed=0)
    return teacher, student_from_teacher(teacher, args.student_layers), tokenizer, validation, train


def folder_bytes(folder: str) -> int:
    return sum(os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(folder) for name in names)


def main(argv=None) -> dict:
    args = parse_args(argv)
    teacher, student, tokenizer, validation, train = models_and_data(args)

    sentences = list(validation.select(range(max(args.batch_sizes)))["sentence"])
    example_batch = dict(tokenizer(sentences, padding="max_length", truncation=True, max_length=args.seq_len,
                                   return_tensors="pt"))
    report = measure_compression(teacher, student, example_batch, batch_sizes=tuple(args.batch_sizes),
                                 repeats=args.repeats, warmup=args.warmup, device="cpu")
    print(json.dumps(report.to_dict(), indent=1))

    results = {"machine": machine_description(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
               "settings": vars(args), "compression": report.to_dict()}
    if not args.skip_cache:
        results["teacher_logits_cache"] = measure_cache(args, teacher, tokenizer, train)
    if not args.tiny or args.output != RESULTS:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output, "w") as f:
            json.dump(results, f, indent=1)
    return results


def measure_cache(args, teacher, tokenizer, train) -> dict:
    """Wall time of one `cache_teacher_logits` pass over ``train`` and the bytes its column adds on disk."""
    tokenized = train.map(lambda batch: tokenizer(batch["sentence"], truncation=True, max_length=64), batched=True,
                          remove_columns=train.column_names)
    start = time.perf_counter()
    cached = cache_teacher_logits(teacher, tokenized, batch_size=args.cache_batch_size, processing_class=tokenizer)
    cache_seconds = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as folder:
        cached.save_to_disk(os.path.join(folder, "with"))
        tokenized.flatten_indices().save_to_disk(os.path.join(folder, "without"))
        with_bytes, without_bytes = folder_bytes(os.path.join(folder, "with")), folder_bytes(
            os.path.join(folder, "without"))
    cache = {
        "examples": len(cached), "batch_size": args.cache_batch_size, "max_length": 64,
        "teacher_pass_seconds": cache_seconds, "examples_per_second": len(cached) / cache_seconds,
        "dataset_bytes_with_logits": with_bytes, "dataset_bytes_without_logits": without_bytes,
        "logits_bytes": with_bytes - without_bytes,
    }
    print(json.dumps(cache, indent=1))
    return cache


if __name__ == "__main__":
    main()
