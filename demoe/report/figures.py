"""The report's own figures: metric distributions, k sweeps, image grids, training curves."""

from pathlib import Path

from demoe.metrics.figures import PALETTE, mode_color, pyplot
from demoe.vocab import TASK_SHORT as SHORT
from demoe.vocab import mode_rank, task_order


def distribution_figure(per_image, metric: str = "psnr", title: str = ""):
    """Box plots of a per-image metric per task label (one box per routing mode), from ``per_image.parquet`` rows."""
    plt = pyplot()
    modes = sorted(per_image["mode"].unique(), key=mode_rank)
    labelled = per_image["label"].notna().any()
    groups = task_order(per_image["label"].dropna().unique()) if labelled else [None]
    fig, ax = plt.subplots(figsize=(min(10.0, 2.5 + 0.45 * len(groups) * len(modes)), 3.2))
    width = 0.8 / len(modes)
    for j, mode in enumerate(modes):
        rows = per_image[per_image["mode"] == mode]
        data = [
            (rows[rows["label"] == g] if g is not None else rows)[metric].dropna().to_numpy() for g in groups
        ]
        positions = [i + (j - (len(modes) - 1) / 2) * width for i in range(len(groups))]
        kept = [(p, d) for p, d in zip(positions, data, strict=True) if len(d)]
        if not kept:
            continue
        parts = ax.boxplot(
            [d for _, d in kept],
            positions=[p for p, _ in kept],
            widths=width * 0.85,
            patch_artist=True,
            showfliers=True,
            flierprops={"markersize": 2.5, "alpha": 0.6},
            medianprops={"color": "black", "linewidth": 1},
        )
        for box in parts["boxes"]:
            box.set_facecolor(mode_color(mode))
            box.set_alpha(0.8)
        ax.plot([], [], "s", color=mode_color(mode), label=mode)
    ax.set_xticks(range(len(groups)), [SHORT.get(g, g) if g else "all images" for g in groups], fontsize=8)
    ax.set_ylabel(f"{metric.upper()} per image" + (" (dB)" if metric == "psnr" else ""))
    ax.grid(axis="y", alpha=0.3)
    ax.legend(title="routing", fontsize=7, title_fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def k_sweep_figure(points: list[dict], metric: str = "psnr", title: str = ""):
    """Quality against active parameters and against seconds per image, one line per (model, benchmark, routing).

    ``points``: dicts with ``series``, ``k``, ``active_params`` (millions), ``seconds`` and ``value``.
    """
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9.0, 3.4), sharey=True)
    series = sorted({p["series"] for p in points})
    for n, name in enumerate(series):
        line = sorted((p for p in points if p["series"] == name), key=lambda p: p["k"])
        for ax, x_key in zip(axes, ("active_params", "seconds"), strict=True):
            xy = [
                (p[x_key], p["value"], p["k"])
                for p in line
                if p[x_key] is not None and p["value"] is not None
            ]
            if not xy:
                continue
            ax.plot(
                [x for x, _, _ in xy],
                [y for _, y, _ in xy],
                "o-",
                color=PALETTE[n % len(PALETTE)],
                label=name,
            )
            for x, y, k in xy:
                ax.annotate(f"k={k}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    axes[0].set_xlabel("active parameters (M)")
    axes[1].set_xlabel("seconds per image")
    axes[0].set_ylabel(metric.upper() + (" (dB)" if metric == "psnr" else ""))
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.margins(x=0.15, y=0.2)  # room for the k labels at the ends of a line
    axes[1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def _crop(image, side: int | None):
    if side is None:
        return image
    h, w = image.shape[:2]
    top, left = max(0, (h - side) // 2), max(0, (w - side) // 2)
    return image[top : top + side, left : left + side]


def image_grid_figure(
    rows: list[tuple[str, list[tuple[str, Path | None]]]], crop: int | None = 160, title: str = ""
):
    """A grid of images: ``rows`` of (row title, [(panel caption, PNG or None)]), the same centre crop in a row.

    A panel without a file says so instead of staying blank.
    """
    import numpy as np
    from PIL import Image

    plt = pyplot()
    cols = max(len(panels) for _, panels in rows)
    images = [
        [None if path is None else np.asarray(Image.open(path).convert("RGB")) for _, path in panels]
        for _, panels in rows
    ]
    aspect = 1.0
    shapes = [_crop(im, crop).shape for row in images for im in row if im is not None]
    if shapes:
        aspect = shapes[0][0] / shapes[0][1]
    side = 2.1 if crop else 3.2
    fig, axes = plt.subplots(
        len(rows), cols, figsize=(side * cols, side * aspect * len(rows) + 0.35 * len(rows)), squeeze=False
    )
    for r, ((row_title, panels), row_images) in enumerate(zip(rows, images, strict=True)):
        for c in range(cols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(panels):
                ax.axis("off")
                continue
            caption, image = panels[c][0], row_images[c]
            if image is None:
                ax.text(0.5, 0.5, "missing", ha="center", va="center", fontsize=9, color="#888888")
                for spine in ax.spines.values():
                    spine.set_color("#cccccc")
            else:
                ax.imshow(_crop(image, crop), interpolation="nearest")
            ax.set_title(caption, fontsize=8)
            if c == 0:
                ax.set_ylabel(row_title, fontsize=8)
    fig.tight_layout()
    if title:
        fig.suptitle(title, fontsize=10, y=1.0, va="bottom")
    return fig


def curves_figure(curves: dict[str, list[tuple[int, float]]], title: str = ""):
    """Training and validation curves by step: one panel per quantity, a line per series.

    ``train/*`` share the loss panel (log scale), ``lr`` has its own, ``val/M`` and ``val/MODE/M`` share
    the panel of metric M, ``val/expert_usage/*`` share one panel; a series logged once is a dashed level.
    """
    plt = pyplot()
    panels: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for key, points in sorted(curves.items()):
        parts = key.split("/")
        if parts[0] == "train":
            panel, series = "training loss", "/".join(parts[1:])
        elif key == "lr":
            panel, series = "learning rate", "lr"
        elif parts[0] == "val" and len(parts) > 2 and parts[1] == "expert_usage":
            panel, series = "validation: share of images per expert (first block)", parts[2]
        elif parts[0] == "val":
            panel, series = f"validation {parts[-1]}", key
        else:
            panel, series = key, key
        panels.setdefault(panel, {})[series] = points
    order = sorted(panels, key=lambda p: (not p.startswith("training"), p != "learning rate", p))
    cols = min(3, len(order))
    rows = -(-len(order) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.0 * cols, 2.9 * rows), squeeze=False)
    for ax, panel in zip(axes.flat, order, strict=False):
        for n, (series, points) in enumerate(sorted(panels[panel].items())):
            color = PALETTE[n % len(PALETTE)]
            steps, values = [s for s, _ in points], [v for _, v in points]
            if len(points) == 1:
                ax.axhline(
                    values[0], color=color, linestyle="--", linewidth=1, label=f"{series} (step {steps[0]})"
                )
            else:
                ax.plot(
                    steps,
                    values,
                    color=color,
                    linewidth=1.2,
                    marker="o" if len(points) < 30 else None,
                    markersize=3,
                    label=series,
                )
        if panel == "training loss" and all(v > 0 for pts in panels[panel].values() for _, v in pts):
            ax.set_yscale("log")
        ax.set_title(panel, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if len(panels[panel]) > 1 or panel.startswith("validation"):
            ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(order) :]:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
