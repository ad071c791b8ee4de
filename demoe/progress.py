"""Progress of long jobs: a tqdm bar on a terminal, a plain line every few seconds in a log or pipe."""

import sys
import time
from typing import TextIO

from tqdm import tqdm

LINE_EVERY_S = 5.0


class LineProgress:
    """The part of tqdm's interface the project uses, printing whole lines: a log file or CI console
    shows how far a job is without the carriage-return redraws of a bar."""

    def __init__(self, total: int | None, desc: str, unit: str, file: TextIO, every_s: float = LINE_EVERY_S):
        self.total, self.desc, self.unit, self.file, self.every_s = total, desc, unit, file, every_s
        self.n, self.postfix = 0, ""
        self.started = self.last = time.monotonic()

    def __enter__(self) -> "LineProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.every_s and self.n != self.total:  # the last line is close()'s
            self.last = now
            self._print(now)

    def set_postfix(self, **values) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def close(self) -> None:
        if self.n:
            self._print(time.monotonic())
            self.n = 0

    def _print(self, now: float) -> None:
        elapsed = now - self.started
        count = (lambda n: f"{n / 1e6:.1f}") if self.unit == "B" else str
        unit = "MB" if self.unit == "B" else self.unit
        if self.total:
            done = f"{count(self.n)}/{count(self.total)} {unit} ({100 * self.n / self.total:.0f}%)"
            left = (
                f", about {elapsed * (self.total - self.n) / self.n:.0f} s left"
                if self.n < self.total
                else ""
            )
        else:
            done, left = f"{count(self.n)} {unit}", ""
        extra = f", {self.postfix}" if self.postfix else ""
        print(f"{self.desc}: {done} in {elapsed:.0f} s{left}{extra}", file=self.file, flush=True)


def bar(total: int | None, desc: str, unit: str, enabled: bool = True, file: TextIO | None = None, **tqdm_kw):
    """Progress of ``total`` steps: nothing when not ``enabled``, a tqdm bar when ``file`` (stderr by
    default) is a terminal, else a line every few seconds and one at the end."""
    stream = file or sys.stderr
    if enabled and not stream.isatty():
        return LineProgress(total, desc, unit, stream)
    return tqdm(
        total=total, desc=desc, unit=unit, file=stream, disable=not enabled, dynamic_ncols=True, **tqdm_kw
    )
