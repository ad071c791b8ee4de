"""Figures shared by the evaluation artifacts and the reports (matplotlib, Agg backend, PNG and SVG)."""

from pathlib import Path

from demoe.fileio import atomic_write
from demoe.models import TASKS

SHORT = {
    "defocus": "defocus",
    "global_motion": "global",
    "local_motion": "local",
    "synth_global_motion": "synth",
    "low_light": "low-light",
}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path) -> list[Path]:
    """Write ``fig`` atomically as ``path`` (.png) and beside it as .svg; close it."""
    written = []
    for suffix in (".png", ".svg"):
        target = Path(path).with_suffix(suffix)
        atomic_write(
            target, lambda tmp, s=suffix: fig.savefig(tmp, format=s[1:], dpi=150, bbox_inches="tight")
        )
        written.append(target)
    _pyplot().close(fig)
    return written


def expert_usage_figure(usage: dict[str, list[list[int]]], title: str = ""):
    """Per MoE block, the share of images of each task label that used each expert (grouped bars)."""
    import numpy as np

    plt = _pyplot()
    labels = list(usage)
    blocks = len(next(iter(usage.values())))
    fig, axes = plt.subplots(1, blocks, figsize=(3.2 * blocks, 3.0), sharey=True, squeeze=False)
    width = 0.8 / max(1, len(labels))
    x = np.arange(len(TASKS))
    for b, ax in enumerate(axes[0]):
        for j, label in enumerate(labels):
            counts = np.asarray(usage[label][b], dtype=float)
            share = counts / max(1.0, counts.sum())
            ax.bar(x + (j - (len(labels) - 1) / 2) * width, share, width, label=SHORT.get(label, label))
        ax.set_xticks(x, [f"E{i}\n{SHORT[t]}" for i, t in enumerate(TASKS)], fontsize=7)
        ax.set_title("middle block" if b == 0 else f"decoder level {b}", fontsize=9)
        ax.set_ylim(0, 1.05)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("share of images using the expert")
    axes[0][-1].legend(title="image's blur", fontsize=7, title_fontsize=7, loc="upper right")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def confusion_figure(matrix: list[list[int]], labels: list[str], title: str = ""):
    """Router confusion matrix: rows are the images' true task, columns the router's choice."""
    import numpy as np

    plt = _pyplot()
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
