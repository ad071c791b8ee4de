"""``demoe-eval perf``: our inference path against the published forward of the same network, side by side.

The reference is ``demoe.net.reference.forward`` (eager, NCHW contiguous fp32, the published MoE loop) and
runs in a helper process with glibc's default allocator, as the published code runs; ours is
``demoe.runner.inference`` in this process, prepared as the evaluator prepares it. The two never run at
the same time: every round runs each configuration once in the helper, then once here, so a
neighbour's load hits both alike, and the figures are medians over rounds after warm-up rounds.
Weights are random (seeded): speed does not depend on them, and both paths use the same ones.
A finetuning step of the embedded default's architecture is timed too, in each ``train.memory_format``.
"""

import json
import os
import platform
from dataclasses import asdict
from pathlib import Path

import torch

from demoe.fileio import atomic_write_text
from demoe.perf.config import LARGE_IMAGE, PerfConfig, PerfError, full_config, quick_config
from demoe.perf.forward import forward_rows, measure_forwards, measure_large_image, scaling
from demoe.perf.networks import seeded_network
from demoe.perf.pipeline import measure_bf16_quality, measure_pipeline, measure_training_step
from demoe.perf.processes import in_helper, reference_worker
from demoe.perf.tables import display_tables
from demoe.registry import zoo
from demoe.runner import inference

__all__ = [
    "LARGE_IMAGE",
    "PerfConfig",
    "PerfError",
    "display_tables",
    "full_config",
    "quick_config",
    "run",
    "write",
]


def environment(threads: int) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "device": "cpu",
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "python": platform.python_version(),
        "load_average_at_start": list(os.getloadavg()),
    }


def run(cfg: PerfConfig, progress=print) -> dict:
    """Run the benchmark of ``cfg``; returns the results that ``format_results`` prints and ``write`` saves."""
    entry = zoo.get_entry(cfg.model)
    if entry.arch != "DeMoE":
        raise PerfError(f"--model {cfg.model}: perf compares DeMoE paths; choose a DeMoE model")
    num_experts = entry.kwargs.get("num_exp", 5)
    for k in cfg.ks:
        if not 1 <= k <= num_experts:
            raise PerfError(f"--k {k}: must be between 1 and {num_experts}, the number of experts")
    if not cfg.precisions:
        raise PerfError("--precision: name at least one of fp32, bf16")
    for precision in cfg.precisions:
        inference.check_precision(precision, torch.device("cpu"))
    torch.set_num_threads(cfg.threads)
    state = seeded_network(entry.arch, entry.kwargs, cfg.seed).state_dict()
    ours = inference.prepare(seeded_network(entry.arch, entry.kwargs, cfg.seed))
    compiled = None
    if inference.use_compile(cfg.compile, torch.device("cpu")):
        compiled = inference.prepare(seeded_network(entry.arch, entry.kwargs, cfg.seed), compile_mode="on")
    progress(f"reference helper process starting ({cfg.threads} threads)")
    helper, conn = in_helper(reference_worker, entry.arch, entry.kwargs, state, cfg.threads)
    try:
        times, diffs, first_calls = measure_forwards(cfg, ours, compiled, conn, progress)
    finally:
        conn.send(None)
        helper.join(timeout=30)
    rows = forward_rows(cfg, times, diffs, first_calls)
    large = measure_large_image(cfg, entry.arch, entry.kwargs, state, progress) if cfg.large_image else None
    pipeline = quality = None
    if cfg.pipeline_images != 0:
        pipeline = measure_pipeline(cfg, entry.arch, entry.kwargs, state, progress)
        quality = measure_bf16_quality(cfg, progress)
    training = measure_training_step(cfg, progress)
    return {
        "config": asdict(cfg),
        "model": {
            "name": entry.name,
            "arch": entry.arch,
            "kwargs": entry.kwargs,
            "weights": f"random, seed {cfg.seed}",
        },
        "environment": environment(cfg.threads),
        "reference": "demoe.net.reference.forward: eager, NCHW contiguous fp32, the published MoE loop; "
        "in a helper process with glibc's default allocator",
        "ours": "demoe.runner.inference.forward after inference.prepare: channels-last, inference mode, "
        "heap keeps freed memory; bf16 = CPU autocast; compiled = torch.compile(dynamic=True) of it, fp32",
        "forward": rows,
        "scaling": scaling(cfg, rows),
        "large_image": large,
        "pipeline": pipeline,
        "bf16_quality": quality,
        "training_step": training,
    }


def write(results: dict, out: Path) -> Path:
    return atomic_write_text(Path(out), json.dumps(results, indent=1, sort_keys=True))
