"""The model zoo: ``zoo/*.yaml`` entries -> architecture + checkpoint -> a ready model.

An entry is plain data (timm's pretrained configs, as YAML). Entries come from the repository's
``zoo/`` folder, from ``$DEMOE_HOME/zoo`` (where finetuning registers new models) and from any
extra folders the user names. Checkpoints resolve from an explicit path, then
``$DEMOE_HOME/checkpoints``, then ``./models``, then a path shipped beside the entry.
"""

import difflib
import json
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml

from demoe.checkpoints import load_weights
from demoe.errors import DemoeError
from demoe.fileio import atomic_write, sha256_file
from demoe.models import ARCHITECTURES
from demoe.paths import demoe_home, shipped_dir


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
    if data["arch"] not in ARCHITECTURES:
        raise ZooError(
            f"{source}: entry {data['name']!r} names unknown arch {data['arch']!r}; "
            f"known: {', '.join(ARCHITECTURES)}"
        )
    ckpt = data.get("checkpoint")
    return ZooEntry(
        name=str(data["name"]),
        arch=data["arch"],
        kwargs=dict(data.get("kwargs") or {}),
        description=str(data.get("description", "")).strip(),
        checkpoint=CheckpointSource(**ckpt) if ckpt else None,
        licence=str(data["licence"]).strip() if data.get("licence") else None,
        paper=dict(data.get("paper") or {}),
        info=dict(data.get("info") or {}),
        stats=dict(data.get("stats") or {}),
        source=source,
    )


def load_zoo(dirs: list[Path] | None = None) -> dict[str, ZooEntry]:
    """All entries of the zoo folders; a later folder's entry replaces an earlier one of the same name."""
    entries: dict[str, ZooEntry] = {}
    for folder in dirs if dirs is not None else zoo_dirs():
        for path in sorted(Path(folder).glob("*.yaml")):
            try:
                doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            except yaml.YAMLError as e:
                raise ZooError(f"{path}: not valid YAML ({e})") from None
            items = doc.get("models", [doc] if "name" in doc else [])
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


def build_model(entry: ZooEntry, k: int | None = None) -> torch.nn.Module:
    kwargs = dict(entry.kwargs)
    if k is not None:
        if "k_used" not in kwargs:
            raise ZooError(f"model {entry.name!r} has no experts, so k cannot be set")
        kwargs["k_used"] = k
    return ARCHITECTURES[entry.arch](**kwargs)


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


def create_model(
    name: str,
    checkpoint: Path | str | None = None,
    k: int | None = None,
    pretrained: bool = True,
    zoo: dict[str, ZooEntry] | None = None,
):
    """Build the zoo model ``name`` and load its weights; returns (model in eval mode, entry, checkpoint path)."""
    entry = get_entry(name, zoo)
    model = build_model(entry, k)
    path = None
    if pretrained or checkpoint is not None:
        path = resolve_checkpoint(entry, checkpoint)
        load_weights(model, path)
    return model.eval(), entry, path


def download(url: str, dest: Path, sha256: str | None, size: int | None, progress: bool = True) -> Path:
    """Download ``url`` to ``dest``; verify size and sha256 before the file takes its final name."""
    from tqdm import tqdm

    def write(tmp: Path) -> None:
        try:
            response = urllib.request.urlopen(url, timeout=60)
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise ZooError(
                f"could not download {url} ({reason}). Without internet, download it elsewhere "
                f"and put it at {dest}"
            ) from None
        total = size or int(response.headers.get("Content-Length") or 0) or None
        with (
            response,
            open(tmp, "wb") as f,
            tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, disable=not progress) as bar,
        ):
            while chunk := response.read(1 << 20):
                f.write(chunk)
                bar.update(len(chunk))
        got_size = tmp.stat().st_size
        if size is not None and got_size != size:
            raise ZooError(f"download of {url} has {got_size} bytes, expected {size}; nothing was saved")
        if sha256 is not None:
            got = sha256_file(tmp)
            if got != sha256:
                raise ZooError(f"download of {url} has sha256 {got}, expected {sha256}; nothing was saved")

    return atomic_write(Path(dest), write)


def fetch(entry: ZooEntry, progress: bool = True, force: bool = False) -> Path:
    """Download the entry's checkpoint into ``$DEMOE_HOME/checkpoints``; a verified file is kept."""
    if entry.checkpoint is None or not entry.checkpoint.url:
        raise ZooError(f"model {entry.name!r} has no checkpoint URL to fetch")
    dest = demoe_home() / "checkpoints" / entry.checkpoint.file
    if dest.is_file() and not force and (entry.checkpoint.sha256 in (None, sha256_file(dest))):
        return dest
    return download(entry.checkpoint.url, dest, entry.checkpoint.sha256, entry.checkpoint.size, progress)


def count_flops(model: torch.nn.Module, side: int) -> int:
    """FLOPs of one forward of a ``side``x``side`` image (torch's FlopCounterMode, 2 per MAC).

    On the model's padding grid every layer's count is either per pixel or fixed (the router's MLP),
    so the count is ``a * side**2 + c``: two forwards at 2x and 4x the padding size give ``a`` and
    ``c`` exactly, at a twelfth of the cost of one forward at 256x256 for the published model.
    """
    from torch.utils.flop_counter import FlopCounterMode

    def measured(s: int) -> int:
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            model(torch.rand(1, model.intro.in_channels, s, s))
        return int(counter.get_total_flops())

    align = getattr(model, "padder_size", 1)
    small, large = 2 * align, 4 * align
    if side % align or side <= large:
        return measured(side)
    f_small, f_large = measured(small), measured(large)
    per_pixel, rest = divmod(f_large - f_small, large**2 - small**2)
    if rest:
        return measured(side)
    return f_small + per_pixel * (side**2 - small**2)


def model_stats(entry: ZooEntry, side: int = 256) -> dict:
    """Parameters and GFLOPs of one forward at ``side``x``side`` (``count_flops``): the entry's own
    ``stats`` where it ships them (``tests/test_zoo.py`` recounts those), else counted once and cached
    in ``$DEMOE_HOME/cache``."""
    if side == 256 and {"params", "flops_256"} <= entry.stats.keys():
        return {"params": int(entry.stats["params"]), "gflops": int(entry.stats["flops_256"]) / 1e9}
    key = json.dumps(
        {"arch": entry.arch, "kwargs": entry.kwargs, "side": side, "torch": torch.__version__}, sort_keys=True
    )
    cache_file = demoe_home() / "cache" / "model_stats.json"
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    if key in cache:
        return cache[key]
    model = build_model(entry).eval()
    stats = {"params": sum(p.numel() for p in model.parameters()), "gflops": count_flops(model, side) / 1e9}
    cache[key] = stats
    atomic_write(cache_file, lambda tmp: tmp.write_text(json.dumps(cache, indent=1)))
    return stats


DEFAULT_MODEL = "DeMoE-tiny-synth"
"""The embedded default: a small DeMoE trained on aio-synth whose weights ship in ``zoo/weights/``."""
