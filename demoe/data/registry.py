"""The benchmark registry: ``benchmarks/*.yaml`` (plain data) -> a benchmark's pairs of files on disk.

A manifest names a root folder (relative to the data root, or under ``$DEMOE_HOME`` for generated sets),
its splits with their expected pair counts, and the subsets each split is made of: folders with their own
blurred and sharp subfolders (or a list file of pairs) and their own task label. Pairing is by file
name, so ``blur/000001.png`` pairs ``sharp/000001.png``; a file pattern such as ``blur_*.png`` pairs by
what its ``*`` matches. A folder given instead of a name, holding ``blur/`` and ``sharp/`` (or another
pair of folders in ``PAIR_FOLDERS``), is a benchmark without a manifest.

``check`` validates a benchmark before any model work: missing partners, duplicates, unreadable or cut
short files and size mismatches, from the image headers; its fingerprint of the file list and sizes is
logged with every result.
"""

import dataclasses
import difflib
import hashlib
import json
import os
import re
import time
import warnings
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from demoe.data.images import IMAGE_PATTERNS, ImageReadError, ImageWarning, probe_image, read_image
from demoe.errors import DemoeError
from demoe.paths import data_root as default_data_root
from demoe.paths import demoe_home, shipped_dir
from demoe.tasks import TASKS

PAIR_FOLDERS: tuple[tuple[str, str], ...] = (
    ("blur", "sharp"),
    ("blurred", "sharp"),
    ("meta", "ground_truth"),
    ("input", "target"),
    ("inputC", "target"),
    ("source", "target"),
)
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
class Pair:
    name: str
    blurred: Path
    sharp: Path
    label: str | None


@dataclass(frozen=True)
class Problem:
    name: str
    file: Path
    reason: str


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


@dataclass
class Benchmark:
    spec: BenchmarkSpec
    split: str
    root: Path
    pairs: list[Pair]
    problems: list[Problem] = field(default_factory=list)

    @property
    def expected(self) -> int | None:
        return self.spec.splits[self.split].pairs


@dataclass
class CheckReport:
    bench: str
    split: str
    root: Path
    pairs: int
    expected: int | None
    problems: list[Problem]
    fingerprint: str
    notes: list[Problem] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems and (self.expected is None or self.pairs == self.expected)


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
            try:
                data = yaml.safe_load(path.read_text(encoding="utf-8"))
            except yaml.YAMLError as e:
                raise _fail(path, f"not valid YAML ({str(e).splitlines()[0]})") from None
            spec = parse_spec(data, path)
            specs[spec.name] = spec
    return specs


def _match_rules(patterns: tuple[str, ...]) -> list[re.Pattern]:
    return [
        re.compile(re.escape(head) + "(.+)" + re.escape(tail), re.IGNORECASE)
        for head, tail in (p.split("*") for p in patterns)
    ]


def _scan(folder: Path, patterns: tuple[str, ...]) -> dict[str, list[Path]]:
    """Files under ``folder`` (recursively, in sorted order) by pairing key: the sub-folder path plus what
    the pattern's ``*`` matched."""
    rules = _match_rules(patterns)
    found: dict[str, list[Path]] = defaultdict(list)
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel = Path(dirpath).relative_to(folder)
        for filename in sorted(f for f in filenames if not f.startswith(".")):
            match = next((m for rule in rules if (m := rule.fullmatch(filename))), None)
            if match:
                found[(rel / match.group(1)).as_posix()].append(Path(dirpath) / filename)
    return found


def _pair_folders(subset: Subset, base: Path, bench: str) -> tuple[list[Pair], list[Problem]]:
    blurred_dir, sharp_dir = base / subset.blurred, base / subset.sharp
    for folder in (blurred_dir, sharp_dir):
        if not folder.is_dir():
            raise BenchmarkError(
                f"{bench}: folder {folder} does not exist; the layout expects {subset.blurred}/ and "
                f"{subset.sharp}/ under {base}"
            )
    blurred = _scan(blurred_dir, subset.blurred_files or subset.files)
    sharp = _scan(sharp_dir, subset.sharp_files or subset.files)
    pairs, problems = [], []
    for key in sorted(blurred.keys() | sharp.keys()):
        name = f"{subset.name}/{key}" if subset.name else key
        b, s = blurred.get(key, []), sharp.get(key, [])
        duplicates = next((files for files in (b, s) if len(files) > 1), None)
        if duplicates:
            files = " and ".join(f.name for f in duplicates)
            problems.append(Problem(name, duplicates[0], f"duplicate name: {files} would both pair as {key}"))
        elif not s:
            problems.append(Problem(name, b[0], f"missing partner: no sharp image {key} in {sharp_dir}"))
        elif not b:
            if subset.extra_sharp == "report":
                problems.append(
                    Problem(name, s[0], f"missing partner: no blurred image {key} in {blurred_dir}")
                )
        else:
            pairs.append(Pair(name, b[0], s[0], subset.label))
    return pairs, problems


def _pair_list(subset: Subset, root: Path, bench: str) -> tuple[list[Pair], list[Problem]]:
    list_file = root / subset.pair_list
    if not list_file.is_file():
        raise BenchmarkError(f"{bench}: list of pairs {list_file} does not exist")
    rows = []
    for number, line in enumerate(list_file.read_text(encoding="utf-8").splitlines(), 1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) != 2:
            raise BenchmarkError(
                f"{list_file}, line {number}: expected two paths ({' '.join(subset.columns)})"
            )
        row = dict(zip(subset.columns, fields, strict=True))
        rows.append((root / row["blurred"], root / row["sharp"]))
    if not rows:
        return [], []
    common = Path(os.path.commonpath([b.parent for b, _ in rows]))
    pairs, problems, seen = [], [], set()
    for blurred, sharp in rows:
        key = blurred.relative_to(common).with_suffix("").as_posix()
        name = f"{subset.name}/{key}" if subset.name else key
        if name in seen:
            problems.append(Problem(name, blurred, f"duplicate name: listed twice in {list_file.name}"))
            continue
        seen.add(name)
        missing = next((p for p in (blurred, sharp) if not p.is_file()), None)
        if missing:
            problems.append(
                Problem(name, missing, f"missing partner: listed in {list_file.name} but not found")
            )
        else:
            pairs.append(Pair(name, blurred, sharp, subset.label))
    return pairs, problems


def expand_subsets(spec: BenchmarkSpec, split: str, root: Path) -> list[Subset]:
    """The split's subsets with ``{split}`` filled in and every ``folders`` glob replaced by its folders."""
    out = []
    for subset in spec.splits[split].subsets:
        subset = dataclasses.replace(
            subset,
            folder=subset.folder.format(split=split),
            folders=subset.folders.format(split=split) if subset.folders else None,
            blurred=subset.blurred.format(split=split),
            sharp=subset.sharp.format(split=split),
            pair_list=subset.pair_list.format(split=split) if subset.pair_list else None,
        )
        if subset.folders is None:
            out.append(subset)
            continue
        for folder in sorted(p for p in root.glob(subset.folders) if p.is_dir()):
            rel = folder.relative_to(root).as_posix()
            out.append(dataclasses.replace(subset, name=folder.name, folder=rel, folders=None))
    names = [s.name for s in out]
    if len(set(names)) != len(names):
        raise BenchmarkError(f"{spec.name}: two subsets of split {split} share a name; rename the folders")
    return out


def pair_subsets(
    subsets: Sequence[Subset], root: Path, bench: str = "benchmark"
) -> tuple[list[Pair], list[Problem]]:
    pairs, problems = [], []
    for subset in subsets:
        found, bad = (
            _pair_list(subset, root, bench)
            if subset.pair_list
            else _pair_folders(subset, root / subset.folder, bench)
        )
        pairs += found
        problems += bad
    return sorted(pairs, key=lambda p: p.name), sorted(problems, key=lambda p: (p.name, str(p.file)))


def _pair_folder_names(folder: Path) -> tuple[str, str] | None:
    return next(((b, s) for b, s in PAIR_FOLDERS if (folder / b).is_dir() and (folder / s).is_dir()), None)


def folder_spec(folder: Path, split: str | None = None) -> tuple[BenchmarkSpec, str]:
    """A spec made on the fly for a folder holding a pair of folders (``blur/`` + ``sharp/``, ...), or
    sub-folders that each hold one (subsets), or such a folder per split. A folder named after a task
    (``defocus``) labels its pairs with it."""
    folder = folder.resolve()
    if split is not None and (folder / split).is_dir():
        base, split_name = folder / split, split
    elif split is None and _pair_folder_names(folder) is None and (folder / "test").is_dir():
        base, split_name = folder / "test", "test"
    elif split is None or split == "all":
        base, split_name = folder, "all"
    else:
        raise BenchmarkError(f"--split {split}: folder {folder} has no {split}/ sub-folder")
    names = _pair_folder_names(base)
    if names is not None:
        label = base.name if base.name in TASKS else None
        subsets: tuple[Subset, ...] = (Subset(blurred=names[0], sharp=names[1], label=label),)
    else:
        subsets = tuple(
            Subset(
                name=sub.name,
                folder=sub.name,
                blurred=n[0],
                sharp=n[1],
                label=sub.name if sub.name in TASKS else None,
            )
            for sub in sorted(p for p in base.iterdir() if p.is_dir())
            if (n := _pair_folder_names(sub)) is not None
        )
    if not subsets:
        pairs_text = ", ".join(f"{b}/+{s}/" for b, s in PAIR_FOLDERS)
        raise BenchmarkError(
            f"--bench {folder}: holds none of the folder pairs {pairs_text} (nor sub-folders that do)"
        )
    spec = BenchmarkSpec(
        name=folder.name,
        root=str(base),
        splits={split_name: SplitSpec(None, subsets)},
        test_split=split_name,
        description=f"Pairs found in the folder {base}.",
        task=subsets[0].label if len(subsets) == 1 else None,
    )
    return spec, split_name


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


def _generate(spec: BenchmarkSpec, root: Path) -> Path:
    import importlib

    try:
        module = importlib.import_module(GENERATORS[spec.generated])
    except ModuleNotFoundError:
        raise BenchmarkError(
            f"{spec.name}: its generator {GENERATORS[spec.generated]} is not installed; "
            f"put the pairs under {root} yourself or install the full demoe-eval"
        ) from None
    return Path(module.ensure_generated(root))


def _recorded_counts(spec: BenchmarkSpec, root: Path, split: str) -> dict[str, int]:
    """The pair counts a generator recorded in its manifest (``extras.manifest``): {"": split, subset: n}."""
    if not spec.generated or "manifest" not in spec.extras:
        return {}
    try:
        record = json.loads((root / spec.extras["manifest"]).read_text(encoding="utf-8"))["splits"][split]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    if not isinstance(record, dict):
        return {}
    counts = {"": record.get("pairs"), **(record.get("pairs_per_task") or {})}
    return {k: v for k, v in counts.items() if isinstance(v, int)}


def _subset_expected(subset: Subset, spec: BenchmarkSpec, root: Path, split: str) -> int | None:
    return subset.pairs if subset.pairs is not None else _recorded_counts(spec, root, split).get(subset.name)


def _with_expected(spec: BenchmarkSpec, root: Path, split: str) -> BenchmarkSpec:
    """``spec`` with a generated split's expected count taken from the generator's record when not set."""
    counts = _recorded_counts(spec, root, split)
    if spec.splits[split].pairs is not None or "" not in counts:
        return spec
    splits = {**spec.splits, split: dataclasses.replace(spec.splits[split], pairs=counts[""])}
    return dataclasses.replace(spec, splits=splits)


def resolve(
    name_or_path: str,
    split: str | None = None,
    data_root: Path | None = None,
    bench_dirs: Sequence[Path] = (),
) -> Benchmark:
    """A benchmark name (``GoPro``), a subset (``aio-synth/defocus``) or a folder -> its pairs on disk.
    ``split`` defaults to the benchmark's test split. Generated benchmarks are made on first use."""
    registry = load_registry(bench_dirs)
    try:
        spec, subset_name = find_spec(name_or_path, registry)
    except BenchmarkError:
        folder = Path(name_or_path).expanduser()
        if not folder.is_dir():
            raise
        spec, split = folder_spec(folder, split)
        subset_name = None
    split = split or spec.test_split
    if split not in spec.splits:
        raise BenchmarkError(f"{spec.name}: no split {split!r}; choose one of: {', '.join(spec.splits)}")
    root = spec.root_path(data_root)
    if spec.generated:
        root = _generate(spec, root)
    if not root.is_dir():
        where = f" from {spec.url}" if spec.url else ""
        raise BenchmarkError(
            f"{spec.name}: no data at {root}; download it{where} and unpack it there, or point "
            f"--data-root (or $DEMOE_DATA) at the folder that holds {Path(spec.root).name}"
        )
    spec = _with_expected(spec, root, split)
    subsets = expand_subsets(spec, split, root)
    if subset_name is not None:
        chosen = [s for s in subsets if s.name == subset_name]
        if not chosen:
            names = ", ".join(s.name for s in subsets if s.name) or "none"
            raise BenchmarkError(f"{spec.name}: no subset {subset_name!r} in split {split}; subsets: {names}")
        subsets = chosen
        spec = dataclasses.replace(
            spec,
            name=f"{spec.name}/{subset_name}",
            task=chosen[0].label,
            splits={split: SplitSpec(_subset_expected(chosen[0], spec, root, split), tuple(chosen))},
            test_split=split,
        )
    pairs, problems = pair_subsets(subsets, root, spec.name)
    return Benchmark(spec=spec, split=split, root=root, pairs=pairs, problems=problems)


def find_local(spec: BenchmarkSpec, data_root: Path | None = None) -> Benchmark | None:
    """The test split's pairs when the data is on disk (nothing is generated or downloaded), else None."""
    root = spec.root_path(data_root)
    if not root.is_dir():
        return None
    spec = _with_expected(spec, root, spec.test_split)
    pairs, problems = pair_subsets(expand_subsets(spec, spec.test_split, root), root, spec.name)
    return Benchmark(spec=spec, split=spec.test_split, root=root, pairs=pairs, problems=problems)


def _fingerprint(bench: Benchmark) -> str:
    """sha256 (first 16 hex digits) of every pair's name, files relative to the root, and byte sizes."""

    def entry(path: Path) -> str:
        try:
            rel = path.relative_to(bench.root).as_posix()
        except ValueError:
            rel = path.as_posix()
        try:
            size = path.stat().st_size
        except OSError:
            size = -1
        return f"{rel}\t{size}"

    digest = hashlib.sha256()
    for pair in bench.pairs:
        digest.update(f"{pair.name}\t{entry(pair.blurred)}\t{entry(pair.sharp)}\n".encode())
    for problem in bench.problems:
        digest.update(f"unpaired\t{problem.name}\t{entry(problem.file)}\n".encode())
    return digest.hexdigest()[:16]


def check(bench: Benchmark, read_pixels: bool = False) -> CheckReport:
    """Validate every pair from the image headers (and the ends of the files); with ``read_pixels``,
    decode every image too. Problems name the pair, the file and the reason."""
    started = time.perf_counter()
    problems, notes = list(bench.problems), []
    for pair in bench.pairs:
        infos = {}
        for path in (pair.blurred, pair.sharp):
            try:
                infos[path] = probe_image(path)
                if read_pixels:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", ImageWarning)
                        read_image(path)
            except ImageReadError as e:
                problems.append(Problem(pair.name, path, f"unreadable: {e.reason}"))
                continue
            if infos[path].has_alpha:
                notes.append(Problem(pair.name, path, "has an alpha channel, dropped when read"))
        if len(infos) == 2:
            b, s = infos[pair.blurred], infos[pair.sharp]
            if (b.width, b.height) != (s.width, s.height):
                problems.append(
                    Problem(
                        pair.name,
                        pair.sharp,
                        f"size mismatch: sharp {s.width}x{s.height}, blurred {b.width}x{b.height}",
                    )
                )
    return CheckReport(
        bench=bench.spec.name,
        split=bench.split,
        root=bench.root,
        pairs=len(bench.pairs),
        expected=bench.expected,
        problems=sorted(problems, key=lambda p: (p.name, str(p.file))),
        fingerprint=_fingerprint(bench),
        notes=notes,
        seconds=time.perf_counter() - started,
    )


def good_pairs(bench: Benchmark, report: CheckReport, on_bad_pair: str = "fail") -> list[Pair]:
    """The pairs to use: all of them when the report has no problems; otherwise fail with the first
    problem (``on_bad_pair="fail"``) or leave the bad ones out (``"skip"``)."""
    if on_bad_pair not in ("fail", "skip"):
        raise BenchmarkError(f"on_bad_pair {on_bad_pair!r}: use fail or skip")
    if report.problems and on_bad_pair == "fail":
        first = report.problems[0]
        raise BenchmarkError(
            f"{bench.spec.name}: {len(report.problems)} bad pair(s), first {first.file}: {first.reason}; "
            "fix the data or skip them (--on-bad-pair skip)"
        )
    bad = {p.name for p in report.problems}
    return [p for p in bench.pairs if p.name not in bad]
