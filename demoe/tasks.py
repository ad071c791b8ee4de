"""DeMoE's tasks: the blur kinds, in the order of the experts a forced task selects (no torch import here)."""

TASKS: tuple[str, ...] = ("defocus", "global_motion", "local_motion", "synth_global_motion", "low_light")
TASK_INDEX: dict[str, int] = {name: i for i, name in enumerate(TASKS)}


def task_index(name: str) -> int:
    try:
        return TASK_INDEX[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; expected one of: {', '.join(TASKS)}") from None
