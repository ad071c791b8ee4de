"""A benchmark's pairs of files on disk: the files a ``BenchmarkSpec`` describes, or a folder given
instead of a name, paired and checked.

Pairing is by file name, so ``blur/000001.png`` pairs ``sharp/000001.png``; a file pattern such as
``blur_*.png`` pairs by what its ``*`` matches. A folder given instead of a name, holding ``blur/`` and
``sharp/`` (or another pair of folders in ``PAIR_FOLDERS``), is a benchmark without a manifest.

``check`` validates a benchmark before any model work: missing partners, duplicates, unreadable or cut
short files and size mismatches, from the image headers; its fingerprint of the file list and sizes is
logged with every result.
"""

import dataclasses
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

from demoe.config import read_yaml
from demoe.data.images import ImageReadError, ImageWarning, probe_image, read_image
from demoe.data.unpaired import unpaired_subsets
from demoe.registry.benchmarks import (
    GENERATORS,
    BenchmarkError,
    BenchmarkSpec,
    SplitSpec,
    Subset,
    find_spec,
    load_registry,
    parse_spec,
)
from demoe.vocab import TASKS

PAIR_FOLDERS: tuple[tuple[str, str], ...] = (
    ("blur", "sharp"),
    ("blurred", "sharp"),
    ("meta", "ground_truth"),
    ("input", "target"),
    ("inputC", "target"),
    ("source", "target"),
)


@dataclass(frozen=True)
class Pair:
    name: str
    blurred: Path
    sharp: Path | None  # None: an image of a benchmark without sharp images (unpaired)
    label: str | None


@dataclass(frozen=True)
class Problem:
    name: str
    file: Path
    reason: str


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
        return not self.problems and self.pairs > 0 and (self.expected is None or self.pairs == self.expected)


def _match_rules(patterns: tuple[str, ...]) -> list[re.Pattern]:
    return [
        re.compile(re.escape(head) + "(.+)" + re.escape(tail), re.IGNORECASE)
        for head, tail in (p.split("*") for p in patterns)
    ]


def _utf8(text: str) -> bool:
    """Whether a name from the file system is text (a name in another encoding holds surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _scan(folder: Path, patterns: tuple[str, ...]) -> dict[str, list[Path]]:
    """Files under ``folder`` (recursively, in sorted order) by pairing key: the sub-folder path plus what
    the pattern's ``*`` matched."""
    rules = _match_rules(patterns)
    found: dict[str, list[Path]] = defaultdict(list)
    seen: set[tuple[int, int]] = set()  # folders walked, so that a symlink loop is walked once
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        stat = os.stat(dirpath)
        if (stat.st_dev, stat.st_ino) in seen:
            dirnames[:] = []
            continue
        seen.add((stat.st_dev, stat.st_ino))
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel = Path(dirpath).relative_to(folder)
        for filename in sorted(f for f in filenames if not f.startswith(".")):
            match = next((m for rule in rules if (m := rule.fullmatch(filename))), None)
            if match:
                found[(rel / match.group(1)).as_posix()].append(Path(dirpath) / filename)
    return found


def _pair_folders(subset: Subset, base: Path, bench: str) -> tuple[list[Pair], list[Problem]]:
    blurred_dir, sharp_dir = base / subset.blurred, None if subset.sharp is None else base / subset.sharp
    for folder in (blurred_dir, sharp_dir):
        if folder is not None and not folder.is_dir():
            expects = " and ".join(f"{f}/" for f in (subset.blurred, subset.sharp) if f is not None)
            raise BenchmarkError(
                f"{bench}: folder {folder} does not exist; the layout expects {expects} under {base}"
            )
    blurred = _scan(blurred_dir, subset.blurred_files or subset.files)
    sharp = _scan(sharp_dir, subset.sharp_files or subset.files) if sharp_dir else {}
    pairs, problems = [], []
    for key in sorted(blurred.keys() | sharp.keys()):
        name = f"{subset.name}/{key}" if subset.name else key
        b, s = blurred.get(key, []), sharp.get(key, [])
        duplicates = next((files for files in (b, s) if len(files) > 1), None)
        if not _utf8(key):
            problems.append(Problem(name, (b or s)[0], "file name is not valid UTF-8; rename the file"))
        elif duplicates:
            files = " and ".join(f.name for f in duplicates)
            problems.append(Problem(name, duplicates[0], f"duplicate name: {files} would both pair as {key}"))
        elif not s and sharp_dir is None:
            pairs.append(Pair(name, b[0], None, subset.label))
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
            sharp=subset.sharp.format(split=split) if subset.sharp is not None else None,
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


FOLDER_MANIFEST = "benchmark.yaml"


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
    if not subsets:  # blurred images alone: a benchmark without sharp images
        subsets = unpaired_subsets(base, tuple(dict.fromkeys(b for b, _ in PAIR_FOLDERS)))
    if not subsets:
        pairs_text = ", ".join(f"{b}/+{s}/" for b, s in PAIR_FOLDERS)
        raise BenchmarkError(
            f"--bench {folder}: holds none of the folder pairs {pairs_text} (nor sub-folders that do), "
            "nor any image"
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
        manifest = folder / FOLDER_MANIFEST
        if manifest.is_file():  # a folder that carries its manifest (as `bench make` writes it)
            data = read_yaml(manifest, BenchmarkError)
            root = str(folder.resolve())  # wherever the folder was moved to
            spec = parse_spec({**data, "root": root} if isinstance(data, dict) else data, manifest)
        else:
            spec, split = folder_spec(folder, split)
        subset_name = None
    split = split or spec.test_split
    if split not in spec.splits:
        raise BenchmarkError(f"{spec.name}: no split {split!r}; choose one of: {', '.join(spec.splits)}")
    root = spec.root_path(data_root)
    if spec.generated:
        root = _generate(spec, root)
    if not root.is_dir():
        raise BenchmarkError(
            f"{spec.name}: no data at {root}; {spec.how_to_get()}, or point "
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
        sharp = "" if pair.sharp is None else f"\t{entry(pair.sharp)}"  # pairs hash as they always have
        digest.update(os.fsencode(f"{pair.name}\t{entry(pair.blurred)}{sharp}\n"))
    for problem in bench.problems:  # names in another encoding than UTF-8 hash as their bytes
        digest.update(os.fsencode(f"unpaired\t{problem.name}\t{entry(problem.file)}\n"))
    return digest.hexdigest()[:16]


def check(bench: Benchmark, read_pixels: bool = False) -> CheckReport:
    """Validate every pair from the image headers (and the ends of the files); with ``read_pixels``,
    decode every image too. Problems name the pair, the file and the reason."""
    started = time.perf_counter()
    problems, notes = list(bench.problems), []
    for pair in bench.pairs:
        infos = {}
        for path in filter(None, (pair.blurred, pair.sharp)):
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


def good_pairs(
    bench: Benchmark, report: CheckReport, on_bad_pair: str = "fail", allow_partial: bool = False
) -> list[Pair]:
    """The pairs to use: all of them when the report has no problems; otherwise fail with the first
    problem (``on_bad_pair="fail"``) or leave the bad ones out (``"skip"``). A split with another count
    of pairs than its manifest declares is an error (a score on part of a benchmark is not the
    benchmark's score) unless ``allow_partial`` and fewer were found."""
    if on_bad_pair not in ("fail", "skip"):
        raise BenchmarkError(f"on_bad_pair {on_bad_pair!r}: use fail or skip")
    if report.expected is not None and report.pairs != report.expected:
        found = f"{bench.spec.name} ({bench.split}): found {report.pairs} pairs under {bench.root}"
        if report.pairs > report.expected:
            raise BenchmarkError(
                f"{found}, but its manifest declares {report.expected}; fix the folder or the manifest's pairs"
            )
        if not allow_partial:
            raise BenchmarkError(
                f"{found} of the {report.expected} its manifest declares; complete the data "
                "(`demoe-eval bench check` lists what is there), or score the part with --allow-partial"
            )
    if report.problems and on_bad_pair == "fail":
        first = report.problems[0]
        raise BenchmarkError(
            f"{bench.spec.name}: {len(report.problems)} bad pair(s), first {first.file}: {first.reason}; "
            "fix the data or skip them (--on-bad-pair skip)"
        )
    bad = {p.name for p in report.problems}
    return [p for p in bench.pairs if p.name not in bad]
