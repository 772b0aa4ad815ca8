"""The unlabelled text of the TinyBERT pipeline's first stage (docs/benchmarks.md, "BERT to TinyBERT"): every
SST-2 training sentence and every CoNLL-2003 training sentence, one per line, in a fixed shuffled order.

Only training splits are read: SST-2's dev set scores the second stage, and CoNLL-2003's dev set is kept clean for
the NER benchmarks. No label is written. The order is shuffled with ``--seed`` so that
``run_general_distillation.py --validation_split_percentage N``, which holds out the first N % of the lines,
holds out a sample of both sources.

    python -m benchmarks.general_distillation_corpus --output runs/tinybert/corpus.txt

Prints (and writes next to the corpus as ``<output>.json``) the line count per source.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import sys

if __package__ in (None, ""):  # run as `python benchmarks/general_distillation_corpus.py`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import DEFAULT_SST2_DIR  # noqa: E402

DEFAULT_CONLL_DIR = os.path.join(os.path.dirname(DEFAULT_SST2_DIR), "conll2003")


def sst2_sentences(path: str) -> list[str]:
    """The ``sentence`` column of a GLUE SST-2 TSV (quoting off, as GLUE ships it)."""
    with open(path, newline="", encoding="utf-8") as f:
        return [row["sentence"].strip() for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
                if row["sentence"].strip()]


def conll_sentences(path: str) -> list[str]:
    """CoNLL-2003's sentences rebuilt from its one-token-per-line format, tokens joined by spaces (tags and
    ``-DOCSTART-`` lines dropped)."""
    sentences, tokens = [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            if not parts:
                if tokens:
                    sentences.append(" ".join(tokens))
                tokens = []
            elif parts[0] != "-DOCSTART-":
                tokens.append(parts[0])
    if tokens:
        sentences.append(" ".join(tokens))
    return sentences


def build_corpus(sst2_train: str, conll_train: str, seed: int = 0) -> tuple[list[str], dict]:
    """``(lines, counts)``: both sources' sentences shuffled together with ``seed``."""
    sst2, conll = sst2_sentences(sst2_train), conll_sentences(conll_train)
    lines = sst2 + conll
    random.Random(seed).shuffle(lines)
    counts = {"sst2_train_sentences": len(sst2), "conll2003_train_sentences": len(conll), "lines": len(lines),
              "words": sum(len(line.split()) for line in lines), "seed": seed}
    return lines, counts


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", required=True, help="the corpus file to write (one sentence per line)")
    parser.add_argument("--sst2_dir", default=DEFAULT_SST2_DIR)
    parser.add_argument("--conll_dir", default=DEFAULT_CONLL_DIR)
    parser.add_argument("--seed", type=int, default=0, help="seed of the shuffled order")
    args = parser.parse_args(argv)
    lines, counts = build_corpus(os.path.join(args.sst2_dir, "train.tsv"),
                                 os.path.join(args.conll_dir, "train.txt"), args.seed)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    temporary = args.output + ".partial"
    with open(temporary, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(temporary, args.output)
    with open(args.output + ".json", "w") as f:
        json.dump(counts, f, indent=1)
    print(json.dumps(counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
