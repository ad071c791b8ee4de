"""``demoe-eval bench list / show / check / make``."""

import dataclasses
import time
from pathlib import Path

import click
import yaml

from demoe.cli import options
from demoe.data import pairs
from demoe.registry import benchmarks


@click.group(cls=options.DemoeGroup)
def bench() -> None:
    """Benchmarks: list them, show one, check a benchmark's files before evaluating on it."""


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


@bench.command(
    "list", epilog=options.examples("demoe-eval bench list", "demoe-eval bench list --data-root /data/deblur")
)
@options.data_root
@options.bench_dirs
def bench_list(data_root: Path | None, bench_dirs: tuple[Path, ...]) -> None:
    """Table of every benchmark: task, test pairs expected, pairs found locally, where they are looked for."""
    rows = []
    for spec in benchmarks.load_registry(bench_dirs).values():
        try:
            local = pairs.find_local(spec, data_root)
            found = (
                ("generated on first use" if spec.generated else "no")
                if local is None
                else f"{len(local.pairs)}" + (f" (+{len(local.problems)} unpaired)" if local.problems else "")
            )
        except benchmarks.BenchmarkError:
            local, found = None, f"layout differs (bench check {spec.name})"
        expected = local.expected if local is not None else spec.splits[spec.test_split].pairs
        rows.append(
            {
                "name": spec.name,
                "task": spec.task or ("per subset" if spec.labels else "-"),
                "split": spec.test_split,
                "expected": "?" if expected is None else expected,
                "found": found,
                "root": spec.root_path(data_root),
            }
        )
    options.print_table(rows, ["name", "task", "split", "expected", "found", "root"])


def _published_doc(published: benchmarks.PublishedResults | None) -> dict | None:
    """The published results as `bench show` prints them: one line per method, mean (std)."""
    if published is None:
        return None

    def figures(row: benchmarks.PublishedRow) -> str:
        return ", ".join(
            f"{m} {v:.3f}" + (f" ({row.std[m]:.3f})" if m in row.std else "") for m, v in row.metrics.items()
        )

    rows = {f"{r.method}{' (the input)' if r.input else ''}": figures(r) for r in published.rows}
    return {
        "source": published.source,
        "split": published.split,
        "protocol": published.protocol,
        "rows": rows,
    }


@bench.command(
    "show", epilog=options.examples("demoe-eval bench show DRMI", "demoe-eval bench show path/to/folder")
)
@click.argument("name")
@options.data_root
@options.bench_dirs
def bench_show(name: str, data_root: Path | None, bench_dirs: tuple[Path, ...]) -> None:
    """Everything about one benchmark: source, licence, layout, splits, metric protocol."""
    specs = benchmarks.load_registry(bench_dirs)
    try:
        spec, subset = benchmarks.find_spec(name, specs)
    except benchmarks.BenchmarkError:
        if not Path(name).expanduser().is_dir():
            raise
        spec, subset = pairs.folder_spec(Path(name).expanduser())[0], None
    defaults = benchmarks.Subset()

    def subset_doc(s: benchmarks.Subset) -> dict:
        return {
            k: list(v) if isinstance(v, tuple) else v
            for k, v in dataclasses.asdict(s).items()
            if k in ("blurred", "sharp") or v != getattr(defaults, k)
        }

    local = pairs.find_local(spec, data_root) if not spec.generated else None
    doc = {
        "name": spec.name,
        **({"subset": subset} if subset else {}),
        "description": spec.description,
        "url": spec.url,
        "licence": spec.licence,
        "origin": {k: v for k, v in spec.origin.items() if k in ("paper", "code")} or None,
        "get_the_data": spec.how_to_get() if spec.origin or spec.url else None,
        "task": spec.task,
        **({"labels": spec.labels} if spec.task is None and spec.labels else {}),
        "root": spec.root,
        "looked_for_at": str(spec.root_path(data_root)),
        "found_locally": f"{len(local.pairs)} pairs in {spec.test_split}" if local else "no",
        "generated": spec.generated,
        "splits": {
            split: {"pairs": s.pairs, "subsets": [subset_doc(x) for x in s.subsets]}
            for split, s in spec.splits.items()
        },
        "test_split": spec.test_split,
        "extras": spec.extras or None,
        "protocol": spec.protocol,
        "paper_protocol": spec.paper_protocol,
        "protocol_note": spec.protocol_note,
        "published": _published_doc(spec.published),
        "defined_in": str(spec.source) if spec.source else None,
    }
    click.echo(
        yaml.safe_dump({k: v for k, v in doc.items() if v is not None}, sort_keys=False, width=110).rstrip()
    )


@bench.command(
    "check",
    epilog=options.examples("demoe-eval bench check aio-synth", "demoe-eval bench check DPDD --pixels"),
)
@click.argument("name")
@click.option("--split", default=None, help="Split to check (default: the benchmark's test split).")
@click.option("--pixels", is_flag=True, help="Decode every image too (slow), not only the headers.")
@options.data_root
@options.bench_dirs
def bench_check(
    name: str, split: str | None, pixels: bool, data_root: Path | None, bench_dirs: tuple[Path, ...]
) -> None:
    """Count a benchmark's pairs and report missing partners, duplicates, unreadable files and size
    mismatches; print the fingerprint of its file list and sizes. Exits 1 when anything is wrong."""
    bench_ = pairs.resolve(name, split=split, data_root=data_root, bench_dirs=bench_dirs)
    report = pairs.check(bench_, read_pixels=pixels)
    expected = f" (expected {report.expected})" if report.expected is not None else ""
    click.echo(f"{report.bench} ({report.split}) at {report.root}")
    click.echo(f"pairs: {report.pairs}{expected}")
    if report.problems:
        rows = [
            {"pair": p.name, "file": _relative(p.file, report.root), "problem": p.reason}
            for p in report.problems
        ]
        options.print_table(rows, ["pair", "file", "problem"])
    for note in report.notes:
        click.echo(f"note: {_relative(note.file, report.root)} {note.reason}")
    if bench_.spec.protocol_note:
        click.echo(f"protocol note: {bench_.spec.protocol_note}")
    click.echo(f"fingerprint: {report.fingerprint}")
    click.echo(f"checked {'pixels' if pixels else 'headers'} in {report.seconds:.2f} s")
    if not report.ok:
        count = (
            "" if report.expected in (None, report.pairs) else f", {report.pairs} of {report.expected} pairs"
        )
        raise click.ClickException(
            f"{report.bench} ({report.split}): {len(report.problems)} problem(s){count}; "
            "fix the files listed above, or evaluate with --on-bad-pair skip"
        )


@bench.command(
    "make",
    epilog=options.examples(
        "demoe-eval bench make aio-synth",
        "demoe-eval bench make --psf psf.npy --input sharp/ --out my_bench --poisson 0.01",
    ),
)
@click.argument("name", required=False)
@click.option("--psf", "psf_path", type=click.Path(path_type=Path), help="PSF as .npy: HxW, HxWx3 or 3xHxW.")
@click.option("--input", "input_dir", type=click.Path(path_type=Path), help="Folder of sharp images.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), help="New benchmark folder to write.")
@click.option(
    "--poisson",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Shot noise: signal of one photo-electron, in linear light (variance poisson * x).",
)
@click.option(
    "--gaussian",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Read noise: standard deviation in linear light.",
)
@click.option(
    "--seed",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Seed of the noise (of the whole set with aio-synth).",
)
def bench_make(
    name: str | None,
    psf_path: Path | None,
    input_dir: Path | None,
    out_dir: Path | None,
    poisson: float,
    gaussian: float,
    seed: int,
) -> None:
    """Make a paired benchmark: `bench make --psf PSF.npy --input SHARP_DIR --out DIR` blurs your sharp
    images with your PSF (in linear light, plus optional noise) into DIR/blur, DIR/sharp and
    DIR/benchmark.yaml; `bench make aio-synth` (re)generates the built-in set."""
    if name is not None:
        if name != "aio-synth":
            raise click.UsageError(
                f"NAME {name!r}: only aio-synth is generated; for your own pairs use --psf"
            )
        if psf_path or input_dir or out_dir:
            raise click.UsageError("aio-synth takes no --psf, --input or --out; give one or the other")
        from demoe.data import aio_synth  # scipy: a second of start-up the other commands need not pay

        started = time.perf_counter()
        manifest = aio_synth.generate(aio_synth.default_root(), seed=seed, progress=True)
        counts = ", ".join(f"{split} {info['pairs']}" for split, info in manifest["splits"].items())
        click.echo(
            f"aio-synth: {counts} pairs in {aio_synth.default_root()} ({time.perf_counter() - started:.1f} s)"
        )
        return
    missing = [
        opt for opt, value in (("--psf", psf_path), ("--input", input_dir), ("--out", out_dir)) if not value
    ]
    if missing:
        raise click.UsageError(f"missing {', '.join(missing)}; or give NAME aio-synth")
    from demoe.data.psf import make_pairs  # scipy, as above

    out = make_pairs(psf_path, input_dir, out_dir, poisson, gaussian, seed, progress=True)
    pairs = len(list((out / "blur").glob("*.png")))
    noun = "pair" if pairs == 1 else "pairs"
    click.echo(f"{pairs} {noun} in {out} (manifest {out / 'benchmark.yaml'}); evaluate with --bench {out}")
