"""Where demoe-eval keeps things: ``DEMOE_HOME`` (checkpoints, generated benchmarks, registered zoo
entries, caches), ``DEMOE_DATA`` (benchmark roots) and the shipped manifest folders.

The shipped folders (``zoo``, ``benchmarks``, ``experiments``) live at the repository's top level; a
wheel carries them inside the package as ``demoe/_shipped/NAME`` (``pyproject.toml`` maps them), so an
installed package and a checkout find the same files.
"""

import os
from importlib import resources
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ("zoo", "benchmarks", "experiments")


def demoe_home() -> Path:
    return Path(os.environ.get("DEMOE_HOME") or Path.home() / ".cache" / "demoe").expanduser()


def data_root(override: Path | str | None = None) -> Path:
    return Path(override or os.environ.get("DEMOE_DATA") or "data").expanduser()


def shipped_dir(name: str) -> Path:
    """A shipped manifest folder (``zoo``, ``benchmarks``, ``experiments``): the installed package's copy,
    else the checkout's top-level folder. Either may be missing (a broken install); callers say so."""
    if name not in SHIPPED:
        raise ValueError(f"{name!r} is not a shipped folder ({', '.join(SHIPPED)})")
    installed = Path(str(resources.files("demoe") / "_shipped" / name))
    return installed if installed.is_dir() else PROJECT_ROOT / name
