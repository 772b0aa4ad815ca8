"""Table and plots of the SST-2 protocol runs (the JSONs of `benchmarks.sst2_protocol`), partial results welcome.

Runs are grouped by *setting* (student depth, budget, training subset) and *variant* (recipe, anchor, alpha,
checkpoints, changed settings); within a group, one run per *replicate*: a seed on a platform, the CPU or a
named GPU. Runs pair only within a replicate: the seed fixes the data order everywhere, but dropout draws
differ between a CPU and a GPU, so seed 0 on a GPU is a replicate of its own (labelled ``0 @ NVIDIA H200``).
The summary gives, for every group, the mean and sample standard deviation over its replicates of the
student's last and best-dev accuracy, and for every ProKT variant against every KD and fine-tuning variant of
the same setting, the paired difference over the replicates both have (mean and a 95 % Student-t confidence
interval; none with a single shared replicate).

Run from the repository root::

    python -m benchmarks.protocol_summary                     # benchmarks/results/protocol/
    python -m benchmarks.protocol_summary --results_dir DIR
    python -m benchmarks.protocol_summary --results_dir DIR_A DIR_B --summary_dir POOLED   # several folders

It prints the tables and writes, into the results folder (``--summary_dir`` with several),
``summary.md`` (the tables), ``summary.json`` (every number, and the mean paired difference at every
evaluation step: the gap as a function of the budget),
``curves_<setting>.png`` (dev accuracy over steps of the student and its teacher, per variant) and
``gap_<setting>.png`` (the paired ProKT-baseline difference over steps).
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import statistics
import sys
from collections.abc import Sequence

from scipy import stats

if __package__ in (None, ""):  # run as `python benchmarks/protocol_summary.py`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.sst2_protocol import DEFAULT_OUTPUT_DIR  # noqa: E402

SUMMARY_FILES = ("summary.json",)
METRICS = ("last_accuracy", "best_accuracy")
RECIPE_ORDER = {"finetune": 0, "kd": 1, "prokt": 2}


# ---------------------------------------------------------------------------------------------- reading


def load_runs(folder: str) -> list[dict]:
    """Every run JSON in ``folder`` (the summary's own files and half-written temporaries are not runs)."""
    runs = []
    for path in sorted(glob.glob(os.path.join(folder, "*.json"))):
        if os.path.basename(path) in SUMMARY_FILES:
            continue
        with open(path) as f:
            run = json.load(f)
        if not all(key in run for key in ("recipe", "variant", "setting", "seed", "student", "curve")):
            print(f"skipped {path}: not a run of benchmarks.sst2_protocol", file=sys.stderr)
            continue
        run["_path"] = path
        runs.append(run)
    return runs


Replicate = tuple[str, int]  # (platform: "" for the CPU, else the GPU's name; seed)


def replicate_of(run: dict) -> Replicate:
    """The run's platform and seed. Runs pair only within one: same data order, same dropout stream."""
    return ((run.get("machine") or {}).get("gpu") or "", run["seed"])


def replicate_label(replicate: Replicate) -> str:
    """``"0"`` for seed 0 on the CPU, ``"0 @ NVIDIA H200"`` on that GPU."""
    platform, seed = replicate
    return f"{seed} @ {platform}" if platform else str(seed)


def group_runs(runs: list[dict]) -> dict[str, dict[str, dict[Replicate, dict]]]:
    """``{setting: {variant: {replicate: run}}}``, variants in recipe order (finetune, kd, prokt) then by
    name."""
    groups: dict[str, dict[str, dict[Replicate, dict]]] = {}
    for run in runs:
        seeds = groups.setdefault(run["setting"], {}).setdefault(run["variant"], {})
        replicate = replicate_of(run)
        if replicate in seeds:
            raise SystemExit(f"two runs of {run['variant']} {run['setting']} with seed {replicate_label(replicate)}: "
                             f"{seeds[replicate]['_path']} and {run['_path']}. Move one away.")
        seeds[replicate] = run
    return {
        setting: dict(sorted(variants.items(), key=lambda item: (_recipe_rank(item[1]), item[0])))
        for setting, variants in sorted(groups.items())
    }


def _recipe_rank(seeds: dict[Replicate, dict]) -> int:
    return RECIPE_ORDER.get(next(iter(seeds.values()))["recipe"], 3)


# ---------------------------------------------------------------------------------------------- statistics


def describe(values: list[float]) -> dict:
    """``n``, ``mean`` and the sample standard deviation ``sd`` (None for a single value)."""
    return {"n": len(values), "mean": statistics.fmean(values),
            "sd": statistics.stdev(values) if len(values) > 1 else None}


def t_interval(values: list[float], confidence: float = 0.95) -> list[float] | None:
    """The Student-t confidence interval of the mean of ``values`` (None with fewer than two values)."""
    if len(values) < 2:
        return None
    mean, sd = statistics.fmean(values), statistics.stdev(values)
    half = stats.t.ppf(0.5 + confidence / 2, len(values) - 1) * sd / math.sqrt(len(values))
    return [mean - half, mean + half]


def paired_difference(runs_a: dict[Replicate, dict], runs_b: dict[Replicate, dict], metric: str) -> dict | None:
    """Student ``metric`` of A minus B over the replicates both have: per replicate, mean, sd, 95 % CI (None
    if they share none)."""
    seeds = sorted(set(runs_a) & set(runs_b))
    if not seeds:
        return None
    differences = [runs_a[s]["student"][metric] - runs_b[s]["student"][metric] for s in seeds]
    return {"seeds": [replicate_label(s) for s in seeds], "differences": differences, **describe(differences),
            "ci95": t_interval(differences)}


def gap_over_steps(runs_a: dict[Replicate, dict], runs_b: dict[Replicate, dict]) -> list[dict]:
    """Mean paired difference of the student's dev accuracy at every step evaluated in all shared runs."""
    seeds = sorted(set(runs_a) & set(runs_b))
    if not seeds:
        return []
    curves = [{p["step"]: p["student_accuracy"] for p in run["curve"]}
              for s in seeds for run in (runs_a[s], runs_b[s])]
    steps = sorted(set.intersection(*(set(c) for c in curves)))
    gaps = []
    for step in steps:
        differences = [curves[2 * i][step] - curves[2 * i + 1][step] for i in range(len(seeds))]
        gaps.append({"step": step, "mean": statistics.fmean(differences), "n": len(seeds)})
    return gaps


def same_data_order(runs_a: dict[Replicate, dict], runs_b: dict[Replicate, dict]) -> bool | None:
    seeds = sorted(set(runs_a) & set(runs_b))
    fingerprints = [(runs_a[s].get("data", {}).get("data_order_sha1"), runs_b[s].get("data", {}).get("data_order_sha1"))
                    for s in seeds]
    if not seeds or any(a is None or b is None for a, b in fingerprints):
        return None
    return all(a == b for a, b in fingerprints)


def summarize(runs: list[dict]) -> dict:
    """Everything the tables and plots show: per group statistics and the paired differences."""
    groups = group_runs(runs)
    summary: dict = {"settings": {}}
    for setting, variants in groups.items():
        rows = {}
        for variant, seeds in variants.items():
            ordered = [seeds[s] for s in sorted(seeds)]
            row = {"recipe": ordered[0]["recipe"], "seeds": [replicate_label(s) for s in sorted(seeds)],
                   "train_time_s": describe([r["train_time_s"] for r in ordered]),
                   "best_step": describe([r["student"]["best_step"] for r in ordered])}
            for metric in METRICS:
                row[metric] = describe([r["student"][metric] for r in ordered])
                teachers = [r["teacher"][metric] for r in ordered if r.get("teacher")]
                row[f"teacher_{metric}"] = describe(teachers) if teachers else None
            checkpoints = {(r["models"]["teacher"] or {}).get("checkpoint") for r in ordered if r.get("models")}
            row["teacher_checkpoints"] = sorted(c for c in checkpoints if c)
            rows[variant] = row
        pairs = []
        for prokt in (v for v, s in variants.items() if _recipe_rank(s) == RECIPE_ORDER["prokt"]):
            for baseline in (v for v, s in variants.items() if _recipe_rank(s) < RECIPE_ORDER["prokt"]):
                a, b = variants[prokt], variants[baseline]
                if not set(a) & set(b):
                    continue
                pairs.append({"prokt": prokt, "baseline": baseline,
                              **{metric: paired_difference(a, b, metric) for metric in METRICS},
                              "same_data_order": same_data_order(a, b), "gap_over_steps": gap_over_steps(a, b)})
        summary["settings"][setting] = {"variants": rows, "pairs": pairs}
    return summary


# ---------------------------------------------------------------------------------------------- tables


def _mean_sd(stat: dict | None, digits: int = 4) -> str:
    if stat is None:
        return "-"
    if stat["sd"] is None:
        return f"{stat['mean']:.{digits}f}"
    return f"{stat['mean']:.{digits}f} ± {stat['sd']:.{digits}f}"


def _difference(pair: dict | None) -> str:
    if pair is None:
        return "-"
    if pair["ci95"] is None:
        return f"{pair['mean']:+.4f} (1 seed: no CI)"
    low, high = pair["ci95"]
    return f"{pair['mean']:+.4f} [{low:+.4f}, {high:+.4f}]"


def markdown_table(header: Sequence[str], rows: list[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def format_summary(summary: dict) -> str:
    """The two markdown tables (per group, paired differences) of every setting."""
    blocks = []
    for setting, content in summary["settings"].items():
        rows = []
        for variant, row in content["variants"].items():
            rows.append((
                variant, ", ".join(map(str, row["seeds"])), _mean_sd(row["last_accuracy"]),
                _mean_sd(row["best_accuracy"]), f"{row['best_step']['mean']:.0f}",
                _mean_sd(row["teacher_last_accuracy"]), _mean_sd(row["teacher_best_accuracy"]),
                f"{row['train_time_s']['mean'] / 60:.1f}",
            ))
        blocks.append(f"### {setting}\n\n" + markdown_table(
            ("variant", "seeds", "student last", "student best-dev", "best step (mean)", "teacher last",
             "teacher best-dev", "train min/run"), rows))
        if content["pairs"]:
            pair_rows = []
            for pair in content["pairs"]:
                order = {True: "same", False: "DIFFERENT", None: "unknown"}[pair["same_data_order"]]
                pair_rows.append((f"{pair['prokt']} - {pair['baseline']}",
                                  ", ".join(map(str, pair["last_accuracy"]["seeds"])),
                                  _difference(pair["last_accuracy"]), _difference(pair["best_accuracy"]), order))
            blocks.append(markdown_table(
                ("paired difference", "shared seeds", "last: mean [95% CI]", "best-dev: mean [95% CI]",
                 "data order"), pair_rows))
        else:
            blocks.append("No ProKT run shares a seed with a KD or fine-tuning run of this setting yet.")
    notes = ("Accuracy on the SST-2 dev set; mean ± sample sd over the seeds (no sd for one seed). Best-dev is "
             "the best of the periodic evaluations, chosen on the dev set itself, as the authors report. Paired "
             "differences: per shared seed, then mean and 95 % t interval over seeds (none for one seed). A seed "
             "run on a GPU is labelled with it (`0 @ <GPU>`) and pairs only with runs on that GPU: dropout draws "
             "differ from the CPU's.")
    return "\n\n".join(blocks + [notes])


# ---------------------------------------------------------------------------------------------- plots


def plot_setting(setting: str, variants: dict[str, dict[Replicate, dict]], path: str) -> None:
    """One panel per variant: the student's dev accuracy over steps (thin: each seed, thick: the mean) and
    its teacher's (the co-trained ProKT teacher's curve, the frozen KD teacher's level)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(3, len(variants))
    rows = math.ceil(len(variants) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(5 * columns, 3.6 * rows), squeeze=False, sharey=True)
    for axis, (variant, seeds) in zip(axes.flat, variants.items()):
        for key, colour, label in (("student_accuracy", "tab:blue", "student"), ("teacher_accuracy", "tab:orange",
                                                                                   "teacher")):
            curves = [[(p["step"], p[key]) for p in run["curve"] if key in p] for run in seeds.values()]
            curves = [c for c in curves if c]
            for points in curves:
                axis.plot(*zip(*points), color=colour, alpha=0.35, linewidth=0.8)
            if curves:
                steps = sorted(set.intersection(*(set(s for s, _ in c) for c in curves)))
                means = [statistics.fmean(dict(c)[s] for c in curves) for s in steps]
                axis.plot(steps, means, color=colour, linewidth=2, marker="o", markersize=3,
                          label=f"{label} (mean of {len(curves)})")
        frozen = [run["teacher"]["last_accuracy"] for run in seeds.values()
                  if run.get("teacher") and run["teacher"].get("frozen")]
        if frozen:
            axis.axhline(statistics.fmean(frozen), color="tab:orange", linestyle="--", label="frozen KD teacher")
        axis.set_title(variant, fontsize=10)
        axis.set_xlabel("student optimizer step")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8, loc="lower right")
    for axis in axes.flat[len(variants):]:
        axis.set_visible(False)
    for axis in axes[:, 0]:
        axis.set_ylabel("dev accuracy")
    figure.suptitle(f"SST-2 protocol, {setting}: dev accuracy over steps")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_gaps(setting: str, pairs: list[dict], baselines: dict[str, str], path: str) -> None:
    """The mean paired difference (ProKT minus baseline) of the student's dev accuracy over steps: one panel
    against the KD variants, one against fine-tuning; dashed lines rest on a single replicate (one seed on one
    platform)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [recipe for recipe in ("kd", "finetune") if any(baselines[p["baseline"]] == recipe for p in pairs)]
    figure, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.2), squeeze=False, sharey=True)
    for axis, recipe in zip(axes[0], panels):
        for pair in (p for p in pairs if baselines[p["baseline"]] == recipe and p["gap_over_steps"]):
            gaps = pair["gap_over_steps"]
            replicates = gaps[0]["n"]
            axis.plot([g["step"] for g in gaps], [g["mean"] for g in gaps], marker="o", markersize=3,
                      linestyle="-" if replicates > 1 else "--",
                      label=f"{pair['prokt']} - {pair['baseline']} "
                            f"({replicates} replicate{'s' if replicates > 1 else ''})")
        axis.axhline(0.0, color="black", linewidth=0.8)
        axis.set_title(f"ProKT minus {'KD' if recipe == 'kd' else 'fine-tuning'}", fontsize=10)
        axis.set_xlabel("student optimizer step")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    axes[0, 0].set_ylabel("dev accuracy difference (paired by replicate)")
    figure.suptitle(f"SST-2 protocol, {setting}: the student's dev accuracy, ProKT minus baseline")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


# ---------------------------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results_dir", nargs="+", default=[DEFAULT_OUTPUT_DIR],
                        help="folder(s) of the run JSONs, pooled (a seed pairs only with runs of its platform)")
    parser.add_argument("--summary_dir", default=None,
                        help="where summary.md, summary.json and the plots go (default: the results folder; "
                        "required with several)")
    parser.add_argument("--no_plots", action="store_true", help="tables only")
    args = parser.parse_args(argv)
    if args.summary_dir is None:
        if len(args.results_dir) > 1:
            parser.error("several --results_dir folders: name the folder of the pooled summary with --summary_dir.")
        args.summary_dir = args.results_dir[0]
    runs = [run for folder in args.results_dir for run in load_runs(folder)]
    if not runs:
        raise SystemExit(f"no run JSON in {', '.join(args.results_dir)}: run benchmarks.sst2_protocol first.")
    os.makedirs(args.summary_dir, exist_ok=True)
    summary = summarize(runs)
    text = format_summary(summary)
    print(text)
    summary["plots"] = {}
    if not args.no_plots:
        for setting, variants in group_runs(runs).items():
            curves = os.path.join(args.summary_dir, f"curves_{setting}.png")
            plot_setting(setting, variants, curves)
            summary["plots"][setting] = [curves]
            pairs = summary["settings"][setting]["pairs"]
            if any(pair["gap_over_steps"] for pair in pairs):
                gaps = os.path.join(args.summary_dir, f"gap_{setting}.png")
                rows = summary["settings"][setting]["variants"]
                baselines = {variant: row["recipe"] for variant, row in rows.items()}
                plot_gaps(setting, pairs, baselines, gaps)
                summary["plots"][setting].append(gaps)
    summary["runs"] = sorted(os.path.relpath(run["_path"], args.summary_dir) for run in runs)
    with open(os.path.join(args.summary_dir, "summary.md"), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(args.summary_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(f"\nwrote summary.md, summary.json and {sum(len(p) for p in summary['plots'].values())} plots "
          f"in {args.summary_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
