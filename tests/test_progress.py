"""Progress on a terminal and in a log: a bar where it redraws, whole lines where it cannot."""

import io

from tqdm import tqdm

from demoe import progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_gets_a_line_every_few_seconds_and_one_at_the_end(monkeypatch):
    clock = iter([0.0, 1.0, 6.0, 7.0, 13.0, 14.0])
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    log = io.StringIO()
    with progress.bar(4, "DeMoE@aio-synth", "img", file=log) as bar:
        for _ in range(4):
            bar.update()
        bar.set_postfix(psnr="27.10")
    assert log.getvalue().splitlines() == [
        "DeMoE@aio-synth: 2/4 img (50%) in 6 s, about 6 s left",
        "DeMoE@aio-synth: 4/4 img (100%) in 14 s, psnr=27.10",
    ]


def test_bytes_are_counted_in_megabytes():
    log = io.StringIO()
    with progress.bar(80_000_000, "DeMoE.pth", "B", file=log) as bar:
        bar.update(80_000_000)
    assert log.getvalue().startswith("DeMoE.pth: 80.0/80.0 MB (100%)")


def test_a_terminal_gets_a_tqdm_bar_and_a_disabled_one_prints_nothing():
    assert isinstance(progress.bar(3, "x", "img", file=Terminal()), tqdm)
    quiet = io.StringIO()
    with progress.bar(3, "x", "img", enabled=False, file=quiet) as bar:
        bar.update(3)
    assert quiet.getvalue() == ""
