"""The step-time harness: interleaved blocks of timed steps, their memory and page faults, and the ratios.

It times *variants*: a variant is a callable ``variant(warmup, steps)`` that builds what one block needs
(fresh optimizers, a fresh trainer) and returns a ``run()`` that performs ``warmup`` untimed then ``steps``
timed steps and returns a `Block` (the timed steps' durations and page faults). `time_steps` turns a
hand-written step function into such a block; `StepTimer` times the steps of a `Trainer`.

How a measurement goes (`interleave`), for one setting (e.g. one sequence length):

* A first, untimed round runs every variant once (``max(1, warmup)`` steps) before anything is recorded.
* Then ``--rounds`` rounds: each runs every variant's block once, round-robin, the order rotated by one
  each round, so that slow drifts of the machine hit every variant alike. The ``--repeats`` timed steps
  per variant are spread over the rounds; every block starts with ``--warmup`` untimed steps.
* A block during which other processes used more than ``--max_foreign_cpu`` of the CPUs (from
  ``/proc/stat``) is measured again, up to ``--max_attempts`` times, after ``--retry_pause`` seconds.

What a step's time is (``--clock``): wall-clock seconds (waiting for CUDA), or on CPU the seconds of CPU
time this process spent (user + system), which other processes on a shared machine disturb far less than
the wall clock (they still share caches and memory bandwidth).

What is reported per variant: the median seconds per step over all timed steps of all rounds, with the
interquartile range; the peak memory of a block above its start (`MemoryMeter`); minor page faults per
timed step. Per ratio ``a/b``: the ratio of the two medians over all steps, and its spread over the
rounds: in each round, the median of ``a``'s block over the median of ``b``'s block (the two blocks ran
minutes apart at most), then the median, min, max and sample standard deviation of those per-round ratios.
A ratio whose min-max range straddles a target is not distinguishable from it on that machine.

Memory. CUDA: ``torch.cuda.max_memory_allocated`` over the block (reset before it), and that peak minus
what was allocated when the block started. CPU: the process's peak resident set (``VmHWM``, reset through
``/proc/self/clear_refs`` after ``gc`` and ``malloc_trim``) minus its resident set when the block started:
the extra memory the block touched (activations, gradients, optimizer states, the trainer), with the
models already resident. It is process-wide, so it counts anything else this process allocates meanwhile.
``faults/step`` counts the minor page faults of a timed step: with glibc's allocator, memory freed at the
end of a step goes back to the system and is faulted in again by the next one, a cost that grows with
the step's peak memory (CPU only; CUDA's caching allocator keeps its memory).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import os
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from transformers import TrainerCallback

# Harness options: (default, default of a --tiny smoke run).
DEFAULTS = {"repeats": (20, 2), "rounds": (4, 1), "warmup": (2, 1), "max_foreign_cpu": (0.1, 1.0)}


@dataclass
class Block:
    """What one block of a variant measured: per timed step its seconds and minor page faults; ``loops``
    (`Trainer` variants) the intervals between step starts; ``parts`` the seconds of named parts of a step."""

    times: list[float]
    faults: list[int | None]
    loops: list[float] | None = None
    parts: dict[str, list[float]] = field(default_factory=dict)


Variant = Callable[[int, int], Callable[[], Block]]


# ---------------------------------------------------------------------------------------------- clocks


class Clock:
    """``perf_counter`` that first waits for the device (CUDA kernels are asynchronous); or (``kind="cpu"``)
    the CPU time of this process (user + system, all its threads: `time.process_time`)."""

    def __init__(self, device: torch.device, kind: str = "wall"):
        if kind not in ("wall", "cpu"):
            raise ValueError(f"clock kind {kind!r}: use 'wall' or 'cpu'")
        if kind == "cpu" and device.type != "cpu":
            raise ValueError("the CPU-time clock cannot time a GPU's work: use the wall clock on CUDA")
        self.cuda, self.read = device.type == "cuda", time.perf_counter if kind == "wall" else time.process_time

    def __call__(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return self.read()


def minor_faults() -> int | None:
    """Minor page faults of this process so far (each maps a fresh page: on CPU, memory the allocator
    gave back to the system and takes again)."""
    try:
        import resource
    except ImportError:
        return None
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _difference(after, before):
    return None if after is None or before is None else after - before


class StepTimer(TrainerCallback):
    """Records the clock and the page faults at every ``on_step_begin`` and ``on_step_end`` of a `Trainer`."""

    def __init__(self, clock: Clock):
        self.clock, self.begins, self.ends, self.faults = clock, [], [], []

    def on_step_begin(self, args, state, control, **kwargs):
        self.faults.append(minor_faults())
        self.begins.append(self.clock())

    def on_step_end(self, args, state, control, **kwargs):
        self.ends.append(self.clock())
        self.faults[-1] = _difference(minor_faults(), self.faults[-1])

    def block(self, warmup: int) -> Block:
        """The steps after the first ``warmup`` ones."""
        return Block(times=[end - begin for begin, end in zip(self.begins, self.ends)][warmup:],
                     faults=self.faults[warmup:],
                     loops=[b - a for a, b in zip(self.begins, self.begins[1:])][warmup:])


def time_steps(step: Callable, count: int, warmup: int, clock: Clock, parts: tuple[str, ...] = ()) -> Block:
    """Runs ``step(index, mark)`` for ``index`` in ``range(warmup + count)`` and times the last ``count``.

    Without ``parts`` the whole call is timed. With ``parts``, the step calls ``mark()`` at the start of its
    timed window, between parts and at its end (``len(parts) + 1`` times): the step's time is the sum of its
    parts, and whatever it does before its first mark stays outside the window."""
    times, faults, durations, marks = [], [], {part: [] for part in parts}, []

    def mark():
        marks.append((clock(), minor_faults()))

    for index in range(warmup + count):
        marks.clear()
        if not parts:
            mark()
        step(index, mark)
        if not parts:
            mark()
        if len(marks) != len(parts) + (1 if parts else 2):
            raise RuntimeError(f"the step marked {len(marks)} times; its parts {parts} need {len(parts) + 1}")
        if index >= warmup:
            spans = [b[0] - a[0] for a, b in zip(marks, marks[1:])]
            for part, span in zip(parts, spans):
                durations[part].append(span)
            times.append(sum(spans))
            faults.append(_difference(marks[-1][1], marks[0][1]))
    return Block(times=times, faults=faults, parts=durations)


# ---------------------------------------------------------------------------------------------- machine


def _proc_status_kib(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class MemoryMeter:
    """Peak memory of one block: see the module docstring for what the number means."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.libc = None
        with contextlib.suppress(OSError):
            self.libc = ctypes.CDLL("libc.so.6")
        self.can_reset = False
        if not self.cuda:
            try:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")
                self.can_reset = _proc_status_kib("VmHWM") is not None
            except OSError:
                self.can_reset = False

    @property
    def description(self) -> str:
        if self.cuda:
            return ("torch.cuda.max_memory_allocated during the block (reset before it), MiB; delta: minus the "
                    "memory allocated when the block started (both models resident)")
        if self.can_reset:
            return ("CPU: the process's peak resident set during the block (VmHWM, reset before it) minus its "
                    "resident set when the block started (both models resident, after gc and malloc_trim), MiB; "
                    "process-wide, max over the rounds")
        return "unavailable (no /proc/self/clear_refs on this system)"

    def start(self) -> None:
        gc.collect()
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
            return
        if self.libc is not None:
            self.libc.malloc_trim(0)
        if self.can_reset:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.base = _proc_status_kib("VmRSS") * 1024

    def stop(self) -> dict:
        if self.cuda:
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated()
            return {"peak_mib": peak / 2**20, "delta_mib": (peak - self.base) / 2**20}
        if self.can_reset:
            peak = _proc_status_kib("VmHWM") * 1024
            return {"peak_rss_mib": peak / 2**20, "delta_mib": (peak - self.base) / 2**20}
        return {}


class CpuActivity:
    """How busy the machine's CPUs were with *other* processes over a block (Linux ``/proc``): the
    jiffies all CPUs spent busy minus this process's own, as a fraction of the CPUs' time. Measured
    step times on a shared machine are only trusted when this stays small (see ``--max_foreign_cpu``)."""

    def __init__(self):
        self.available = self._machine() is not None and self._own() is not None

    @staticmethod
    def _machine():
        try:
            with open("/proc/stat") as f:
                fields = [int(x) for x in f.readline().split()[1:9]]
        except (OSError, ValueError):
            return None
        busy = sum(fields) - fields[3] - fields[4]  # minus idle and iowait
        return busy, sum(fields)

    @staticmethod
    def _own():
        try:
            with open("/proc/self/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return int(fields[11]) + int(fields[12])  # utime + stime
        except (OSError, ValueError, IndexError):
            return None

    def start(self) -> None:
        if self.available:
            self.begin = (self._machine(), self._own())

    def stop(self) -> float | None:
        """The share (0..1) of all CPUs' time that other processes used since `start`."""
        if not self.available:
            return None
        (busy0, total0), own0 = self.begin
        (busy1, total1), own1 = self._machine(), self._own()
        if total1 <= total0:
            return 0.0
        return max(0.0, (busy1 - busy0) - (own1 - own0)) / (total1 - total0)


# ---------------------------------------------------------------------------------------------- interleaving


def _mean(values):
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def _measure_block(variant: Variant, warmup: int, steps: int, meter: MemoryMeter, activity: CpuActivity) -> dict:
    run = variant(warmup, steps)
    load = os.getloadavg()[0]
    meter.start()
    activity.start()
    block = run()
    foreign = activity.stop()
    memory = meter.stop()
    del run
    gc.collect()
    return {"block": block, "load_1min": load, "foreign_cpu": foreign, "memory": memory}


def interleave(variants: dict[str, Variant], options: argparse.Namespace, device: torch.device,
               log: Callable[[str], None], label: str) -> dict:
    """``{"blocks": {variant: kept blocks in round order}, "memory_meaning"}``; a kept block is ``{"block":
    Block, "round", "attempts", "load_1min", "foreign_cpu", "memory"}`` (the procedure: module docstring)."""
    meter, activity = MemoryMeter(device), CpuActivity()
    rounds = max(1, min(options.rounds, options.repeats))
    per_round = [options.repeats // rounds + (1 if r < options.repeats % rounds else 0) for r in range(rounds)]
    names = list(variants)
    log(f"{label}: warm-up round")
    for name in names:
        _measure_block(variants[name], max(1, options.warmup), 0, meter, activity)
    kept = {name: [] for name in names}
    for r, steps in enumerate(per_round):
        order = names[r % len(names):] + names[:r % len(names)]
        log(f"{label}: round {r + 1}/{rounds} ({steps} timed steps per variant)")
        for name in order:
            for attempt in range(1, options.max_attempts + 1):
                measured = _measure_block(variants[name], options.warmup, steps, meter, activity)
                foreign = measured["foreign_cpu"]
                if foreign is None or foreign <= options.max_foreign_cpu or attempt == options.max_attempts:
                    break
                log(f"  {name}: other processes used {foreign:.0%} of the CPUs, measuring it again")
                time.sleep(options.retry_pause)
            kept[name].append({**measured, "round": r, "attempts": attempt})
    return {"blocks": kept, "memory_meaning": meter.description}


# ---------------------------------------------------------------------------------------------- summary


def summarize(values: list[float]) -> dict:
    if not values:
        return {"median_s": None, "iqr_s": None, "n": 0}
    if len(values) >= 2:
        q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    else:
        q1 = q3 = values[0]
    return {"median_s": statistics.median(values), "iqr_s": q3 - q1, "q1_s": q1, "q3_s": q3, "n": len(values)}


def spread(values: list[float]) -> dict:
    """Median, min, max and sample standard deviation (None for fewer than two values) of ``values``."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "sd": statistics.stdev(values) if len(values) >= 2 else None, "values": values}


def _variant_entry(blocks: list[dict], batch_size: int) -> dict:
    times = [t for b in blocks for t in b["block"].times]
    entry = summarize(times)
    entry["samples_per_s"] = batch_size / entry["median_s"] if entry["median_s"] else None
    memories = [b["memory"] for b in blocks]
    entry["memory_mib"] = {k: max(m[k] for m in memories) for k in memories[0]} if memories and memories[0] else {}
    per_block = [_mean(b["block"].faults) for b in blocks]
    faults = [f for f in per_block if f is not None]
    entry["minor_faults_per_step_median"] = statistics.median(faults) if faults else None
    entry["times_s"] = times
    entry["blocks"] = [
        {"round": b["round"], "steps": len(b["block"].times), "load_1min": b["load_1min"],
         "foreign_cpu": b["foreign_cpu"], "attempts": b["attempts"], "minor_faults_per_step": f,
         "median_s": statistics.median(b["block"].times) if b["block"].times else None}
        for b, f in zip(blocks, per_block)
    ]
    if blocks and blocks[0]["block"].loops is not None:
        entry["loop_s"] = summarize([t for b in blocks for t in b["block"].loops])["median_s"]
    parts = {}
    for b in blocks:
        for part, values in b["block"].parts.items():
            parts.setdefault(part, []).extend(values)
    if parts:
        entry["parts_median_s"] = {p: statistics.median(v) for p, v in parts.items()}
        entry["sum_of_part_medians_s"] = sum(entry["parts_median_s"].values())
    return entry


def _per_round_ratios(numerator: dict, denominator: dict) -> list[float]:
    by_round = {b["round"]: b["median_s"] for b in denominator["blocks"] if b["median_s"]}
    return [b["median_s"] / by_round[b["round"]] for b in numerator["blocks"]
            if b["median_s"] is not None and b["round"] in by_round]


def summarize_blocks(measured: dict, ratios: Iterable[str], batch_size: int) -> dict:
    """The JSON result of one setting: per variant its summary; per ratio ``"a/b"`` (variant ``a``'s time
    over ``b``'s) the ratio of the medians over all steps (``ratios``) and its spread over the rounds
    (``ratio_spreads``). Ratios of variants that did not run are left out."""
    variants = {name: _variant_entry(blocks, batch_size) for name, blocks in measured["blocks"].items()}
    pairs = {name: tuple(name.split("/")) for name in ratios}
    present = {name: pair for name, pair in pairs.items() if all(v in variants for v in pair)}
    result = {"variants": variants,
              "ratios": {name: variants[a]["median_s"] / variants[b]["median_s"] for name, (a, b) in present.items()},
              "ratio_spreads": {}, "memory_meaning": measured["memory_meaning"]}
    for name, (a, b) in present.items():
        per_round = _per_round_ratios(variants[a], variants[b])
        if per_round:
            result["ratio_spreads"][name] = spread(per_round)
    return result


def format_table(results: dict, title: Callable[[str], str], reference: str) -> str:
    """The printed table: one section per setting (``title(key)``), times relative to ``reference``."""
    lines = []
    for key, result in results.items():
        variants = result["variants"]
        base = variants[reference]["median_s"]
        width = max(14, *(len(name) + 2 for name in variants))
        lines.append(f"\n{title(key)}")
        lines.append(f"{'variant':<{width}}{'s/step':>10}{'IQR':>10}{'samples/s':>11}{'x ' + reference:>9}"
                     f"{'mem MiB':>9}{'loop s':>9}{'faults/step':>12}{'other CPU':>11}{'retries':>9}")
        for name, entry in variants.items():
            memory = entry["memory_mib"].get("delta_mib")
            loop = entry.get("loop_s")
            foreign = [b["foreign_cpu"] for b in entry["blocks"] if b["foreign_cpu"] is not None]
            retries = sum(b["attempts"] - 1 for b in entry["blocks"])
            faults = entry["minor_faults_per_step_median"]
            lines.append(
                f"{name:<{width}}{entry['median_s']:>10.4f}{entry['iqr_s']:>10.4f}{entry['samples_per_s']:>11.1f}"
                f"{entry['median_s'] / base:>9.3f}{'' if memory is None else f'{memory:.0f}':>9}"
                f"{'' if loop is None else f'{loop:.4f}':>9}{'' if faults is None else f'{faults / 1000:.0f}k':>12}"
                f"{f'{max(foreign):.0%}' if foreign else '':>11}{retries:>9}"
            )
        for name, entry in variants.items():
            if "parts_median_s" in entry:
                lines.append(f"{name} parts (median s): "
                             + ", ".join(f"{k} {v:.4f}" for k, v in entry["parts_median_s"].items()))
        width = max(22, *(len(name) + 2 for name in result["ratios"]))
        lines.append(f"{'ratio':<{width}}{'all steps':>10}{'rounds: median':>16}{'min':>8}{'max':>8}{'sd':>8}")
        for name, value in result["ratios"].items():
            s = result["ratio_spreads"].get(name)
            cells = ("", "", "", "") if s is None else (
                f"{s['median']:.3f}", f"{s['min']:.3f}", f"{s['max']:.3f}", "" if s["sd"] is None else f"{s['sd']:.3f}")
            lines.append(f"{name:<{width}}{value:>10.3f}{cells[0]:>16}{cells[1]:>8}{cells[2]:>8}{cells[3]:>8}")
    lines.append("s/step: median over all timed steps (IQR: q3 - q1), wall-clock or CPU seconds (--clock); mem: "
                 "peak memory of a block above its start (see memory_meaning in the JSON); loop s: median interval "
                 "between step starts (adds batch fetch/collation); faults/step: minor page faults per timed step "
                 "(median over blocks); other CPU: the most of the CPUs other processes used during a kept block. "
                 "Ratios: of the medians over all steps; rounds: the same ratio within each round (one block of "
                 "each variant), its median, min, max and sample sd over the rounds.")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser, default_output: str) -> None:
    """The harness's options (their defaults depend on ``--tiny``: see `fill_defaults`)."""
    repeats, rounds, warmup, foreign = (DEFAULTS[k] for k in ("repeats", "rounds", "warmup", "max_foreign_cpu"))
    parser.add_argument("--repeats", type=int, default=None,
                        help="Timed steps per variant and setting, spread over the rounds (default "
                        f"{repeats[0]}; --tiny: {repeats[1]}).")
    parser.add_argument("--rounds", type=int, default=None,
                        help=f"Interleaved rounds over the variants (default {rounds[0]}; --tiny: {rounds[1]}); "
                        "each ratio's spread is taken over them.")
    parser.add_argument("--warmup", type=int, default=None,
                        help=f"Untimed steps at the start of every block (default {warmup[0]}: on CPU the first two "
                        "steps of a block still grow the heap, more so for the variants with the higher peak); "
                        f"--tiny: {warmup[1]}.")
    parser.add_argument("--output", default=default_output, help="Where to write the JSON results.")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--max_foreign_cpu", type=float, default=None,
                        help="A block during which other processes used more than this share of the CPUs (0..1) is "
                        f"measured again, up to --max_attempts times (default {foreign[0]}; --tiny: {foreign[1]:g}, "
                        "i.e. never).")
    parser.add_argument("--max_attempts", type=int, default=4, help="Attempts per block (see --max_foreign_cpu).")
    parser.add_argument("--retry_pause", type=float, default=5.0, help="Seconds to wait before measuring again.")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads for the run (default: torch's own choice); restored afterwards.")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="What a step's time is: wall-clock seconds (default), or the CPU seconds of this "
                        "process (user + system), which other processes on a shared machine disturb far less; "
                        "use it with --threads 1 (idle threads spinning between parallel regions count too). "
                        "CPU only.")


def fill_defaults(parser: argparse.ArgumentParser, options: argparse.Namespace, tiny: bool) -> None:
    """Sets the harness's options left unset and checks them."""
    for name, values in DEFAULTS.items():
        if getattr(options, name) is None:
            setattr(options, name, values[1] if tiny else values[0])
    if options.repeats < 1 or options.warmup < 0 or options.max_attempts < 1:
        parser.error("--repeats and --max_attempts must be positive, --warmup non-negative")
    if options.clock == "cpu" and options.device != "cpu":
        parser.error("--clock cpu times this process's CPU work: it needs --device cpu")


def settings(options: argparse.Namespace) -> dict:
    """The harness's options as recorded in the JSON."""
    return {"repeats": options.repeats, "rounds": options.rounds, "warmup_per_block": options.warmup,
            "max_foreign_cpu": options.max_foreign_cpu, "max_attempts": options.max_attempts,
            "threads": torch.get_num_threads(), "clock": options.clock}


def logger(name: str) -> Callable[[str], None]:
    def log(message: str) -> None:
        print(f"[{name} {time.strftime('%H:%M:%S')}] {message}", flush=True)

    return log


def with_threads(options: argparse.Namespace, run: Callable[[], dict]) -> dict:
    """``run()`` with ``--threads`` torch threads, restoring the previous number afterwards."""
    previous = torch.get_num_threads()
    if options.threads:
        torch.set_num_threads(options.threads)
    try:
        return run()
    finally:
        torch.set_num_threads(previous)


def write_report(report: dict, path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(report, f, indent=2)
    print(f"wrote {path}")
