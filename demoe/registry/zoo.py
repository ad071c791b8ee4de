"""The model zoo: ``zoo/*.yaml`` entries -> typed ``ZooEntry`` records, and where their checkpoints are.

An entry is plain data (timm's pretrained configs, as YAML). Entries come from the shipped ``zoo/``
folder, from ``$DEMOE_HOME/zoo`` (where finetuning registers new models) and from any extra folders the
user names. Checkpoints resolve from an explicit path, then ``$DEMOE_HOME/checkpoints``, then
``./models``, then a path shipped beside the entry. No torch here: ``demoe.registry.build`` makes models.
"""

import difflib
import json
import re
from dataclasses import dataclass, field, fields
from importlib.metadata import version
from pathlib import Path

from demoe.config import ManifestCheck, read_yaml
from demoe.errors import DemoeError
from demoe.paths import demoe_home, shipped_dir
from demoe.vocab import ARCHITECTURE_KWARGS, ARCHITECTURE_NAMES

DEFAULT_MODEL = "DeMoE-tiny-synth"
"""The embedded default: a small DeMoE trained on aio-synth whose weights ship with the package."""


class ZooError(DemoeError):
    """A zoo lookup or checkpoint resolution that failed; the message says what to do."""


@dataclass
class CheckpointSource:
    file: str
    url: str | None = None
    sha256: str | None = None
    size: int | None = None
    path: str | None = None  # shipped with the entry, relative to its YAML file
    param_key: str | None = None  # the file's entry holding the weights (params_ema); default: params first
    cast_weights: bool = False  # convert tensors stored in another dtype (float16) to the model's


@dataclass
class ZooEntry:
    name: str
    arch: str
    kwargs: dict
    description: str = ""
    checkpoint: CheckpointSource | None = None
    licence: str | None = None  # of the weights (the code's own licence is the LICENSE file)
    paper: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    # params and flops_256, count_flops' figures, shipped so that zoo list need not count them
    stats: dict = field(default_factory=dict)
    source: Path | None = None

    @property
    def k_used(self) -> int | None:
        return self.kwargs.get("k_used")

    def shipped_checkpoint(self) -> Path | None:
        if self.checkpoint is None or self.checkpoint.path is None or self.source is None:
            return None
        return (self.source.parent / self.checkpoint.path).resolve()


def zoo_dirs(extra: list[Path] | tuple = ()) -> list[Path]:
    shipped = shipped_dir("zoo")
    if not shipped.is_dir():
        raise ZooError(
            f"the shipped zoo folder {shipped} is missing: this demoe-eval installation is incomplete; "
            "reinstall it (pip install --force-reinstall demoe-eval)"
        )
    return [shipped, demoe_home() / "zoo", *map(Path, extra)]


def _entry_from_dict(data: dict, source: Path) -> ZooEntry:
    """A zoo entry's mapping -> a ``ZooEntry``; the mistakes of its keys are reported together."""
    known = ("name", "arch", "kwargs", "description", "checkpoint", "licence", "paper", "info", "stats")
    unknown = set(data) - set(known)
    if unknown or "name" not in data or "arch" not in data:
        raise ZooError(
            f"{source}: a zoo entry needs name and arch, and only knows {', '.join(known)} "
            f"(found {sorted(data)})"
        )
    check = ManifestCheck(source, ZooError)
    where = f"entry {data['name']!r}"
    if data["arch"] not in ARCHITECTURE_NAMES:
        check.add(f"{where} names unknown arch {data['arch']!r}; known: {', '.join(ARCHITECTURE_NAMES)}")
    else:
        for problem in network_kwargs_problems(data["arch"], data.get("kwargs") or {}):
            check.add(f"{where}: {problem}")
    ckpt, checkpoint = data.get("checkpoint"), None
    with check.item():
        checkpoint = _checkpoint_from_dict(ckpt, source, str(data["name"])) if ckpt else None
    for key in ("paper", "info", "stats"):
        if not isinstance(data.get(key) or {}, dict):
            check.add(f"{where}: {key} must be a mapping")
    check.done()
    return ZooEntry(
        name=str(data["name"]),
        arch=data["arch"],
        kwargs=dict(data.get("kwargs") or {}),
        description=str(data.get("description", "")).strip(),
        checkpoint=checkpoint,
        licence=str(data["licence"]).strip() if data.get("licence") else None,
        paper=dict(data.get("paper") or {}),
        info=dict(data.get("info") or {}),
        stats=dict(data.get("stats") or {}),
        source=source,
    )


def network_kwargs_problems(arch: str, kwargs) -> list[str]:
    """What is wrong with an architecture's keywords, checked before anything is built: unknown
    keywords, counts that are not positive integers, block lists of unequal length, ``k_used`` outside
    1..``num_exp``."""
    if not isinstance(kwargs, dict):
        return [f"kwargs must be a mapping of {arch}'s keywords (found {type(kwargs).__name__})"]
    kinds = ARCHITECTURE_KWARGS[arch]
    problems = [
        f"unknown keyword {key!r} of {arch} (known: {', '.join(kinds)})" for key in kwargs if key not in kinds
    ]

    def count(value, least: int) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= least

    for key, value in kwargs.items():
        if kinds.get(key) is int and not count(value, 0 if key == "middle_blk_num" else 1):
            problems.append(f"{key} {value!r} must be a positive integer")
        if kinds.get(key) is list and not (isinstance(value, list) and all(count(v, 0) for v in value)):
            problems.append(f"{key} {value!r} must be a list of block counts, e.g. [1, 1, 1]")
    lists = [kwargs.get(key) for key in ("enc_blk_nums", "dec_blk_nums")]
    if all(isinstance(v, list) for v in lists) and len(lists[0]) != len(lists[1]):
        problems.append("enc_blk_nums and dec_blk_nums must have the same length")
    experts, k_used = kwargs.get("num_exp", 5), kwargs.get("k_used")
    if count(experts, 1) and count(k_used, 1) and k_used > experts:
        problems.append(f"k_used {k_used} must be at most num_exp ({experts})")
    return problems


def _checkpoint_from_dict(ckpt, source: Path, name: str) -> CheckpointSource:
    """A zoo directory is shared and downloaded like any file: its checkpoint block may only name a plain
    file under the checkpoints folder, an http(s) URL, and a shipped path inside the entry's folder."""
    where = f"{source}: entry {name!r}, checkpoint"
    if not isinstance(ckpt, dict):
        raise ZooError(
            f"{where}: expected a mapping of file, url, sha256, size, path, param_key, cast_weights"
        )
    known = {f.name for f in fields(CheckpointSource)}
    problems = [
        f"unknown key {key!r} (known: {', '.join(sorted(known))})" for key in ckpt if key not in known
    ]
    file, url, sha256, size, path = (ckpt.get(key) for key in ("file", "url", "sha256", "size", "path"))
    if not isinstance(file, str) or file in ("", ".", "..") or Path(file).name != file or "\\" in file:
        problems.append(f"file {file!r} must be a plain file name (no folders), e.g. DeMoE.pth")
    if url is not None and not (isinstance(url, str) and url.startswith(("https://", "http://"))):
        problems.append(f"url {url!r} must be an http(s) URL")
    if sha256 is not None and not (isinstance(sha256, str) and re.fullmatch(r"[0-9a-f]{64}", sha256)):
        problems.append("sha256 must be 64 lowercase hex digits")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size <= 0):
        problems.append(f"size {size!r} must be a positive number of bytes")
    if path is not None and (
        not isinstance(path, str) or Path(path).is_absolute() or ".." in Path(path).parts
    ):
        problems.append(f"path {path!r} must be relative to the YAML file's folder, without '..'")
    param_key, cast_weights = ckpt.get("param_key"), ckpt.get("cast_weights", False)
    if param_key is not None and not (isinstance(param_key, str) and param_key.strip()):
        problems.append(
            f"param_key {param_key!r} must name the file's entry holding the weights, e.g. params_ema"
        )
    if not isinstance(cast_weights, bool):
        problems.append(f"cast_weights {cast_weights!r} must be true or false")
    if problems:
        raise ZooError(f"{where}: " + "; ".join(problems))
    return CheckpointSource(
        file=file,
        url=url,
        sha256=sha256,
        size=size,
        path=path,
        param_key=param_key,
        cast_weights=cast_weights,
    )


def load_zoo(dirs: list[Path] | None = None) -> dict[str, ZooEntry]:
    """All entries of the zoo folders; a later folder's entry replaces an earlier one of the same name."""
    entries: dict[str, ZooEntry] = {}
    for folder in dirs if dirs is not None else zoo_dirs():
        for path in sorted(Path(folder).glob("*.yaml")):
            doc = read_yaml(path, ZooError)
            if doc is None or doc == {}:
                continue  # an empty file holds no entry
            items = doc.get("models", [doc]) if isinstance(doc, dict) else None
            if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
                raise ZooError(
                    f"{path}: expected one entry (a mapping with name and arch) or models: [entries]"
                )
            for item in items:
                entry = _entry_from_dict(item, path)
                entries[entry.name] = entry
    return entries


def get_entry(name: str, zoo: dict[str, ZooEntry] | None = None) -> ZooEntry:
    zoo = load_zoo() if zoo is None else zoo
    if name in zoo:
        return zoo[name]
    close = difflib.get_close_matches(name, list(zoo), n=4, cutoff=0.4)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise ZooError(f"unknown model {name!r}.{hint} `demoe-eval zoo list` shows all {len(zoo)} models.")


def checkpoint_candidates(entry: ZooEntry) -> list[Path]:
    if entry.checkpoint is None:
        return []
    places = [demoe_home() / "checkpoints" / entry.checkpoint.file, Path("models") / entry.checkpoint.file]
    shipped = entry.shipped_checkpoint()
    return places + ([shipped] if shipped else [])


def fetch_command(entry: ZooEntry) -> str:
    return f"demoe-eval zoo fetch {entry.name}"


def resolve_checkpoint(entry: ZooEntry, checkpoint: Path | str | None = None) -> Path:
    """The checkpoint file to load for ``entry``, or a ZooError that says where it looked."""
    if checkpoint is not None:
        path = Path(checkpoint)
        if not path.is_file():
            raise ZooError(f"--checkpoint {path}: no such file")
        return path
    if entry.checkpoint is None:
        raise ZooError(
            f"model {entry.name!r} has no published checkpoint; pass --checkpoint PATH "
            "(for example a finetuned one)"
        )
    candidates = checkpoint_candidates(entry)
    for path in candidates:
        if path.is_file():
            return path
    where = ", ".join(str(p) for p in candidates)
    url = f" from {entry.checkpoint.url}" if entry.checkpoint.url else ""
    raise ZooError(
        f"checkpoint {entry.checkpoint.file} of {entry.name} not found (looked in {where}); "
        f"run `{fetch_command(entry)}` to download it{url}, or pass --checkpoint PATH"
    )


def weights_options(
    entry: ZooEntry, own_checkpoint: bool, param_key: str | None = None, cast_weights: bool = False
) -> tuple[str | None, bool]:
    """(param key, cast) to load a checkpoint of ``entry`` with: the command line's win; the entry's
    ``checkpoint.param_key`` and ``checkpoint.cast_weights`` describe its own file, so they apply only
    when that file is loaded (``own_checkpoint``), not a ``--checkpoint PATH``."""
    own = entry.checkpoint if own_checkpoint and entry.checkpoint is not None else None
    key = param_key if param_key is not None else (own.param_key if own else None)
    return key, bool(cast_weights or (own is not None and own.cast_weights))


def stats_cache_key(entry: ZooEntry, side: int) -> str:
    return json.dumps(
        {"arch": entry.arch, "kwargs": entry.kwargs, "side": side, "torch": version("torch")}, sort_keys=True
    )


def stats_cache_file() -> Path:
    return demoe_home() / "cache" / "model_stats.json"


def known_stats(entry: ZooEntry, side: int = 256) -> dict | None:
    """Parameters and GFLOPs at ``side``x``side`` without building the model: the entry's shipped
    ``stats``, else an earlier count cached in ``$DEMOE_HOME/cache``; None when neither has them."""
    if side == 256 and {"params", "flops_256"} <= entry.stats.keys():
        return {"params": int(entry.stats["params"]), "gflops": int(entry.stats["flops_256"]) / 1e9}
    try:
        cache = json.loads(stats_cache_file().read_text())
    except (OSError, ValueError):
        return None
    found = cache.get(stats_cache_key(entry, side)) if isinstance(cache, dict) else None
    return found if isinstance(found, dict) else None
