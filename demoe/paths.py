"""Where demoe-eval keeps things: ``DEMOE_HOME`` (checkpoints, generated benchmarks, registered zoo
entries, caches) and ``DEMOE_DATA`` (benchmark roots). The repository's own manifest folders sit
beside the package."""

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def demoe_home() -> Path:
    return Path(os.environ.get("DEMOE_HOME") or Path.home() / ".cache" / "demoe").expanduser()


def data_root(override: Path | str | None = None) -> Path:
    return Path(override or os.environ.get("DEMOE_DATA") or "data").expanduser()


def shipped_dir(name: str) -> Path:
    """A manifest folder of the repository (``zoo``, ``benchmarks``, ``experiments``)."""
    return PROJECT_ROOT / name
