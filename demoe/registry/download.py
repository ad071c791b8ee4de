"""Downloading a zoo entry's checkpoint: size and sha256 verified before the file takes its name."""

import urllib.error
import urllib.request
from pathlib import Path

from demoe.fileio import atomic_write, sha256_file
from demoe.paths import demoe_home
from demoe.progress import bar as progress_bar
from demoe.registry.zoo import ZooEntry, ZooError


def download(url: str, dest: Path, sha256: str | None, size: int | None, progress: bool = True) -> Path:
    """Download ``url`` to ``dest``; verify size and sha256 before the file takes its final name."""

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
            progress_bar(total, dest.name, "B", enabled=progress, unit_scale=True) as bar,
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
