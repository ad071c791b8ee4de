"""The shared vocabulary, defined once: DeMoE's tasks (the blur kinds, in the order of the experts a
forced task selects) and the routing modes of an evaluation. No torch import here."""

TASKS: tuple[str, ...] = ("defocus", "global_motion", "local_motion", "synth_global_motion", "low_light")
TASK_INDEX: dict[str, int] = {name: i for i, name in enumerate(TASKS)}
TASK_SHORT: dict[str, str] = {
    "defocus": "defocus",
    "global_motion": "global",
    "local_motion": "local",
    "synth_global_motion": "synth",
    "low_light": "low-light",
}

IDENTITY = "identity"  # no model: the blurred input scored against the sharp image
AUTO = "auto"  # the router decides
ORACLE = "oracle"  # the benchmark's own task label is forced
MODEL_MODES: tuple[str, ...] = (AUTO, ORACLE, *TASKS)  # what a model can be run in (a task: forced)
MODE_ORDER: tuple[str, ...] = (IDENTITY, *MODEL_MODES)  # the order of rows in every table


def task_index(name: str) -> int:
    try:
        return TASK_INDEX[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; expected one of: {', '.join(TASKS)}") from None


def mode_rank(mode: str) -> tuple[int, str]:
    """Sort key of a routing mode: identity, auto, oracle, the tasks in expert order, then others."""
    return (MODE_ORDER.index(mode), mode) if mode in MODE_ORDER else (len(MODE_ORDER), mode)


def task_order(labels) -> list[str]:
    """Task labels in the experts' order, anything else (``unlabelled``) after them."""
    return sorted(labels, key=lambda t: (TASKS.index(t) if t in TASKS else len(TASKS), t))


ARCHITECTURE_NAMES: tuple[str, ...] = ("DeMoE", "DenseNAFNet")  # demoe.net.ARCHITECTURES, by name
_NAFNET_KWARGS = {
    "img_channel": int,
    "width": int,
    "middle_blk_num": int,
    "enc_blk_nums": list,
    "dec_blk_nums": list,
}
# the constructor keywords of each architecture and their kinds (tests/net checks them against the classes)
ARCHITECTURE_KWARGS: dict[str, dict[str, type]] = {
    "DeMoE": _NAFNET_KWARGS | {"num_exp": int, "k_used": int},
    "DenseNAFNet": _NAFNET_KWARGS,
}
