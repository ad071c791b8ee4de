"""Results published on a benchmark (its manifest's ``published`` rows), put beside ours in the main table
and marked "as published"; and the one sentence that says when our identity row does not land near the
published row of the blurred input, which the same images scored the same way would."""

from collections.abc import Iterable, Sequence
from pathlib import Path

from demoe.registry.benchmarks import UNKNOWN_PROTOCOL, PublishedResults, PublishedRow, load_registry
from demoe.report.collect import EvalRun
from demoe.report.formats import Table
from demoe.report.protocols import CHANNELS

ROUTING = "as published"
INPUT_GAP_DB = 1.0  # our identity PSNR this far from the published input row: other images or protocol
COST_COLUMNS = ("params_m", "gflops_256", "seconds_per_image")


def published_results(benches: Iterable[str], bench_dirs: Sequence[Path] = ()) -> dict[str, PublishedResults]:
    """The published results of each of ``benches`` whose manifest has them (whole benchmarks only)."""
    registry = load_registry(bench_dirs)
    return {b: registry[b].published for b in sorted(set(benches)) if b in registry and registry[b].published}


def _cell(row: PublishedRow, key: str, bench: str, keys: set[str]):
    if key in COST_COLUMNS:
        return "-"
    prefix = f"{bench}/"
    if not key.startswith(prefix):
        return None
    metric = key.removeprefix(prefix)
    if metric in row.metrics:
        return row.metrics[metric]
    # a paper's plain SSIM fills our SSIM column where the table has no SSIM-Y column
    if metric == "ssimc" and "ssim" in row.metrics and f"{prefix}ssim" not in keys:
        return row.metrics["ssim"]
    return None


def _identity_psnr(evals: list[EvalRun], bench: str, split: str) -> tuple[float, int] | None:
    """The identity PSNR the main table shows for ``bench`` (its first run's), with its image count."""
    runs = [r for r in evals if r.bench == bench and r.split == split and "identity" in r.modes]
    if not runs or runs[0].modes["identity"].metrics.get("psnr") is None:
        return None
    identity = runs[0].modes["identity"]
    return float(identity.metrics["psnr"]), identity.images


def input_gap_note(evals: list[EvalRun], bench: str, results: PublishedResults) -> str | None:
    """One sentence when our identity PSNR is more than ``INPUT_GAP_DB`` from the published input row."""
    row = results.input_row
    ours = _identity_psnr(evals, bench, results.split)
    if row is None or ours is None or "psnr" not in row.metrics:
        return None
    psnr, images = ours
    gap = psnr - row.metrics["psnr"]
    if abs(gap) <= INPUT_GAP_DB:
        return None
    return (
        f"{bench}: the blurred input scores {psnr:.2f} dB PSNR here ({images} images) against "
        f"{row.metrics['psnr']:.2f} dB in the published {row.method} row ({gap:+.2f} dB), so these are not "
        "the paper's test images or not its protocol, and the published rows do not compare directly with ours."
    )


def _rows_note(bench: str, results: PublishedResults, keys: set[str]) -> str:
    if results.protocol == UNKNOWN_PROTOCOL:
        protocol = "a protocol not known here (channels, border crop and rounding unknown)"
    else:
        protocol = f"{results.protocol} ({CHANNELS.get(results.protocol, results.protocol)})"
    spread = "; ".join(
        f"{r.method} " + ", ".join(f"{m.upper()} {v:.3f}" for m, v in r.std.items())
        for r in results.rows
        if r.std
    )
    moved = f"{bench}/ssimc" in keys and f"{bench}/ssim" not in keys
    moved = moved and any("ssim" in r.metrics and "ssimc" not in r.metrics for r in results.rows)
    return (
        f"{bench} rows marked (paper), routing {ROUTING}: the {results.split}-set means published by "
        f"{results.source}, scored under {protocol}"
        + ("; the paper's SSIM is shown in the SSIM column" if moved else "")
        + (f"; standard deviations published: {spread}." if spread else ".")
    )


def add_published_rows(table: Table, evals: list[EvalRun], published: dict[str, PublishedResults]) -> None:
    """Append each benchmark's published rows to the main table (unranked, marked ``as published``), with
    a note saying where they come from and, when our identity row is far from theirs, that sentence."""
    keys = {c.key for c in table.columns}
    for bench, results in sorted(published.items()):
        if not any(r.bench == bench and r.split == results.split for r in evals):
            continue
        for n, row in enumerate(results.rows):
            cells = [_cell(row, column.key, bench, keys) for column in table.columns[2:]]
            table.add([f"{row.method} (paper)", ROUTING, *cells], rule=n == 0)
        table.notes.append(_rows_note(bench, results, keys))
        gap = input_gap_note(evals, bench, results)
        if gap:
            table.notes.append(gap)
