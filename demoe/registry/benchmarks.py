"""The benchmark manifests: ``benchmarks/*.yaml`` (plain data) -> validated ``BenchmarkSpec`` entries.

A manifest names a root folder (relative to the data root, or under ``$DEMOE_HOME`` for generated sets),
its splits with their expected pair counts, and the subsets each split is made of: folders with their own
blurred and sharp subfolders (or a list file of pairs) and their own task label. ``demoe.data.pairs``
finds the files a spec describes.
"""

import dataclasses
import difflib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from demoe.config import read_yaml
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
    "extras",
}
GENERATORS = {"aio-synth": "demoe.data.aio_synth"}


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
    sharp: str = "sharp"
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
    generated: str | None = None
    extras: dict[str, str] = field(default_factory=dict)
    source: Path | None = None

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
    items = (value,) if isinstance(value, str) else tuple(value)
    for item in items:
        if not isinstance(item, str) or item.count("*") != 1 or "/" in item:
            raise _fail(
                source, f"{key} entry {item!r} must be a file name pattern with one '*', like '*.png'"
            )
    return items


def _parse_subset(data: dict, defaults: dict, task: str | None, source: Path) -> Subset:
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
    return Subset(
        name=str(merged.get("name", "")),
        folder=str(merged.get("folder", "")),
        folders=merged.get("folders"),
        blurred=str(merged.get("blurred", "blur")),
        sharp=str(merged.get("sharp", "sharp")),
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


def parse_spec(data: dict, source: Path) -> BenchmarkSpec:
    """A manifest's mapping -> a validated ``BenchmarkSpec``; every mistake names ``source``."""
    if not isinstance(data, dict) or "name" not in data or "root" not in data or "splits" not in data:
        raise _fail(source, "a benchmark manifest needs at least name, root and splits")
    unknown = set(data) - SPEC_KEYS
    if unknown:
        raise _fail(
            source, f"unknown keys {sorted(unknown)}; a manifest knows {', '.join(sorted(SPEC_KEYS))}"
        )
    name, task = str(data["name"]), data.get("task")
    if task is not None and task not in TASKS:
        raise _fail(source, f"task {task!r} is not one of {', '.join(TASKS)} (or null for no label)")
    layout = dict(data.get("layout") or {})
    default_subsets = layout.pop("subsets", None) or [{}]
    if set(layout) - SUBSET_KEYS:
        raise _fail(source, f"unknown layout keys {sorted(set(layout) - SUBSET_KEYS)}")
    if not isinstance(data["splits"], dict) or not data["splits"]:
        raise _fail(source, "splits must map split names to {pairs: N} (and optionally subsets)")
    splits = {}
    for split_name, split_data in data["splits"].items():
        split_data = split_data or {}
        if not isinstance(split_data, dict) or set(split_data) - {"pairs", "subsets"}:
            raise _fail(source, f"split {split_name!r} takes only pairs and subsets")
        subsets = tuple(
            _parse_subset(s, layout, task, source) for s in split_data.get("subsets") or default_subsets
        )
        names = [s.name for s in subsets if not s.folders]
        if len(subsets) > 1 and (len(set(names)) != len(names) or "" in names):
            raise _fail(source, f"split {split_name!r}: each of several subsets needs its own name")
        expected = split_data.get("pairs")
        if expected is not None and (not isinstance(expected, int) or expected < 0):
            raise _fail(source, f"split {split_name!r}: pairs must be a count or null (found {expected!r})")
        splits[str(split_name)] = SplitSpec(expected, subsets)
    test_split = str(data.get("test_split") or ("test" if "test" in splits else next(iter(splits))))
    if test_split not in splits:
        raise _fail(source, f"test_split {test_split!r} is not one of the splits {', '.join(splits)}")
    generated = data.get("generated")
    if generated is not None and generated not in GENERATORS:
        raise _fail(source, f"generated {generated!r} is unknown; known generators: {', '.join(GENERATORS)}")
    return BenchmarkSpec(
        name=name,
        root=str(data["root"]),
        splits=splits,
        test_split=test_split,
        description=" ".join(str(data.get("description") or "").split()),
        url=data.get("url"),
        licence=data.get("licence"),
        task=task,
        protocol=_parse_protocol(data.get("protocol"), source),
        protocol_note=" ".join(str(data["protocol_note"]).split()) if data.get("protocol_note") else None,
        generated=generated,
        extras={str(k): str(v) for k, v in (data.get("extras") or {}).items()},
        source=source,
    )


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
