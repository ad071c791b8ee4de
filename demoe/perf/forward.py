"""Forward timings: ours against the published forward in interleaved rounds, cost against size, and
a large image in tiles."""

import statistics
import time

import torch

from demoe.net import DeMoE, DenseNAFNet
from demoe.perf.config import PerfConfig
from demoe.perf.networks import dense_of_path
from demoe.perf.processes import in_helper, large_image_worker
from demoe.runner import inference


def timed_forward(model, x: torch.Tensor, task="auto", precision: str = "fp32") -> tuple[float, torch.Tensor]:
    start = time.perf_counter()
    out = inference.forward(model, x, task, precision)["output"]
    return time.perf_counter() - start, out


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max() / b.abs().max().clamp(min=1.0))


def measure_forwards(
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
    rounds = cfg.warmup + cfg.repeats
    variants = ", ".join(["reference", *cfg.precisions, *(["compiled"] if compiled is not None else [])])
    progress(
        f"forward of {len(configs)} shapes (sides {_csv(cfg.sizes)}, batch {_csv(cfg.batches)}, "
        f"k {_csv(cfg.ks)}): {variants}, and the dense network at k=1; {cfg.warmup} warm-up + "
        f"{cfg.repeats} timed rounds"
    )
    started = time.perf_counter()
    for round_index in range(rounds):
        first = round_index == 0
        if round_index:
            spent = time.perf_counter() - started
            left = spent / round_index * (rounds - round_index) if round_index > 1 else None
            eta = f", about {left:.0f} s left" if left is not None else ""
            progress(f"round {round_index + 1}/{rounds} ({spent:.0f} s so far{eta})")
        else:
            progress(f"round 1/{rounds} (warm-up)")
        for s, b, k in configs:
            x = inputs[(s, b)]
            conn.send((x, k, first))
            results = {"reference": conn.recv()}
            ours.set_k(k)
            for precision in cfg.precisions:
                results[precision] = timed_forward(ours, x, precision=precision)
            if compiled is not None:
                compiled.set_k(k)
                results["compiled"] = timed_forward(compiled, x)
                if first:
                    first_calls[(s, b, k)] = results["compiled"][0]
            if k == 1:
                if (s, b) not in experts:
                    experts[(s, b)] = int(inference.forward(ours, x[:1])["pred_labels"].argmax(dim=1))
                expert = experts[(s, b)]
                if expert not in dense:
                    dense[expert] = inference.prepare(dense_of_path(ours, expert))
                results["moe_forced"] = timed_forward(ours, x, torch.full((b,), expert))
                results["dense"] = timed_forward(dense[expert], x)
            for name, (seconds, out) in results.items():
                if round_index >= cfg.warmup:
                    times.setdefault((s, b, k, name), []).append(seconds)
                if first and name in [*cfg.precisions, "compiled"]:
                    diffs[(s, b, k, name)] = rel_diff(out, results["reference"][1])
    return times, diffs, first_calls


def _csv(values: list) -> str:
    return ",".join(str(v) for v in values)


def forward_rows(cfg: PerfConfig, times: dict, diffs: dict, first_calls: dict) -> list[dict]:
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


def scaling(cfg: PerfConfig, rows: list[dict]) -> list[dict]:
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


def measure_large_image(cfg: PerfConfig, arch: str, kwargs: dict, state: dict, progress) -> dict:
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
        worker, conn = in_helper(large_image_worker, arch, kwargs, state, cfg.threads, job)
        answer = conn.recv()
        worker.join(timeout=30)
        results[attention] = {**job, "tiles": tiles, **answer}
    return results
