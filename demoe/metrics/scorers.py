"""Image-quality metrics through pyiqa: the scoring protocol, which metrics can run with the weights on
this machine, and the metric set an evaluation scores with. Nothing is downloaded unless
``allow_download`` is set.

Beside pyiqa's own metrics (whose Y channel is YIQ's), ``psnry-ycbcr`` and ``ssim-ycbcr`` score the Y
channel of BT.601 YCbCr, as BasicSR (``test_y_channel: true``) and MATLAB-style evaluation scripts do:
Y = 16 + 65.481 R + 128.553 G + 24.966 B for R, G, B in [0, 1]. That Y spans 219/255 of YIQ's range,
so the same pair scores about 1.32 dB higher in ``psnry-ycbcr`` than in pyiqa's ``psnry``.
"""

import contextlib
import difflib
import functools
import importlib.metadata
import importlib.util
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from demoe.errors import DemoeError
from demoe.metrics.weights import (
    LPIPS_METRICS,
    PYIQA_NR_FILES,
    import_pyiqa,
    linear_layers_problem,
    lpips_files,
    pyiqa_files,
    resolve_torch_home,
    torch_home_env,
)

COLORS = ("rgb", "y")
Y_COLOR_SPACE = "yiq"
EXAMPLE_METRICS = "psnr, ssim, ssimc, lpips, lpips-vgg, psnry-ycbcr, ssim-ycbcr"

# Metrics of the BasicSR/MATLAB convention, named beside pyiqa's: pyiqa's ``psnry`` with its own
# ``color_space='ycbcr'`` option, and an SSIM of BT.601 Y that pyiqa has no option for (YCbCrSSIM).
PYIQA_VARIANTS = {"psnry-ycbcr": ("psnry", {"color_space": "ycbcr"})}
OWN_METRICS = {"ssim-ycbcr": {"metric_opts": {"type": "YCbCrSSIM"}, "metric_mode": "FR"}}

# Full-reference pyiqa metrics that need no weights file.
WEIGHT_FREE = frozenset(
    {"psnr", "psnry", "ssim", "ssimc", "ms_ssim", "cw_ssim", "fsim", "vif", "gmsd", "nlpd", "vsi", "mad"}
    | set(PYIQA_VARIANTS)
    | set(OWN_METRICS)
)
# No-reference metrics: what a benchmark without sharp images is scored with unless --metrics says
# otherwise (each where it can run here), and those that need no weights file.
NO_REFERENCE_DEFAULTS = ("niqe", "brisque", "piqe")
NR_WEIGHT_FREE = frozenset({"piqe", "entropy"})
NEEDS_SHARP = "a full-reference metric needs sharp images, and this benchmark has none"
# pyiqa network types whose constructor takes the protocol's options itself.
TAKES_TEST_Y_CHANNEL = frozenset({"PSNR", "SSIM", "MS_SSIM", "CW_SSIM", "GMSD", "MAD"})
TAKES_CROP_BORDER = frozenset({"PSNR", "SSIM"})
# pyiqa network types that score YIQ's Y whatever their options; NLPD's test_y_channel is in its config.
Y_BY_DEFINITION = frozenset({"VIF"})


class MetricError(DemoeError):
    """A metric name or protocol option that cannot be used; the message says which and what to do."""


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


def _configs() -> dict:
    """pyiqa's metrics and ours: a variant is its pyiqa metric's configuration with the variant's options."""
    configs = dict(_pyiqa_configs())
    for name, (base, options) in PYIQA_VARIANTS.items():
        configs[name] = {**configs[base], "metric_opts": {**configs[base]["metric_opts"], **options}}
    return configs | OWN_METRICS


def _config(name: str) -> dict:
    configs = _configs()
    if name not in configs:
        close = difflib.get_close_matches(name, list(configs), n=3)
        hint = f"did you mean {', '.join(close)}?" if close else f"use one such as {EXAMPLE_METRICS}"
        raise MetricError(f"unknown metric {name!r}: {hint} (pyiqa.list_models() lists them all)")
    return configs[name]


def is_full_reference(name: str) -> bool:
    """Whether ``name`` scores an image against its sharp one (pyiqa's FR) rather than alone (NR)."""
    return _config(name).get("metric_mode") == "FR"


def _full_reference(name: str) -> None:
    if not is_full_reference(name):
        raise MetricError(
            f"{name!r} is a no-reference pyiqa metric, but restored images are scored against sharp ones; "
            f"use a full-reference metric such as {EXAMPLE_METRICS} (a benchmark without sharp images "
            "is scored with no-reference ones)"
        )


def availability(names: Sequence[str], weights_dir: Path | None = None) -> dict[str, Availability]:
    """For each metric: can it run with the weights on this machine, which files it needs, and why not.
    Raises MetricError for a name that is not a pyiqa metric (or one of ours)."""
    torch_home = resolve_torch_home(weights_dir)
    fetch_hint = "run `demoe-eval metrics fetch lpips" + (
        f" --weights-dir {torch_home}`" if weights_dir else "`"
    )
    result = {}
    for name in dict.fromkeys(names):
        lower = bool(_config(name).get("lower_better", False))
        if name in WEIGHT_FREE or name in NR_WEIGHT_FREE:
            result[name] = Availability(name, True, lower, [], "needs no weights")
        elif name in PYIQA_NR_FILES:
            files = pyiqa_files(torch_home, name)
            missing = [str(p) for p in files if not p.is_file()]
            message = (
                f"missing {', '.join(missing)} (pyiqa's own weights); pass --allow-download to let pyiqa "
                "fetch them, or copy them there"
                if missing
                else "weights found"
            )
            result[name] = Availability(name, not missing, lower, files, message)
        elif name in LPIPS_METRICS:
            net = LPIPS_METRICS[name]
            files = lpips_files(torch_home, net)
            missing = [str(p) for p in files if not p.is_file()]
            problem = None if missing else linear_layers_problem(files[1], net)
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


def metric_color(name: str, protocol: Protocol) -> str:
    """What ``name`` scores under ``protocol``: ``rgb`` (the RGB images, as the metric defines it),
    ``y-yiq`` (the Y of YIQ, pyiqa's luma) or ``y-ycbcr`` (the Y of BT.601 YCbCr, BasicSR's and MATLAB's)."""
    if name in OWN_METRICS:
        return "y-ycbcr"
    options = _config(name)["metric_opts"]
    kind = options["type"]
    y = kind in Y_BY_DEFINITION or options.get("test_y_channel", False)
    y = y or (protocol.color == "y" and kind in TAKES_TEST_Y_CHANNEL)
    return f"y-{options.get('color_space', Y_COLOR_SPACE)}" if y else "rgb"


def create_metric(name: str, device: torch.device, options: dict, torch_home: Path):
    if name in OWN_METRICS:
        return YCbCrSSIM().to(device).eval()
    pyiqa = import_pyiqa(torch_home)
    kwargs = dict(options)
    name, variant = PYIQA_VARIANTS.get(name, (name, {}))
    kwargs |= variant
    if name in LPIPS_METRICS:
        linear = lpips_files(torch_home, LPIPS_METRICS[name])[1]
        if linear.is_file():
            kwargs["pretrained_model_path"] = str(linear)
    with torch_home_env(torch_home), contextlib.redirect_stdout(io.StringIO()):
        metric = pyiqa.create_metric(name, as_loss=False, device=device, check_input_range=False, **kwargs)
    return metric.eval()


_METRICS: dict[tuple, torch.nn.Module] = {}


def _cached_metric(name: str, device: torch.device, options: dict, torch_home: Path):
    key = (name, str(device), tuple(sorted(options.items())), str(torch_home))
    if key not in _METRICS:
        _METRICS[key] = create_metric(name, device, options, torch_home)
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


BT601_Y = (65.481, 128.553, 24.966)  # Y = 16 + these . (R, G, B) for R, G, B in [0, 1]: 16..235


def bt601_y(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB in [0, 1] -> (B, 1, H, W) float64 Y of BT.601 YCbCr in 16..235, not rounded."""
    weights = torch.tensor(BT601_Y, dtype=torch.float64, device=x.device).view(1, 3, 1, 1)
    return 16.0 + (x.to(torch.float64) * weights).sum(dim=1, keepdim=True)


class YCbCrSSIM(torch.nn.Module):
    """SSIM of BT.601 Y as BasicSR's ``calculate_ssim(test_y_channel=True)`` computes it, after Wang et
    al.'s ssim_index.m: Y in 0..255 unrounded, an 11x11 Gaussian window of sigma 1.5 over the valid part
    of the image only, C1 = (0.01 * 255)^2, C2 = (0.03 * 255)^2, the mean of the SSIM map. pyiqa's
    ``ssim`` with ``color_space='ycbcr'`` is not the same: it rounds Y to whole numbers and clamps
    negative contrast-structure terms to 0, which lowers good restorations' SSIM by about 1e-3."""

    def __init__(self, size: int = 11, sigma: float = 1.5) -> None:
        super().__init__()
        offsets = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
        taps = torch.exp(-(offsets**2) / (2 * sigma**2))
        self.register_buffer("taps", (taps / taps.sum())[None], persistent=False)

    def _filter(self, x: torch.Tensor) -> torch.Tensor:
        return _correlate_1d(_correlate_1d(x, self.taps, dim=-2), self.taps, dim=-1)

    def forward(self, restored: torch.Tensor, sharp: torch.Tensor) -> torch.Tensor:
        x, y = bt601_y(restored), bt601_y(sharp)
        c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
        mu_x, mu_y = self._filter(x), self._filter(y)
        var_x = self._filter(x * x) - mu_x**2
        var_y = self._filter(y * y) - mu_y**2
        cov = self._filter(x * y) - mu_x * mu_y
        ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / (
            (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
        )
        return ssim_map.mean(dim=(1, 2, 3))


class MetricSet:
    """The metrics of one evaluation: each pyiqa metric is created once per process and device, and the
    ones that cannot run here are listed in ``unavailable`` with a one-line reason instead.

    With ``reference`` (pairs), every name must be a full-reference metric; without (a benchmark with no
    sharp images), no-reference metrics score each image alone and full-reference ones are unavailable."""

    def __init__(
        self,
        names: Sequence[str],
        device: str | torch.device = "cpu",
        protocol: Protocol | None = None,
        weights_dir: Path | None = None,
        allow_download: bool = False,
        reference: bool = True,
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
        self._no_reference: set[str] = set()
        names = list(dict.fromkeys(names))
        for name in names:
            if reference:
                _full_reference(name)
            elif is_full_reference(name):
                self.unavailable[name] = NEEDS_SHARP
                self._lower_better[name] = bool(_config(name).get("lower_better", False))
        names = [n for n in names if n not in self.unavailable]
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
            if not reference:
                self._no_reference.add(name)
            self.available.append(name)

    def lower_better(self, name: str) -> bool:
        return self._lower_better[name]

    def colors(self) -> dict[str, str]:
        """Each available metric's channels (``metric_color``): what results record for every column."""
        return {name: metric_color(name, self.protocol) for name in self.available}

    def __call__(self, restored: torch.Tensor, sharp: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Per-image scores, shape (B,) float64 on the CPU, of (B, 3, H, W) images in [0, 1]; ``sharp``
        None: no-reference metrics only (a metric set made with ``reference=False``)."""
        if sharp is None and len(self._no_reference) < len(self._metrics):
            raise MetricError("full-reference metrics need the sharp images; this metric set scores pairs")
        shape = None if sharp is None else tuple(sharp.shape)
        if shape not in (None, tuple(restored.shape)) or restored.dim() != 4 or restored.shape[1] != 3:
            raise MetricError(f"restored {tuple(restored.shape)} and sharp {shape} must both be (B, 3, H, W)")
        border = self.protocol.crop_border
        if 2 * border >= min(restored.shape[-2:]):
            raise MetricError(
                f"crop_border {border} leaves nothing of a {restored.shape[-2]}x{restored.shape[-1]} image; "
                "lower the benchmark's protocol crop_border"
            )
        restored = restored.detach().to(self.device, torch.float32).clamp(0, 1)
        if sharp is not None:
            sharp = sharp.detach().to(self.device, torch.float32).clamp(0, 1)
        if self.protocol.quantize_8bit:
            restored = _quantize(restored)
            sharp = None if sharp is None else _quantize(sharp)
        scores = {}
        with torch.no_grad(), SeparableFloat64Filters():
            for name, metric in self._metrics.items():
                if name in self._no_reference:
                    value = metric(_crop(restored, border))
                elif name in self._cropped_by_pyiqa:
                    value = metric(restored, sharp)
                else:
                    value = metric(_crop(restored, border), _crop(sharp, border))
                scores[name] = value.detach().reshape(restored.shape[0]).to("cpu", torch.float64)
        return scores
