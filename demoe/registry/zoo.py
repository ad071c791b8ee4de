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

from demoe.config import read_yaml
from demoe.errors import DemoeError
from demoe.paths import demoe_home, shipped_dir
from demoe.vocab import ARCHITECTURE_NAMES

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
    known = ("name", "arch", "kwargs", "description", "checkpoint", "licence", "paper", "info", "stats")
    unknown = set(data) - set(known)
    if unknown or "name" not in data or "arch" not in data:
        raise ZooError(
            f"{source}: a zoo entry needs name and arch, and only knows {', '.join(known)} "
            f"(found {sorted(data)})"
        )
    if data["arch"] not in ARCHITECTURE_NAMES:
        raise ZooError(
            f"{source}: entry {data['name']!r} names unknown arch {data['arch']!r}; "
            f"known: {', '.join(ARCHITECTURE_NAMES)}"
        )
    ckpt = data.get("checkpoint")
    return ZooEntry(
        name=str(data["name"]),
        arch=data["arch"],
        kwargs=dict(data.get("kwargs") or {}),
        description=str(data.get("description", "")).strip(),
        checkpoint=_checkpoint_from_dict(ckpt, source, str(data["name"])) if ckpt else None,
        licence=str(data["licence"]).strip() if data.get("licence") else None,
        paper=dict(data.get("paper") or {}),
        info=dict(data.get("info") or {}),
        stats=dict(data.get("stats") or {}),
        source=source,
    )


def _checkpoint_from_dict(ckpt, source: Path, name: str) -> CheckpointSource:
    """A zoo directory is shared and downloaded like any file: its checkpoint block may only name a plain
    file under the checkpoints folder, an http(s) URL, and a shipped path inside the entry's folder."""
    where = f"{source}: entry {name!r}, checkpoint"
    if not isinstance(ckpt, dict):
        raise ZooError(f"{where}: expected a mapping of file, url, sha256, size, path")
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
    if problems:
        raise ZooError(f"{where}: " + "; ".join(problems))
    return CheckpointSource(file=file, url=url, sha256=sha256, size=size, path=path)


def load_zoo(dirs: list[Path] | None = None) -> dict[str, ZooEntry]:
    """All entries of the zoo folders; a later folder's entry replaces an earlier one of the same name."""
    entries: dict[str, ZooEntry] = {}
    for folder in dirs if dirs is not None else zoo_dirs():
        for path in sorted(Path(folder).glob("*.yaml")):
            doc = read_yaml(path, ZooError) or {}
            items = doc.get("models", [doc] if "name" in doc else []) if isinstance(doc, dict) else None
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
