"""The evaluator and a finetuning step, timed: loop against pure forwards, bf16 quality, memory formats."""

import statistics
import tempfile
import time
from pathlib import Path

import torch

from demoe.data.dataset import PairedImageDataset
from demoe.data.pairs import resolve
from demoe.jobs.evaluate import EvalConfig, evaluate
from demoe.net.losses import pixel_loss, router_ce
from demoe.net.training import MEMORY_FORMATS, set_train_mode
from demoe.perf.config import PerfConfig
from demoe.perf.forward import timed_forward
from demoe.perf.networks import seeded_network
from demoe.registry import zoo
from demoe.registry.checkpoints import save_checkpoint
from demoe.runner import inference
from demoe.vocab import TASKS


def evaluate_aio_synth(model: str, checkpoint: Path | None, precision: str, cfg: PerfConfig, out: Path):

    eval_cfg = EvalConfig(
        model=model,
        bench="aio-synth",
        checkpoint=str(checkpoint) if checkpoint else None,
        routing=["auto"],
        metrics=["psnr", "ssimc"],
        limit=cfg.pipeline_images,
        out=out,
        precision=precision,
        seed=cfg.seed,
    )
    return evaluate(eval_cfg)


def measure_pipeline(cfg: PerfConfig, arch: str, kwargs: dict, state: dict, progress) -> dict:
    """The evaluator (``demoe-eval run`` without MLflow) on aio-synth against the pure forwards of the
    same images already in memory, per precision. ``loop_over_forward`` is the wall time of the
    evaluation loop (decoding, every routing mode including identity, metrics, records on disk) over
    the sum of the pure forwards; ``loop_over_own_forward`` divides it by the forward time measured
    inside that loop instead, so a change of the host's speed between the two measurements cancels
    out; ``setup_seconds`` (imports, benchmark check, model and metrics) and
    ``finish_seconds`` (tables and figures) are paid once per run, whatever its size."""

    model = inference.prepare(seeded_network(arch, kwargs, cfg.seed))
    model.load_state_dict(state)
    pairs = list(resolve("aio-synth", split="test").pairs)[: cfg.pipeline_images]
    images = [PairedImageDataset(pairs)[i][0][None] for i in range(len(pairs))]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        weights = save_checkpoint(Path(tmp) / "weights.pt", state)
        for precision in cfg.precisions:
            progress(f"evaluator on {len(pairs)} aio-synth images against their pure forwards ({precision})")
            timed_forward(model, images[0], precision=precision)
            pure = sum(timed_forward(model, x, precision=precision)[0] for x in images)
            start = time.perf_counter()
            evaluated = evaluate_aio_synth(cfg.model, weights, precision, cfg, Path(tmp) / precision)
            total = time.perf_counter() - start
            timing = evaluated.timing
            results[precision] = {
                "images": len(pairs),
                "modes": evaluated.routing_modes,
                "pure_forward_seconds": pure,
                "evaluator_forward_seconds": timing.forward_seconds,
                "loop_seconds": timing.wall_seconds,
                "setup_seconds": timing.setup_seconds,
                "finish_seconds": total - timing.setup_seconds - timing.wall_seconds,
                "loop_over_forward": timing.wall_seconds / pure,
                "loop_over_own_forward": timing.wall_seconds / timing.forward_seconds,
                "images_per_second": len(pairs) / timing.wall_seconds,
            }
    return results


def measure_bf16_quality(cfg: PerfConfig, progress) -> dict | None:
    """Mean PSNR of the embedded default model on aio-synth in fp32 and in bf16 (real weights)."""

    if "bf16" not in cfg.precisions:
        return None
    progress(f"{zoo.DEFAULT_MODEL} on aio-synth in fp32 and bf16 (PSNR change)")
    psnr = {}
    with tempfile.TemporaryDirectory() as tmp:
        for precision in ("fp32", "bf16"):
            evaluated = evaluate_aio_synth(zoo.DEFAULT_MODEL, None, precision, cfg, Path(tmp) / precision)
            psnr[precision] = evaluated.results["auto"].metrics["psnr"]
            images = evaluated.results["auto"].images
    return {
        "model": zoo.DEFAULT_MODEL,
        "images": images,
        "psnr_fp32": psnr["fp32"],
        "psnr_bf16": psnr["bf16"],
        "psnr_change_db": psnr["bf16"] - psnr["fp32"],
    }


def measure_training_step(cfg: PerfConfig, progress) -> dict | None:
    """Forward and backward of one finetuning step of the embedded default's architecture (L1 and the
    router's cross-entropy, each crop through its labelled expert) in each ``train.memory_format``,
    in interleaved rounds."""
    if not cfg.train_step:
        return None
    batch, crop = cfg.train_step
    entry = zoo.get_entry(zoo.DEFAULT_MODEL)
    progress(
        f"training step of {entry.name}'s architecture, {batch} crops of {crop}x{crop}, per memory format"
    )
    model = seeded_network(entry.arch, entry.kwargs, cfg.seed)
    set_train_mode(model)
    generator = torch.Generator().manual_seed(cfg.seed)
    blurred, sharp = (torch.rand(batch, 3, crop, crop, generator=generator) for _ in range(2))
    labels = torch.arange(batch) % len(TASKS)
    times: dict[str, list[float]] = {name: [] for name in MEMORY_FORMATS}
    for round_index in range(cfg.warmup + cfg.repeats):
        for name, memory_format in MEMORY_FORMATS.items():
            model.to(memory_format=memory_format)
            x, y = (
                blurred.contiguous(memory_format=memory_format),
                sharp.contiguous(memory_format=memory_format),
            )
            model.zero_grad(set_to_none=True)
            start = time.perf_counter()
            out = model(x, task=labels)
            (pixel_loss(out["output"], y) + router_ce(out["router_logits"], labels)).backward()
            if round_index >= cfg.warmup:
                times[name].append(time.perf_counter() - start)
    seconds = {name: statistics.median(values) for name, values in times.items()}
    return {
        "model": entry.name,
        "batch": batch,
        "crop": crop,
        **{f"{name}_seconds": value for name, value in seconds.items()},
        "speedup": seconds["contiguous"] / seconds["channels_last"],
    }
