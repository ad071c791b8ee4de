"""The benchmark manifests: ``benchmarks/*.yaml`` (plain data) -> validated ``BenchmarkSpec`` entries.

A manifest names a root folder (relative to the data root, or under ``$DEMOE_HOME`` for generated sets),
its splits with their expected pair counts, and the subsets each split is made of: folders with their own
blurred and sharp subfolders (or a list file of pairs) and their own task label. ``demoe.data.pairs``
finds the files a spec describes.
"""

import dataclasses
import difflib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from demoe.config import ManifestCheck, read_yaml
from demoe.errors import DemoeError
from demoe.paths import data_root as default_data_root
from demoe.paths import demoe_home, shipped_dir
from demoe.vocab import TASKS

IMAGE_PATTERNS: tuple[str, ...] = ("*.png", "*.jpg", "*.jpeg", "*.tif", "*.tiff", "*.bmp", "*.webp")
DEFAULT_PROTOCOL = {"color": "rgb", "crop_border": 0, "quantize_8bit": True}
SPEC_KEYS = {
    "name",
    "description",
    "url",
    "licence",
    "task",
    "root",
    "generated",
    "layout",
    "splits",
    "test_split",
    "protocol",
    "protocol_note",
    "paper_protocol",
    "extras",
    "origin",
    "published",
    "unpaired",
}
# What a manifest's paper_protocol may name: the channels its papers' PSNR and SSIM are computed on,
# and the metrics of demoe-eval that score them so (the same words as results' protocol.metric_color).
PAPER_PROTOCOLS = {
    "rgb": ("psnr", "ssimc"),  # the RGB images: BasicSR's test_y_channel: false, MATLAB's psnr(A, ref)
    "y-ycbcr": ("psnry-ycbcr", "ssim-ycbcr"),  # BT.601 Y: BasicSR's test_y_channel: true, rgb2ycbcr
    "y-yiq": ("psnry", "ssim"),  # pyiqa's own Y-channel metrics
}
GENERATORS = {"aio-synth": "demoe.data.aio_synth"}
# where a benchmark's data comes from: its paper, code and data pages, and how to put it under the data root
ORIGIN_KEYS = ("paper", "code", "data", "unpack")
# the metrics a manifest's published results may give (the report's column names), and the protocol of
# figures whose channels, crop and rounding are not known
PUBLISHED_METRICS = ("psnr", "ssim", "ssimc", "psnry", "psnry-ycbcr", "ssim-ycbcr", "lpips", "lpips-vgg")
UNKNOWN_PROTOCOL = "unknown"


class BenchmarkError(DemoeError):
    """A benchmark manifest, name or data folder that cannot be used; the message says what to do."""


@dataclass(frozen=True)
class Subset:
    """One folder of pairs (or one list file of pairs) with one label. ``folders`` is a glob that stands
    for one subset per matching folder, named after it. Paths may hold ``{split}``."""

    name: str = ""
    folder: str = ""
    folders: str | None = None
    blurred: str = "blur"
    sharp: str | None = "sharp"  # None: no sharp images (an unpaired benchmark, scored without reference)
    files: tuple[str, ...] = IMAGE_PATTERNS
    blurred_files: tuple[str, ...] | None = None
    sharp_files: tuple[str, ...] | None = None
    pair_list: str | None = None
    columns: tuple[str, str] = ("sharp", "blurred")
    label: str | None = None
    extra_sharp: str = "report"
    pairs: int | None = None


SUBSET_KEYS = {f.name for f in dataclasses.fields(Subset)}


@dataclass(frozen=True)
class SplitSpec:
    pairs: int | None
    subsets: tuple[Subset, ...]


@dataclass(frozen=True)
class PublishedRow:
    """One method's published figures on a benchmark: metric -> mean, and the standard deviations given."""

    method: str
    metrics: dict[str, float]
    std: dict[str, float] = field(default_factory=dict)
    input: bool = False  # the blurred input scored against the sharp image: what our identity row measures


@dataclass(frozen=True)
class PublishedResults:
    """Results published on a benchmark, shown beside ours: where from, on which split, under which
    protocol (a PAPER_PROTOCOLS name, or ``unknown``)."""

    source: str
    split: str
    protocol: str
    rows: tuple[PublishedRow, ...]

    @property
    def input_row(self) -> PublishedRow | None:
        return next((r for r in self.rows if r.input), None)


@dataclass
class BenchmarkSpec:
    name: str
    root: str
    splits: dict[str, SplitSpec]
    test_split: str
    description: str = ""
    url: str | None = None
    licence: str | None = None
    task: str | None = None
    protocol: dict = field(default_factory=lambda: dict(DEFAULT_PROTOCOL))
    protocol_note: str | None = None
    paper_protocol: str | None = None  # a PAPER_PROTOCOLS name; None: no paper reports on this set
    generated: str | None = None
    extras: dict[str, str] = field(default_factory=dict)
    source: Path | None = None
    origin: dict[str, str] = field(default_factory=dict)  # ORIGIN_KEYS -> text or address
    published: PublishedResults | None = None

    def how_to_get(self) -> str:
        """Where to get the data and how to put it in place, as one clause of a sentence."""
        data = self.origin.get("data") or self.url
        unpack = self.origin.get("unpack") or "unpack it there"
        return f"download it from {data} and {unpack}" if data else f"download it and {unpack}"

    @property
    def unpaired(self) -> bool:
        """No sharp images (``unpaired: true``, or a layout whose ``sharp`` is null): images scored
        without reference."""
        return any(s.sharp is None for split in self.splits.values() for s in split.subsets)

    @property
    def labels(self) -> list[str]:
        """Every task label the benchmark's pairs can carry."""
        found = {s.label for split in self.splits.values() for s in split.subsets if s.label}
        return sorted(found, key=TASKS.index)

    def root_path(self, data_root: Path | None = None) -> Path:
        text = self.root.replace("${DEMOE_HOME}", "$DEMOE_HOME")
        if text.startswith("$DEMOE_HOME"):
            return demoe_home() / text.removeprefix("$DEMOE_HOME").lstrip("/")
        path = Path(text).expanduser()
        return path if path.is_absolute() else default_data_root(data_root) / path


def _fail(source: Path | str, message: str) -> BenchmarkError:
    return BenchmarkError(f"{source}: {message}")


def _patterns(value, source: Path, key: str) -> tuple[str, ...]:
    if not isinstance(value, str | list | tuple):
        raise _fail(source, f"{key} {value!r} must be a file name pattern like '*.png', or a list of them")
    items = (value,) if isinstance(value, str) else tuple(value)
    for item in items:
        if not isinstance(item, str) or item.count("*") != 1 or "/" in item:
            raise _fail(
                source, f"{key} entry {item!r} must be a file name pattern with one '*', like '*.png'"
            )
    return items


def _parse_subset(
    data: dict, defaults: dict, task: str | None, source: Path, unpaired: bool = False
) -> Subset:
    if not isinstance(data, dict) or set(data) - SUBSET_KEYS:
        raise _fail(source, f"a subset is a mapping of {', '.join(sorted(SUBSET_KEYS))} (found {data!r})")
    merged = {**defaults, **data}
    label = merged.get("label", task)
    if label is not None and label not in TASKS:
        raise _fail(source, f"label {label!r} is not a task; use one of {', '.join(TASKS)} or null")
    if merged.get("extra_sharp", "report") not in ("report", "ignore"):
        raise _fail(source, "extra_sharp must be report or ignore")
    columns = tuple(merged.get("columns", ("sharp", "blurred")))
    if sorted(columns) != ["blurred", "sharp"]:
        raise _fail(source, f"columns must name blurred and sharp once each (found {list(columns)})")
    if merged.get("folders") and merged.get("name"):
        raise _fail(source, "a subset with folders takes its names from the folders; drop its name")
    no_sharp = unpaired or ("sharp" in merged and merged["sharp"] is None)
    if no_sharp and merged.get("pair_list"):
        raise _fail(source, "a subset without sharp images (unpaired) is a folder of images, not a pair_list")
    return Subset(
        name=str(merged.get("name", "")),
        folder=str(merged.get("folder", "")),
        folders=merged.get("folders"),
        blurred=str(merged.get("blurred", "blur")),
        sharp=None if no_sharp else str(merged.get("sharp", "sharp")),
        files=_patterns(merged.get("files", IMAGE_PATTERNS), source, "files"),
        blurred_files=_patterns(merged["blurred_files"], source, "blurred_files")
        if merged.get("blurred_files")
        else None,
        sharp_files=_patterns(merged["sharp_files"], source, "sharp_files")
        if merged.get("sharp_files")
        else None,
        pair_list=merged.get("pair_list"),
        columns=columns,
        label=label,
        extra_sharp=merged.get("extra_sharp", "report"),
        pairs=merged.get("pairs"),
    )


def _parse_protocol(data, source: Path) -> dict:
    if data is not None and not isinstance(data, dict):
        raise _fail(source, f"protocol takes a mapping of color, crop_border, quantize_8bit (found {data!r})")
    protocol = {**DEFAULT_PROTOCOL, **(data or {})}
    if (
        set(protocol) != set(DEFAULT_PROTOCOL)
        or protocol["color"] not in ("rgb", "y")
        or not isinstance(protocol["crop_border"], int)
        or protocol["crop_border"] < 0
        or not isinstance(protocol["quantize_8bit"], bool)
    ):
        raise _fail(
            source,
            f"protocol takes color (rgb or y), crop_border (pixels >= 0), quantize_8bit (bool): {data!r}",
        )
    return protocol


def _parse_origin(data, source: Path) -> dict[str, str]:
    if data is None:
        return {}
    if (
        not isinstance(data, dict)
        or set(data) - set(ORIGIN_KEYS)
        or not all(isinstance(v, str) for v in data.values())
    ):
        raise _fail(source, f"origin is a mapping of {', '.join(ORIGIN_KEYS)} to text (found {data!r})")
    return {k: " ".join(v.split()) for k, v in data.items()}


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _parse_row(row, source: Path) -> PublishedRow:
    if not isinstance(row, dict) or not isinstance(row.get("method"), str) or not row["method"].strip():
        raise _fail(source, f"published.rows: each row is a mapping with a method name (found {row!r})")
    where = f"published row {row['method']!r}"
    metrics = {k: v for k, v in row.items() if k not in ("method", "std", "input")}
    std = row.get("std") or {}
    unknown = sorted(set(metrics) - set(PUBLISHED_METRICS))
    if unknown or not metrics:
        raise _fail(
            source, f"{where}: give metrics among {', '.join(PUBLISHED_METRICS)} (found {unknown or 'none'})"
        )
    if not isinstance(std, dict) or set(std) - set(metrics):
        raise _fail(
            source, f"{where}: std maps some of its metrics to their standard deviations (found {std!r})"
        )
    bad = [k for k, v in [*metrics.items(), *std.items()] if not _number(v)]
    if bad or not isinstance(row.get("input", False), bool):
        raise _fail(source, f"{where}: {', '.join(bad) or 'input'} must be a number (input: true or false)")
    return PublishedRow(
        row["method"].strip(),
        {k: float(v) for k, v in metrics.items()},
        {k: float(v) for k, v in std.items()},
        bool(row.get("input", False)),
    )


def _parse_published(
    data, splits: dict, test_split: str, paper_protocol: str | None, source: Path
) -> PublishedResults | None:
    """The ``published`` block: source, split, protocol (a PAPER_PROTOCOLS name or unknown, by default
    the manifest's paper_protocol) and rows."""
    if data is None:
        return None
    keys = {"source", "split", "protocol", "rows"}
    if not isinstance(data, dict) or set(data) - keys or not isinstance(data.get("source"), str):
        raise _fail(source, f"published is a mapping of {', '.join(sorted(keys))}, source its citation")
    protocol = data.get("protocol", paper_protocol)
    if protocol not in (*PAPER_PROTOCOLS, UNKNOWN_PROTOCOL):
        raise _fail(
            source,
            f"published.protocol {protocol!r}: name the protocol its figures were scored under, one of "
            f"{', '.join(PAPER_PROTOCOLS)}, or {UNKNOWN_PROTOCOL} where it is not known",
        )
    split = str(data.get("split") or test_split)
    if split not in splits:
        raise _fail(source, f"published.split {split!r} is not one of the splits {', '.join(splits)}")
    if not isinstance(data.get("rows"), list) or not data["rows"]:
        raise _fail(source, "published.rows must list the published methods, one row each")
    rows = tuple(_parse_row(r, source) for r in data["rows"])
    methods = [r.method for r in rows]
    if len(set(methods)) != len(methods) or sum(r.input for r in rows) > 1:
        raise _fail(source, "published.rows: each method once, and at most one row marked input: true")
    return PublishedResults(" ".join(data["source"].split()), split, protocol, rows)


def parse_spec(data: dict, source: Path) -> BenchmarkSpec:
    """A manifest's mapping -> a validated ``BenchmarkSpec``; every mistake names ``source``, and the
    mistakes of independent keys are reported together."""
    if not isinstance(data, dict) or "name" not in data or "root" not in data or "splits" not in data:
        raise _fail(source, "a benchmark manifest needs at least name, root and splits")
    check = ManifestCheck(source, BenchmarkError)
    unknown = set(data) - SPEC_KEYS
    if unknown:
        check.add(f"unknown keys {sorted(unknown)}; a manifest knows {', '.join(sorted(SPEC_KEYS))}")
    name, task = str(data["name"]), data.get("task")
    if task is not None and task not in TASKS:
        check.add(f"task {task!r} is not one of {', '.join(TASKS)} (or null for no label)")
        task = None
    layout = data.get("layout") or {}
    if not isinstance(layout, dict):
        check.add(
            f"layout must be a mapping of {', '.join(sorted(SUBSET_KEYS | {'subsets'}))} (found {layout!r})"
        )
        layout = {}
    layout = dict(layout)
    default_subsets = layout.pop("subsets", None) or [{}]
    if set(layout) - SUBSET_KEYS:
        check.add(f"unknown layout keys {sorted(set(layout) - SUBSET_KEYS)}")
    unpaired = data.get("unpaired", False)
    if not isinstance(unpaired, bool):
        check.add(f"unpaired must be true (no sharp images) or false (found {unpaired!r})")
        unpaired = False
    splits = {}
    with check.item():
        splits = _parse_splits(data["splits"], layout, default_subsets, task, source, unpaired)
    test_split = str(data.get("test_split") or ("test" if "test" in splits else next(iter(splits), "test")))
    if splits and test_split not in splits:
        check.add(f"test_split {test_split!r} is not one of the splits {', '.join(splits)}")
    paper_protocol = data.get("paper_protocol")
    if paper_protocol is not None and (
        not isinstance(paper_protocol, str) or paper_protocol not in PAPER_PROTOCOLS
    ):
        check.add(
            f"paper_protocol {paper_protocol!r} is unknown; name the channels the benchmark's papers score "
            f"PSNR and SSIM on: {', '.join(PAPER_PROTOCOLS)} (or null)"
        )
        paper_protocol = None
    generated = data.get("generated")
    if generated is not None and (not isinstance(generated, str) or generated not in GENERATORS):
        check.add(f"generated {generated!r} is unknown; known generators: {', '.join(GENERATORS)}")
    extras = data.get("extras") or {}
    if not isinstance(extras, dict):
        check.add(f"extras must be a mapping of names to files in the benchmark (found {extras!r})")
        extras = {}
    protocol = origin = published = None
    with check.item():
        protocol = _parse_protocol(data.get("protocol"), source)
    with check.item():
        origin = _parse_origin(data.get("origin"), source)
    if splits:
        with check.item():
            published = _parse_published(data.get("published"), splits, test_split, paper_protocol, source)
    check.done()
    return BenchmarkSpec(
        name=name,
        root=str(data["root"]),
        splits=splits,
        test_split=test_split,
        description=" ".join(str(data.get("description") or "").split()),
        url=data.get("url"),
        licence=data.get("licence"),
        task=task,
        protocol=protocol,
        protocol_note=" ".join(str(data["protocol_note"]).split()) if data.get("protocol_note") else None,
        paper_protocol=paper_protocol,
        generated=generated,
        extras={str(k): str(v) for k, v in extras.items()},
        source=source,
        origin=origin,
        published=published,
    )


def _parse_splits(
    data, layout: dict, default_subsets: list, task: str | None, source: Path, unpaired: bool
) -> dict[str, SplitSpec]:
    if not isinstance(data, dict) or not data:
        raise _fail(source, "splits must map split names to {pairs: N} (and optionally subsets)")
    splits = {}
    for split_name, split_data in data.items():
        split_data = split_data or {}
        if not isinstance(split_data, dict) or set(split_data) - {"pairs", "subsets"}:
            raise _fail(source, f"split {split_name!r} takes only pairs and subsets")
        subsets = tuple(
            _parse_subset(s, layout, task, source, unpaired)
            for s in split_data.get("subsets") or default_subsets
        )
        names = [s.name for s in subsets if not s.folders]
        if len(subsets) > 1 and (len(set(names)) != len(names) or "" in names):
            raise _fail(source, f"split {split_name!r}: each of several subsets needs its own name")
        expected = split_data.get("pairs")
        if expected is not None and (
            not isinstance(expected, int) or isinstance(expected, bool) or expected < 0
        ):
            raise _fail(source, f"split {split_name!r}: pairs must be a count or null (found {expected!r})")
        splits[str(split_name)] = SplitSpec(expected, subsets)
    if len({s.sharp is None for split in splits.values() for s in split.subsets}) > 1:
        raise _fail(source, "either every subset has sharp images or none has (unpaired: true)")
    return splits


def load_registry(bench_dirs: Sequence[Path] = ()) -> dict[str, BenchmarkSpec]:
    """The repository's ``benchmarks/*.yaml`` plus those of ``bench_dirs``; a later folder's manifest
    replaces an earlier one of the same name."""
    specs: dict[str, BenchmarkSpec] = {}
    shipped = shipped_dir("benchmarks")
    if not shipped.is_dir():
        raise BenchmarkError(
            f"the shipped benchmarks folder {shipped} is missing: this demoe-eval installation is "
            "incomplete; reinstall it (pip install --force-reinstall demoe-eval)"
        )
    for folder in [shipped, *map(Path, bench_dirs)]:
        if not folder.is_dir():
            raise BenchmarkError(f"--bench-dir {folder}: no such folder of benchmark manifests")
        for path in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]):
            data = read_yaml(path, BenchmarkError)
            spec = parse_spec(data, path)
            specs[spec.name] = spec
    return specs


def _unknown(name: str, registry: dict[str, BenchmarkSpec]) -> BenchmarkError:
    close = difflib.get_close_matches(name, list(registry), n=4, cutoff=0.4)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return BenchmarkError(
        f"unknown benchmark {name!r} and no such folder.{hint} `demoe-eval bench list` shows all "
        f"{len(registry)} benchmarks; a folder holding blur/ and sharp/ works too."
    )


def find_spec(name: str, registry: dict[str, BenchmarkSpec]) -> tuple[BenchmarkSpec, str | None]:
    """(spec, subset name or None) for ``NAME`` or ``NAME/SUBSET``; raises for an unknown name."""
    if name in registry:
        return registry[name], None
    head, _, subset = name.partition("/")
    if head in registry and subset:
        return registry[head], subset
    raise _unknown(name, registry)
