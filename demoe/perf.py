"""``demoe-eval perf``: our inference path against the published forward of the same network, side by side.

The reference is ``demoe.reference.forward`` (eager, NCHW contiguous fp32, the published MoE loop) and
runs in a helper process with glibc's default allocator, as the published code runs; ours is
``demoe.inference`` in this process, prepared as the evaluator prepares it. The two never run at
the same time: every round runs each configuration once in the helper, then once here, so a
neighbour's load hits both alike, and the figures are medians over rounds after warm-up rounds.
Weights are random (seeded): speed does not depend on them, and both paths use the same ones.
A finetuning step of the embedded default's architecture is timed too, in each ``train.memory_format``.
"""

import json
import multiprocessing
import os
import platform
import resource
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from demoe.errors import DemoeError
from demoe.fileio import atomic_write_text
from demoe.net import ARCHITECTURES, DeMoE, DenseNAFNet, reference
from demoe.runner import inference

LARGE_IMAGE = (2160, 3840)


class PerfError(DemoeError):
    pass


@dataclass
class PerfConfig:
    model: str = "DeMoE"
    sizes: list[int] = field(default_factory=lambda: [256, 512])
    batches: list[int] = field(default_factory=lambda: [1, 4])
    ks: list[int] = field(default_factory=lambda: [1, 3])
    precisions: list[str] = field(default_factory=lambda: ["fp32", "bf16"])
    compile: str = "off"
    threads: int = 2
    repeats: int = 5
    warmup: int = 1
    large_image: tuple[int, int] | None = LARGE_IMAGE
    tile: int = 512
    tile_overlap: int = 32
    pipeline_images: int | None = 40  # aio-synth test pairs the evaluator runs on; None: all, 0: skip
    train_step: tuple[int, int] | None = (8, 96)  # (batch, crop side) of the training-step timing; None: skip
    seed: int = 0


def quick_config(**overrides) -> PerfConfig:
    """A smoke-test configuration: the tiny model at small sizes, two repeats, a small 'large' image."""
    base = PerfConfig(
        model="DeMoE-tiny",
        sizes=[32, 64],
        batches=[1, 2],
        ks=[1, 2],
        repeats=2,
        large_image=(96, 160),
        tile=64,
        tile_overlap=16,
        pipeline_images=3,
        train_step=(2, 32),
    )
    return PerfConfig(**{**asdict(base), **overrides})


def seeded_network(arch: str, kwargs: dict, seed: int) -> torch.nn.Module:
    """The network with seeded random weights, including non-zero residual scales (beta, gamma)."""
    torch.manual_seed(seed)
    model = ARCHITECTURES[arch](**kwargs)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("beta", "gamma")):
                p.normal_(0.0, 0.1)
    return model.eval()


def dense_of_path(model: DeMoE, expert: int) -> DenseNAFNet:
    """A dense network with ``model``'s weights whose post-blocks are the experts ``expert`` of each MoE
    block: what ``model`` computes at k=1 when the router picks ``expert``, without the MoE machinery."""
    dense = DenseNAFNet(
        img_channel=model.intro.in_channels,
        width=model.intro.out_channels,
        middle_blk_num=len(model.middle_blks.modules_list),
        enc_blk_nums=[len(e.modules_list) for e in model.encoders],
        dec_blk_nums=[len(d.modules_list) for d in model.decoders],
    )
    state = {k: v for k, v in model.state_dict().items() if not k.startswith(("experts.", "mlp_branch."))}
    for i, block in enumerate(model.experts):
        for k, v in block.experts[expert].state_dict().items():
            state[f"post_blocks.{i}.{k}"] = v
    dense.load_state_dict(state)
    return dense.eval()


def peak_rss_bytes() -> int:
    """This process's peak resident memory. Linux's ``VmHWM`` counts from the process's own start,
    whereas ``ru_maxrss`` of a freshly spawned process includes its parent's memory at the fork."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _reference_worker(conn, arch: str, kwargs: dict, state: dict, threads: int) -> None:
    """The helper process: runs ``reference.forward`` on request and answers (seconds, output)."""
    torch.set_num_threads(threads)
    model = ARCHITECTURES[arch](**kwargs)
    model.load_state_dict(state)
    model.eval()
    while (request := conn.recv()) is not None:
        x, k, want_output = request
        model.set_k(k)
        with torch.inference_mode():
            start = time.perf_counter()
            out = reference.forward(model, x)["output"]
            seconds = time.perf_counter() - start
        conn.send((seconds, out if want_output else None))


def _large_image_worker(conn, arch: str, kwargs: dict, state: dict, threads: int, job: dict) -> None:
    """Restore one large random image in tiles in a fresh process; answers seconds and peak RSS."""
    torch.set_num_threads(threads)
    model = ARCHITECTURES[arch](**kwargs)
    model.load_state_dict(state)
    del state
    inference.prepare(model)
    torch.manual_seed(job["seed"])
    image = torch.rand(1, 3, *job["size"])
    start = time.perf_counter()
    inference.restore(model, image, tile=job["tile"], overlap=job["overlap"], attention=job["attention"])
    seconds = time.perf_counter() - start
    conn.send({"seconds": seconds, "peak_rss_bytes": peak_rss_bytes()})


def _in_helper(target, *args):
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    process = ctx.Process(target=target, args=(child, *args), daemon=True)
    process.start()
    child.close()
    return process, parent


def _timed_forward(
    model, x: torch.Tensor, task="auto", precision: str = "fp32"
) -> tuple[float, torch.Tensor]:
    start = time.perf_counter()
    out = inference.forward(model, x, task, precision)["output"]
    return time.perf_counter() - start, out


def _rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max() / b.abs().max().clamp(min=1.0))


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


def _measure_forwards(
    cfg: PerfConfig, ours: DeMoE, compiled: DeMoE | None, conn, progress
) -> tuple[dict, dict, dict]:
    """Interleaved rounds over every (size, batch, k); returns the seconds of each (size, batch, k,
    variant) over the timed rounds, the relative output differences to the reference, and the first
    call's seconds of the compiled model per (size, batch, k) (compilation included)."""
    configs = [(s, b, k) for s in cfg.sizes for b in cfg.batches for k in cfg.ks]
    generator = torch.Generator().manual_seed(cfg.seed)
    inputs = {(s, b): torch.rand(b, 3, s, s, generator=generator) for s in cfg.sizes for b in cfg.batches}
    dense: dict[int, DenseNAFNet] = {}
    experts: dict[tuple[int, int], int] = {}
    times: dict[tuple, list[float]] = {}
    diffs: dict[tuple, float] = {}
    first_calls: dict[tuple, float] = {}
    for round_index in range(cfg.warmup + cfg.repeats):
        first = round_index == 0
        progress(f"round {round_index + 1}/{cfg.warmup + cfg.repeats}")
        for s, b, k in configs:
            x = inputs[(s, b)]
            conn.send((x, k, first))
            results = {"reference": conn.recv()}
            ours.set_k(k)
            for precision in cfg.precisions:
                results[precision] = _timed_forward(ours, x, precision=precision)
            if compiled is not None:
                compiled.set_k(k)
                results["compiled"] = _timed_forward(compiled, x)
                if first:
                    first_calls[(s, b, k)] = results["compiled"][0]
            if k == 1:
                if (s, b) not in experts:
                    experts[(s, b)] = int(inference.forward(ours, x[:1])["pred_labels"].argmax(dim=1))
                expert = experts[(s, b)]
                if expert not in dense:
                    dense[expert] = inference.prepare(dense_of_path(ours, expert))
                results["moe_forced"] = _timed_forward(ours, x, torch.full((b,), expert))
                results["dense"] = _timed_forward(dense[expert], x)
            for name, (seconds, out) in results.items():
                if round_index >= cfg.warmup:
                    times.setdefault((s, b, k, name), []).append(seconds)
                if first and name in [*cfg.precisions, "compiled"]:
                    diffs[(s, b, k, name)] = _rel_diff(out, results["reference"][1])
    return times, diffs, first_calls


def _forward_rows(cfg: PerfConfig, times: dict, diffs: dict, first_calls: dict) -> list[dict]:
    rows = []
    for s, b, k in [(s, b, k) for s in cfg.sizes for b in cfg.batches for k in cfg.ks]:
        med = {
            name: statistics.median(v) for (s2, b2, k2, name), v in times.items() if (s2, b2, k2) == (s, b, k)
        }
        row = {"size": s, "batch": b, "k": k, "reference_ms": 1000 * med["reference"]}
        for variant in [*cfg.precisions, *(["compiled"] if "compiled" in med else [])]:
            row[f"{variant}_ms"] = 1000 * med[variant]
            row[f"{variant}_speedup"] = med["reference"] / med[variant]
            row[f"{variant}_max_rel_diff"] = diffs[(s, b, k, variant)]
        if (s, b, k) in first_calls:
            row["compiled_first_call_s"] = first_calls[(s, b, k)]
        if "dense" in med:
            row["moe_k1_ms"] = 1000 * med["moe_forced"]
            row["dense_ms"] = 1000 * med["dense"]
            row["moe_overhead"] = med["moe_forced"] / med["dense"]
        rows.append(row)
    return rows


def _scaling(cfg: PerfConfig, rows: list[dict]) -> list[dict]:
    """time(largest size) / time(smallest size) per batch and k: linear cost is the pixel ratio."""
    if len(cfg.sizes) < 2:
        return []
    small, large = min(cfg.sizes), max(cfg.sizes)
    scaling = []
    for b in cfg.batches:
        for k in cfg.ks:
            pick = {r["size"]: r for r in rows if r["batch"] == b and r["k"] == k}
            item = {"batch": b, "k": k, "sizes": [small, large], "pixel_ratio": (large / small) ** 2}
            for name in ["reference", *cfg.precisions, *(["compiled"] if "compiled_ms" in rows[0] else [])]:
                item[name] = pick[large][f"{name}_ms"] / pick[small][f"{name}_ms"]
            scaling.append(item)
    return scaling


def _measure_large_image(cfg: PerfConfig, arch: str, kwargs: dict, state: dict, progress) -> dict:
    height, width = cfg.large_image
    align = 2 ** len(kwargs.get("enc_blk_nums", ()))
    padded = (-(-height // align) * align, -(-width // align) * align)
    tiles = len(inference.tile_grid(*padded, cfg.tile, cfg.tile_overlap, align))
    results = {}
    for attention in inference.ATTENTION_MODES:
        progress(f"{width}x{height} image in {tiles} tiles of {cfg.tile} px ({attention} attention)")
        job = {
            "size": [height, width],
            "tile": cfg.tile,
            "overlap": cfg.tile_overlap,
            "attention": attention,
            "seed": cfg.seed,
        }
        worker, conn = _in_helper(_large_image_worker, arch, kwargs, state, cfg.threads, job)
        answer = conn.recv()
        worker.join(timeout=30)
        results[attention] = {**job, "tiles": tiles, **answer}
    return results


def _evaluate_aio_synth(model: str, checkpoint: Path | None, precision: str, cfg: PerfConfig, out: Path):
    from demoe.jobs.evaluate import EvalConfig, evaluate

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


def _measure_pipeline(cfg: PerfConfig, arch: str, kwargs: dict, state: dict, progress) -> dict:
    """The evaluator (``demoe-eval run`` without MLflow) on aio-synth against the pure forwards of the
    same images already in memory, per precision. ``loop_over_forward`` is the wall time of the
    evaluation loop (decoding, every routing mode including identity, metrics, records on disk) over
    the sum of the pure forwards; ``loop_over_own_forward`` divides it by the forward time measured
    inside that loop instead, so a change of the host's speed between the two measurements cancels
    out; ``setup_seconds`` (imports, benchmark check, model and metrics) and
    ``finish_seconds`` (tables and figures) are paid once per run, whatever its size."""
    import tempfile

    from demoe.data.dataset import PairedImageDataset
    from demoe.data.pairs import resolve
    from demoe.registry.checkpoints import save_checkpoint

    model = inference.prepare(seeded_network(arch, kwargs, cfg.seed))
    model.load_state_dict(state)
    pairs = list(resolve("aio-synth", split="test").pairs)[: cfg.pipeline_images]
    images = [PairedImageDataset(pairs)[i][0][None] for i in range(len(pairs))]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        weights = save_checkpoint(Path(tmp) / "weights.pt", state)
        for precision in cfg.precisions:
            progress(f"evaluator on {len(pairs)} aio-synth images against their pure forwards ({precision})")
            _timed_forward(model, images[0], precision=precision)
            pure = sum(_timed_forward(model, x, precision=precision)[0] for x in images)
            start = time.perf_counter()
            evaluated = _evaluate_aio_synth(cfg.model, weights, precision, cfg, Path(tmp) / precision)
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


def _measure_bf16_quality(cfg: PerfConfig, progress) -> dict | None:
    """Mean PSNR of the embedded default model on aio-synth in fp32 and in bf16 (real weights)."""
    import tempfile

    from demoe.registry import zoo

    if "bf16" not in cfg.precisions:
        return None
    progress(f"{zoo.DEFAULT_MODEL} on aio-synth in fp32 and bf16 (PSNR change)")
    psnr = {}
    with tempfile.TemporaryDirectory() as tmp:
        for precision in ("fp32", "bf16"):
            evaluated = _evaluate_aio_synth(zoo.DEFAULT_MODEL, None, precision, cfg, Path(tmp) / precision)
            psnr[precision] = evaluated.results["auto"].metrics["psnr"]
            images = evaluated.results["auto"].images
    return {
        "model": zoo.DEFAULT_MODEL,
        "images": images,
        "psnr_fp32": psnr["fp32"],
        "psnr_bf16": psnr["bf16"],
        "psnr_change_db": psnr["bf16"] - psnr["fp32"],
    }


def _measure_training_step(cfg: PerfConfig, progress) -> dict | None:
    """Forward and backward of one finetuning step of the embedded default's architecture (L1 and the
    router's cross-entropy, each crop through its labelled expert) in each ``train.memory_format``,
    in interleaved rounds."""
    from demoe.net.losses import pixel_loss, router_ce
    from demoe.net.training import MEMORY_FORMATS, set_train_mode
    from demoe.registry import zoo
    from demoe.vocab import TASKS

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


def run(cfg: PerfConfig, progress=print) -> dict:
    """Run the benchmark of ``cfg``; returns the results that ``format_results`` prints and ``write`` saves."""
    from demoe.registry import zoo

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
    helper, conn = _in_helper(_reference_worker, entry.arch, entry.kwargs, state, cfg.threads)
    try:
        times, diffs, first_calls = _measure_forwards(cfg, ours, compiled, conn, progress)
    finally:
        conn.send(None)
        helper.join(timeout=30)
    rows = _forward_rows(cfg, times, diffs, first_calls)
    large = _measure_large_image(cfg, entry.arch, entry.kwargs, state, progress) if cfg.large_image else None
    pipeline = quality = None
    if cfg.pipeline_images != 0:
        pipeline = _measure_pipeline(cfg, entry.arch, entry.kwargs, state, progress)
        quality = _measure_bf16_quality(cfg, progress)
    training = _measure_training_step(cfg, progress)
    return {
        "config": asdict(cfg),
        "model": {
            "name": entry.name,
            "arch": entry.arch,
            "kwargs": entry.kwargs,
            "weights": f"random, seed {cfg.seed}",
        },
        "environment": environment(cfg.threads),
        "reference": "demoe.reference.forward: eager, NCHW contiguous fp32, the published MoE loop; "
        "in a helper process with glibc's default allocator",
        "ours": "demoe.inference.forward after inference.prepare: channels-last, inference mode, "
        "heap keeps freed memory; bf16 = CPU autocast; compiled = torch.compile(dynamic=True) of it, fp32",
        "forward": rows,
        "scaling": _scaling(cfg, rows),
        "large_image": large,
        "pipeline": pipeline,
        "bf16_quality": quality,
        "training_step": training,
    }


def display_tables(results: dict) -> list[tuple[str, list[dict], list[str]]]:
    """The printed tables: (title, rows of strings, columns)."""
    variants = results["config"]["precisions"] + (
        ["compiled"] if "compiled_ms" in results["forward"][0] else []
    )
    forward_rows = []
    for r in results["forward"]:
        row = {
            "size": r["size"],
            "batch": r["batch"],
            "k": r["k"],
            "reference ms": f"{r['reference_ms']:.1f}",
        }
        for v in variants:
            row[f"{v} ms"] = f"{r[f'{v}_ms']:.1f}"
            row[f"{v} x"] = f"{r[f'{v}_speedup']:.2f}"
            row[f"{v} diff"] = f"{r[f'{v}_max_rel_diff']:.1e}"
        if "compiled_first_call_s" in r:
            row["compile s"] = f"{r['compiled_first_call_s']:.1f}"
        if "moe_overhead" in r:
            row["k1 / dense"] = f"{r['moe_overhead']:.3f}"
        forward_rows.append(row)
    forward_columns = ["size", "batch", "k", "reference ms"]
    forward_columns += [f"{v} {c}" for v in variants for c in ("ms", "x", "diff")] + ["k1 / dense"]
    if "compiled" in variants:
        forward_columns.append("compile s")
    threads = results["environment"]["threads"]
    tables = [
        (
            f"Forward, {threads} threads, medians of {results['config']['repeats']} rounds "
            "(x: reference / ours; diff: max |ours - reference| / max |reference|; "
            "k1 / dense: MoE at k=1 against the dense network of the same path)",
            forward_rows,
            forward_columns,
        )
    ]
    if results["scaling"]:
        scaling_rows = [
            {
                "batch": r["batch"],
                "k": r["k"],
                "pixels x": f"{r['pixel_ratio']:.1f}",
                **{f"{name} time x": f"{r[name]:.2f}" for name in ["reference", *variants]},
            }
            for r in results["scaling"]
        ]
        sizes = results["scaling"][0]["sizes"]
        tables.append(
            (
                f"Cost against size: time({sizes[1]}) / time({sizes[0]})",
                scaling_rows,
                ["batch", "k", "pixels x", *(f"{n} time x" for n in ["reference", *variants])],
            )
        )
    if results["large_image"]:
        large_rows = [
            {
                "image": f"{r['size'][1]}x{r['size'][0]}",
                "tile": f"{r['tile']}/{r['overlap']}",
                "attention": attention,
                "tiles": r["tiles"],
                "seconds": f"{r['seconds']:.1f}",
                "peak RSS GB": f"{r['peak_rss_bytes'] / 2**30:.2f}",
            }
            for attention, r in results["large_image"].items()
        ]
        tables.append(
            (
                "Large image in tiles, fp32, in a fresh process",
                large_rows,
                ["image", "tile", "attention", "tiles", "seconds", "peak RSS GB"],
            )
        )
    if results.get("pipeline"):
        pipeline_rows = [
            {
                "precision": precision,
                "images": r["images"],
                "modes": ",".join(r["modes"]),
                "pure forward s": f"{r['pure_forward_seconds']:.2f}",
                "evaluator forward s": f"{r['evaluator_forward_seconds']:.2f}",
                "loop s": f"{r['loop_seconds']:.2f}",
                "loop / forward": f"{r['loop_over_forward']:.2f}",
                "loop / own forward": f"{r['loop_over_own_forward']:.2f}",
                "img/s": f"{r['images_per_second']:.2f}",
                "setup s": f"{r['setup_seconds']:.1f}",
                "finish s": f"{r['finish_seconds']:.1f}",
            }
            for precision, r in results["pipeline"].items()
        ]
        tables.append(
            (
                "Evaluator on aio-synth against the pure forwards of the same images "
                "(loop: decoding, every mode, metrics, records; setup and finish are paid once per run)",
                pipeline_rows,
                list(pipeline_rows[0]),
            )
        )
    quality = results.get("bf16_quality")
    if quality:
        tables.append(
            (
                f"bf16 against fp32: {quality['model']} on aio-synth, auto routing",
                [
                    {
                        "images": quality["images"],
                        "psnr fp32": f"{quality['psnr_fp32']:.4f}",
                        "psnr bf16": f"{quality['psnr_bf16']:.4f}",
                        "change dB": f"{quality['psnr_change_db']:+.4f}",
                    }
                ],
                ["images", "psnr fp32", "psnr bf16", "change dB"],
            )
        )
    training = results.get("training_step")
    if training:
        tables.append(
            (
                f"Training step (forward and backward) of {training['model']}'s architecture, "
                f"{training['batch']} crops of {training['crop']}x{training['crop']}, per train.memory_format",
                [
                    {
                        "contiguous s": f"{training['contiguous_seconds']:.3f}",
                        "channels_last s": f"{training['channels_last_seconds']:.3f}",
                        "x": f"{training['speedup']:.2f}",
                    }
                ],
                ["contiguous s", "channels_last s", "x"],
            )
        )
    return tables


def write(results: dict, out: Path) -> Path:
    return atomic_write_text(Path(out), json.dumps(results, indent=1, sort_keys=True))
