"""What ``demoe-eval perf`` measures: sizes, batches, k, precisions, rounds, and the quick variant."""

from dataclasses import asdict, dataclass, field

from demoe.errors import DemoeError

LARGE_IMAGE = (2160, 3840)


class PerfError(DemoeError):
    pass


@dataclass
class PerfConfig:
    """The default run: every measurement once, in a few minutes on two cores; ``full_config`` sweeps."""

    model: str = "DeMoE"
    sizes: list[int] = field(default_factory=lambda: [256, 512])
    batches: list[int] = field(default_factory=lambda: [1])
    ks: list[int] = field(default_factory=lambda: [1, 3])
    precisions: list[str] = field(default_factory=lambda: ["fp32", "bf16"])
    compile: str = "off"
    threads: int = 2
    repeats: int = 3
    warmup: int = 1
    large_image: tuple[int, int] | None = LARGE_IMAGE
    tile: int = 512
    tile_overlap: int = 32
    pipeline_images: int | None = 10  # aio-synth test pairs the evaluator runs on; None: all, 0: skip
    train_step: tuple[int, int] | None = (8, 96)  # (batch, crop side) of the training-step timing; None: skip
    seed: int = 0


def full_config(**overrides) -> PerfConfig:
    """The full sweep: batches of 1 and 4, five timed rounds, 40 images through the evaluator."""
    base = PerfConfig(batches=[1, 4], repeats=5, pipeline_images=40)
    return PerfConfig(**{**asdict(base), **overrides})


def quick_config(**overrides) -> PerfConfig:
    """A smoke-test configuration: the tiny model at small sizes, two repeats, a small 'large' image."""
    base = PerfConfig(
        model="DeMoE-tiny",
        sizes=[32, 64],
        batches=[1, 2],
        ks=[1, 2],
        repeats=2,
        large_image=(96, 160),
        tile=64,
        tile_overlap=16,
        pipeline_images=3,
        train_step=(2, 32),
    )
    return PerfConfig(**{**asdict(base), **overrides})
