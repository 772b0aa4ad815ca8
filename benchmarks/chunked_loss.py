"""Peak memory and time of the chunked KD loss (`hf_prokt.losses.chunked`) against the full-logits one.

The measured step: the KD student loss ``alpha * T^2 * KL(p_T || p_S) + (1 - alpha) * CE(z_S, y)``
(``alpha = 0.5``, ``T = 1``), forward and backward, from the models' last hidden states and ``lm_head``
weights, in fp32 on the CPU. Default sizes: vocabulary ``V = 32000``, sequence length ``L = 512``, batch 4,
so ``N = 2048`` labelled rows; student hidden width 384, teacher 768, heads without bias. The student's
hidden states and head require grad (its head's ``.grad`` is allocated by the step), the teacher's do
not. Variants:

* ``plain``: `plain_distillation_losses`, the loss written with full ``[N, V]`` logits of both models
  (the teacher's computed inside the step, under the same no-grad rule as the chunked one);
* ``chunked@C``: `chunked_student_loss` with ``chunk_size = C`` rows, for each ``C`` of ``--chunk_sizes``
  and the default (`default_chunk_size`, marked in the report).

Memory: each variant runs in its own fresh subprocess (``--memory_repeats`` times), which builds the
inputs (without temporaries) and runs the step once. The *extra peak* of a variant is the peak resident
set size of its own address space during the step (``VmHWM`` of /proc/self/status) minus the resident
set size just before it, the peak having been reset to the current size once the inputs exist (Linux:
``5`` written to ``/proc/self/clear_refs``), so no earlier transient (imports, building the inputs) can
hide part of the step under an older peak. ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` is recorded
too but not used: Linux folds into it, at exec, the peak of the process the child was forked from, so a
child of this (large) process reports at least this one's size. As a cross-check, a control subprocess
only builds the inputs, and each variant's peak after the step minus the control's peak is reported too
(``versus_control``; the ratio uses it where the peak cannot be reset). The extra peak includes the
student head's gradient (``V x H_S`` floats, alike in both variants) and what the math libraries
allocate. On glibc, blocks above the malloc mmap threshold (at most 32 MiB) go back to the system when
freed, smaller ones stay in the heap: chunks of less than 32 MiB per ``[chunk, V]`` buffer give figures
that vary from run to run.

Time: all variants in this process, interleaved: one untimed warm-up step each, then ``--rounds`` rounds,
each timing one step of every variant in a rotated order. Reported per variant: median, min, max and
quartiles of the step times; per chunked variant, the ratio chunked/plain of each round and their
median, min and max. The machine's load (``os.getloadavg``) is recorded before and after each thread
setting: on a shared machine the ratios are indicative. Threads: ``--threads 1 2`` measures each count in
turn (``torch.set_num_threads`` here, ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` in the subprocesses).

Run: ``python -m benchmarks.chunked_loss --threads 1 2`` (writes benchmarks/results/chunked_loss.json);
``--tiny`` for a smoke run at a tiny size.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

import torch

DEFAULT_OUTPUT = os.path.join(os.path.dirname(__file__), "results", "chunked_loss.json")
FULL = dict(vocab_size=32000, seq_len=512, batch_size=4, student_hidden=384, teacher_hidden=768)
TINY = dict(vocab_size=256, seq_len=16, batch_size=2, student_hidden=16, teacher_hidden=32)
TARGET = dict(memory_ratio_at_most=0.25, time_ratio_at_most=1.1)
_LOSSES = None


def losses():
    """`hf_prokt.losses.chunked`. The memory subprocesses load it from its file instead (`_load_from_file`):
    it needs only torch, while importing the `hf_prokt` package imports transformers, seconds and hundreds of
    MiB in every subprocess."""
    global _LOSSES
    if _LOSSES is None:
        import hf_prokt.losses.chunked

        _LOSSES = hf_prokt.losses.chunked
    return _LOSSES


def _load_from_file():
    global _LOSSES
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "hf_prokt", "losses", "chunked.py")
    spec = importlib.util.spec_from_file_location("_chunked_losses_benchmarked", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    _LOSSES = module


def make_inputs(settings: dict, seed: int = 0) -> dict:
    """The step's inputs: ``[N, H]`` hidden states and ``[V, H]`` heads of both models, ``[N]`` labels."""
    generator = torch.Generator().manual_seed(seed)
    n, v = settings["batch_size"] * settings["seq_len"], settings["vocab_size"]

    def tensor(*shape, scale=1.0):  # scaled in place: no temporary raises the peak RSS before the step
        return torch.randn(*shape, generator=generator).mul_(scale)

    return {
        "student_hidden": tensor(n, settings["student_hidden"]).requires_grad_(),
        "student_weight": tensor(v, settings["student_hidden"], scale=settings["student_hidden"] ** -0.5)
        .requires_grad_(),
        "teacher_hidden": tensor(n, settings["teacher_hidden"]),
        "teacher_weight": tensor(v, settings["teacher_hidden"], scale=settings["teacher_hidden"] ** -0.5),
        "labels": torch.randint(0, v, (n,), generator=generator),
    }


def step(variant: str, inputs: dict, settings: dict) -> float:
    """One forward and backward of the KD student loss; returns the loss. ``variant``: plain or chunked@C."""
    for name in ("student_hidden", "student_weight"):
        inputs[name].grad = None
    args = (inputs["student_hidden"], inputs["student_weight"], inputs["teacher_hidden"], inputs["teacher_weight"],
            inputs["labels"])
    if variant == "plain":
        loss = losses().plain_distillation_losses(*args, student_kl_weight=settings["alpha"],
                                         student_ce_weight=1 - settings["alpha"],
                                         temperature=settings["temperature"]).student_loss
    else:
        chunk_size = int(variant.split("@")[1])
        loss, _ = losses().chunked_student_loss(*args, alpha=settings["alpha"], temperature=settings["temperature"],
                                       chunk_size=chunk_size)
    loss.backward()
    return loss.item()


def _status_bytes(key: str) -> int | None:
    """A size from /proc/self/status (Linux), in bytes, or None."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _peak_rss_bytes() -> int:
    """The peak RSS of this process's own address space (``VmHWM``). Not ``ru_maxrss``: for a process
    started by fork and exec, Linux folds the peak of the image it was forked from into ``ru_maxrss`` at
    exec, so a child of a large process reports at least its parent's size, reset or not. Outside Linux,
    ``ru_maxrss`` (KiB on Linux and BSD)."""
    peak = _status_bytes("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _reset_peak_rss() -> bool:
    """Linux: writing 5 to /proc/self/clear_refs resets the peak RSS (``VmHWM``) to the current RSS."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return True
    except OSError:
        return False


def memory_child(variant: str, settings: dict) -> dict:
    """In a fresh process: peak RSS after building the inputs, and after one step of ``variant`` (unless
    ``variant`` is ``inputs``, the control). Also, where Linux allows it, the peak of the step alone: the
    peak is reset to the current RSS once the inputs exist, so nothing before the step can hide under it."""
    torch.set_num_threads(settings["threads"])
    inputs = make_inputs(settings)
    result = {"variant": variant, "peak_after_inputs": _peak_rss_bytes()}
    if variant != "inputs":
        before = _status_bytes("VmRSS")
        reset = before is not None and _reset_peak_rss()
        result["loss"] = step(variant, inputs, settings)
        result["peak_after_step"] = _peak_rss_bytes()
        result["ru_maxrss_after_step"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        if reset:
            result["step_extra_after_reset"] = result["peak_after_step"] - before
    return result


def _run_memory_child(variant: str, settings: dict) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(settings["threads"]), MKL_NUM_THREADS=str(settings["threads"]))
    command = [sys.executable, "-m", "benchmarks.chunked_loss", "--_memory_child", variant, json.dumps(settings)]
    completed = subprocess.run(command, env=env, capture_output=True, text=True, check=False,
                               cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if completed.returncode != 0:
        raise RuntimeError(f"memory run of {variant} failed:\n{completed.stderr}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def _mib(value: float) -> float:
    return round(value / 2**20, 1)


def measure_memory(variants: list[str], settings: dict, repeats: int, log) -> dict:
    controls = [_run_memory_child("inputs", settings)["peak_after_inputs"] for _ in range(repeats)]
    control = statistics.median(controls)
    result = {"control_peak_mib": [_mib(c) for c in controls]}
    for variant in variants:
        runs = [_run_memory_child(variant, settings) for _ in range(repeats)]
        versus_control = [r["peak_after_step"] - control for r in runs]
        reset = [r.get("step_extra_after_reset") for r in runs]
        extra = reset if None not in reset else versus_control
        entry = {"extra_peak_mib": _mib(statistics.median(extra)),
                 "method": "peak reset" if extra is reset else "versus control",
                 "after_reset_mib_runs": [_mib(e) if e is not None else None for e in reset],
                 "versus_control_mib_runs": [_mib(e) for e in versus_control],
                 "peak_mib_runs": [_mib(r["peak_after_step"]) for r in runs],
                 "ru_maxrss_mib_runs": [_mib(r["ru_maxrss_after_step"]) for r in runs], "loss": runs[0]["loss"]}
        result[variant] = entry
        log(f"  memory {variant}: extra peak {entry['extra_peak_mib']} MiB (after reset "
            f"{entry['after_reset_mib_runs']}, versus control {entry['versus_control_mib_runs']})")
    return result


def _summary(values: list[float]) -> dict:
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive") if len(values) >= 2 else (values[0],) * 3
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "q1": q1, "q3": q3,
            "n": len(values), "values": values}


def measure_time(variants: list[str], settings: dict, rounds: int, log) -> dict:
    inputs = make_inputs(settings)
    for variant in variants:  # warm-up: first-call costs stay out of the timings
        step(variant, inputs, settings)
    times: dict[str, list[float]] = {v: [] for v in variants}
    for r in range(rounds):
        order = variants[r % len(variants):] + variants[:r % len(variants)]
        for variant in order:
            start = time.perf_counter()
            step(variant, inputs, settings)
            times[variant].append(time.perf_counter() - start)
        log(f"  round {r + 1}/{rounds}: " + ", ".join(f"{v} {times[v][-1]:.2f}s" for v in variants))
    return {v: _summary(t) for v, t in times.items()}


def run_threads(threads: int, options, settings: dict, variants: list[str], log) -> dict:
    settings = dict(settings, threads=threads)
    torch.set_num_threads(threads)
    load_before = os.getloadavg()
    log(f"{threads} thread(s), load {load_before[0]:.2f}: memory, {options.memory_repeats} fresh process(es) each")
    memory = measure_memory(variants, settings, options.memory_repeats, log)
    log(f"{threads} thread(s): time, {options.rounds} interleaved rounds")
    timing = measure_time(variants, settings, options.rounds, log)
    ratios = {}
    for variant in variants:
        if variant == "plain":
            continue
        per_round = [c / p for c, p in zip(timing[variant]["values"], timing["plain"]["values"])]
        plain_extra = memory["plain"]["extra_peak_mib"]
        memory_ratio = memory[variant]["extra_peak_mib"] / plain_extra if plain_extra > 0 else None
        time_ratio = _summary(per_round)
        ratios[variant] = {
            "memory": memory_ratio, "time": time_ratio,
            "meets_target": (memory_ratio is not None and memory_ratio <= TARGET["memory_ratio_at_most"]
                             and time_ratio["median"] <= TARGET["time_ratio_at_most"]),
        }
        shown = f"{memory_ratio:.3f}" if memory_ratio is not None else "n/a (no extra peak for plain)"
        log(f"  {variant}/plain: memory {shown}, time {time_ratio['median']:.3f} "
            f"[{time_ratio['min']:.3f}, {time_ratio['max']:.3f}]")
    return {"threads": threads, "load_before": list(load_before), "load_after": list(os.getloadavg()),
            "memory": memory, "time_s": timing, "ratios_chunked_over_plain": ratios}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny sizes (a smoke run)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1])
    parser.add_argument("--chunk_sizes", type=int, nargs="*", default=[64, 256, 512, 1024],
                        help="rows per chunk to measure besides the default")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--memory_repeats", type=int, default=2)
    parser.add_argument("--output", default=DEFAULT_OUTPUT)
    parser.add_argument("--_memory_child", nargs=2, help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options._memory_child:
        variant, settings = options._memory_child
        _load_from_file()
        print(json.dumps(memory_child(variant, json.loads(settings))))
        return {}

    def log(message):
        print(message, file=sys.stderr, flush=True)

    settings = dict(TINY if options.tiny else FULL, alpha=0.5, temperature=1.0, dtype="float32", device="cpu")
    settings["rows"] = settings["batch_size"] * settings["seq_len"]
    default = losses().default_chunk_size(settings["vocab_size"], settings["rows"])
    chunk_sizes = sorted({min(c, settings["rows"]) for c in options.chunk_sizes} | {default})
    variants = ["plain"] + [f"chunked@{c}" for c in chunk_sizes]
    report = {
        "settings": dict(settings, default_chunk_size=default, default_chunk_bytes=losses().DEFAULT_CHUNK_BYTES,
                         chunk_sizes=chunk_sizes, rounds=options.rounds, memory_repeats=options.memory_repeats),
        "target": TARGET,
        "machine": {"torch": torch.__version__, "python": platform.python_version(), "platform": platform.platform(),
                    "cpu_count": os.cpu_count()},
        "command": "python -m benchmarks.chunked_loss " + " ".join(argv if argv is not None else sys.argv[1:]),
        "runs": {},
    }
    for threads in options.threads:
        report["runs"][str(threads)] = run_threads(threads, options, settings, variants, log)
    os.makedirs(os.path.dirname(os.path.abspath(options.output)), exist_ok=True)
    with open(options.output, "w") as handle:
        json.dump(report, handle, indent=1)
        handle.write("\n")
    log(f"wrote {options.output}")
    return report


if __name__ == "__main__":
    main()
