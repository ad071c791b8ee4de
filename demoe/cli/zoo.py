"""``demoe-eval zoo list / show / fetch / export``."""

from pathlib import Path

import click
import yaml

from demoe.cli import options
from demoe.registry import download
from demoe.registry import zoo as zoo_lib


@click.group(cls=options.DemoeGroup)
def zoo() -> None:
    """The model zoo: list, inspect, download and export models."""


def entry_stats(entry: zoo_lib.ZooEntry) -> dict:
    """Parameters and GFLOPs at 256x256: shipped or cached without torch, else counted once."""
    found = zoo_lib.known_stats(entry)
    if found is not None:
        return found
    from demoe.registry.build import model_stats  # imports torch: only for entries never counted

    return model_stats(entry)


@zoo.command("list", epilog=options.examples("demoe-eval zoo list", "demoe-eval zoo list --zoo-dir my_zoo/"))
@options.zoo_dirs
def zoo_list(zoo_dirs: tuple[Path, ...]) -> None:
    """Table of every model: parameters, GFLOPs at 256x256, k, checkpoint availability."""
    dirs = zoo_lib.zoo_dirs(zoo_dirs)
    entries = zoo_lib.load_zoo(dirs)
    if not entries:
        raise zoo_lib.ZooError(
            f"no zoo entries in {', '.join(str(d) for d in dirs)}; reinstall demoe-eval, or pass --zoo-dir "
            "with a folder of zoo YAML files"
        )
    rows = []
    for entry in entries.values():
        stats = entry_stats(entry)
        found = next((p for p in zoo_lib.checkpoint_candidates(entry) if p.is_file()), None)
        checkpoint = "available" if found else ("missing" if entry.checkpoint else "none (train it)")
        rows.append(
            {
                "name": entry.name,
                "arch": entry.arch,
                "params": f"{stats['params'] / 1e6:.2f}M",
                "GFLOPs@256": f"{stats['gflops']:.2f}",
                "k": entry.k_used if entry.k_used is not None else "-",
                "checkpoint": checkpoint,
            }
        )
    options.print_table(rows, ["name", "arch", "params", "GFLOPs@256", "k", "checkpoint"])


@zoo.command(
    "show", epilog=options.examples("demoe-eval zoo show DeMoE", "demoe-eval zoo show DeMoE-tiny-synth")
)
@click.argument("name")
@options.zoo_dirs
def zoo_show(name: str, zoo_dirs: tuple[Path, ...]) -> None:
    """Everything about one model: architecture, checkpoint, where it is looked for, its licence."""
    entry = zoo_lib.get_entry(name, zoo_lib.load_zoo(zoo_lib.zoo_dirs(zoo_dirs)))
    stats = entry_stats(entry)
    ckpt = entry.checkpoint
    candidates = zoo_lib.checkpoint_candidates(entry)
    doc = {
        "name": entry.name,
        "arch": entry.arch,
        "kwargs": entry.kwargs,
        "description": entry.description,
        "params": stats["params"],
        "gflops_256": round(stats["gflops"], 3),
        "defined_in": str(entry.source),
        "licence": entry.licence
        or (
            "not recorded in the entry; ask whoever made the weights"
            if ckpt
            else "none: the entry has no weights"
        ),
        "checkpoint": None
        if ckpt is None
        else {
            **{k: v for k, v in vars(ckpt).items() if v is not None and v is not False},
            "found_at": next((str(p) for p in candidates if p.is_file()), None),
            "looked_in": [str(p) for p in candidates],
        },
    }
    if entry.paper:
        doc["paper"] = entry.paper
    if entry.info:
        doc["info"] = entry.info
    click.echo(yaml.safe_dump(doc, sort_keys=False, width=120).rstrip())


@zoo.command("fetch", epilog=options.examples("demoe-eval zoo fetch DeMoE"))
@click.argument("name")
@click.option("--force", is_flag=True, help="Download again even if a verified file exists.")
@options.zoo_dirs
def zoo_fetch(name: str, force: bool, zoo_dirs: tuple[Path, ...]) -> None:
    """Download a model's checkpoint into $DEMOE_HOME/checkpoints, verifying its size and sha256."""
    entry = zoo_lib.get_entry(name, zoo_lib.load_zoo(zoo_lib.zoo_dirs(zoo_dirs)))
    path = download.fetch(entry, progress=True, force=force)
    verified = "sha256 verified" if entry.checkpoint.sha256 else "no sha256 in the zoo entry: NOT verified"
    click.echo(f"{entry.name}: {path} ({verified})")


@zoo.command(
    "export",
    epilog=options.examples(
        "demoe-eval zoo export DeMoE-tiny-synth --format published DeMoE-tiny-synth.pt",
        "demoe-eval zoo export DeMoE --checkpoint ema.pth --param-key params_ema DeMoE_ema.pt",
    ),
)
@click.argument("name")
@click.argument("out", type=click.Path(path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["published"]),
    default="published",
    show_default=True,
    help="published: {'params': state_dict} written with torch.save, as the original inference.py and "
    "finetune.py load it (strictly).",
)
@options.checkpoint
@options.param_key
@options.cast_weights
@options.zoo_dirs
def zoo_export(
    name: str,
    out: Path,
    fmt: str,
    checkpoint: Path | None,
    param_key: str | None,
    cast_weights: bool,
    zoo_dirs: tuple[Path, ...],
) -> None:
    """Write a model's weights to OUT in another layout, e.g. for the published DeMoE scripts."""
    from demoe.registry.build import export_weights  # imports torch: only when exporting

    loaded = export_weights(
        name,
        out,
        fmt,
        checkpoint=checkpoint,
        zoo=zoo_lib.load_zoo(zoo_lib.zoo_dirs(zoo_dirs)),
        param_key=param_key,
        cast_weights=cast_weights,
    )
    key = loaded.weights.param_key if loaded.weights else None
    source = f"{loaded.checkpoint}" + (f" [{key}]" if key else "")
    tensors = len(loaded.model.state_dict())
    click.echo(f"{name}: {source} -> {out} ({fmt}: {{'params': state_dict}}, {tensors} tensors)")
