"""The figures of routing statistics, drawn into every results folder and every report: which experts
each kind of image used, and the router's confusion (matplotlib, Agg backend, PNG and SVG). Also the
colours and the writer the report's own figures share."""

from pathlib import Path

from demoe.fileio import atomic_write
from demoe.vocab import TASK_SHORT as SHORT
from demoe.vocab import TASKS, task_order

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf")
MODE_COLORS = {"identity": "#9e9e9e", "auto": "#1f77b4", "oracle": "#ff7f0e"}


def task_color(task: str) -> str:
    return PALETTE[TASKS.index(task)] if task in TASKS else "#7f7f7f"


def mode_color(mode: str) -> str:
    if mode in MODE_COLORS:
        return MODE_COLORS[mode]
    return PALETTE[2 + TASKS.index(mode)] if mode in TASKS else PALETTE[-1]


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["svg.hashsalt"] = "demoe"
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path) -> list[Path]:
    """Write ``fig`` atomically as ``path`` (.png) and beside it as .svg; close it."""
    written = []
    for suffix in (".png", ".svg"):
        target = Path(path).with_suffix(suffix)
        atomic_write(
            target,
            lambda tmp, s=suffix: fig.savefig(
                tmp,
                format=s[1:],
                dpi=150,
                bbox_inches="tight",
                metadata={"Date": None} if s == ".svg" else None,
            ),
        )
        written.append(target)
    pyplot().close(fig)
    return written


def same_in_every_block(usage: dict[str, list[list[int]]]) -> bool:
    """True when every MoE block chose the same experts for every label (one routing decision per
    image, as DeMoE's router makes): one panel then says all."""
    return all(all(block == counts[0] for block in counts) for counts in usage.values())


def expert_usage_figure(
    usage: dict[str, list[list[int]]], title: str = "", images: dict[str, int] | None = None
):
    """Per MoE block, how often each expert was chosen for the images of each task label (grouped bars).

    With ``images`` (images per label) a bar is the share of those images that used the expert (with
    k > 1 an image uses several); without, the share of the block's expert choices.
    """
    import numpy as np

    plt = pyplot()
    labels = task_order(usage)
    once = same_in_every_block(usage)
    blocks = 1 if once else len(next(iter(usage.values())))
    fig, axes = plt.subplots(1, blocks, figsize=(max(4.2, 3.2 * blocks), 3.0), sharey=True, squeeze=False)
    width = 0.8 / max(1, len(labels))
    x = np.arange(len(TASKS))
    for b, ax in enumerate(axes[0]):
        for j, label in enumerate(labels):
            counts = np.asarray(usage[label][b], dtype=float)
            total = images[label] if images and images.get(label) else max(1.0, counts.sum())
            ax.bar(
                x + (j - (len(labels) - 1) / 2) * width,
                counts / total,
                width,
                label=SHORT.get(label, label),
                color=task_color(label),
            )
        ax.set_xticks(x, [f"E{i}\n{SHORT[t]}" for i, t in enumerate(TASKS)], fontsize=7)
        title_b = "middle block" if b == 0 else f"decoder level {b}"
        ax.set_title("every MoE block (the same choice in each)" if once else title_b, fontsize=9)
        ax.set_ylim(0, 1.05)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("share of images using the expert" if images else "share of expert choices")
    handles, names = axes[0][0].get_legend_handles_labels()
    fig.legend(
        handles,
        names,
        title="image's blur",
        fontsize=7,
        title_fontsize=7,
        loc="upper center",
        bbox_to_anchor=(0.5, 0.0),
        ncol=len(labels),
        frameon=False,
    )
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def confusion_figure(matrix: list[list[int]], labels: list[str], title: str = ""):
    """Router confusion matrix: rows are the images' true task, columns the router's choice."""
    import numpy as np

    plt = pyplot()
    m = np.asarray(matrix, dtype=float)
    rows = m.sum(axis=1, keepdims=True)
    share = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    fig, ax = plt.subplots(figsize=(4.6, 4.0))
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    names = [SHORT.get(label, label) for label in labels]
    ax.set_xticks(range(len(labels)), names, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(labels)), names, fontsize=8)
    ax.set_xlabel("router's choice")
    ax.set_ylabel("true blur")
    for i in range(len(labels)):
        for j in range(len(labels)):
            if m[i, j]:
                ax.text(
                    j,
                    i,
                    f"{int(m[i, j])}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if share[i, j] > 0.6 else "black",
                )
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig
