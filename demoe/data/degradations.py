"""The five degradations of aio-synth, one per DeMoE task, each a small model of how the blur forms.

Every function takes a sharp sRGB image (HxWx3 float32 in [0, 1]) and a numpy ``Generator`` and returns
the degraded sRGB image and its parameters (plain floats, for the manifest). Blur acts on light, so each
one decodes to linear light, blurs there and encodes back. Strengths are in pixels of the image they are
given; aio-synth gives them 256x256 crops (plus a margin), where they are clearly visible and the blurred
image scores about 20-30 dB PSNR against the sharp one (low light, which also darkens, much lower).

Kernels are odd-sized, non-negative, sum to 1 and have their centroid on the centre pixel, so the
degraded image stays aligned with the sharp one, as in the paired datasets the tasks come from.
"""

from collections.abc import Callable

import numpy as np
from scipy.ndimage import gaussian_filter1d
from scipy.signal import fftconvolve

from demoe.data.psf import apply_psf, linear_to_srgb, poisson_gaussian_noise, srgb_to_linear

Degradation = Callable[[np.ndarray, np.random.Generator], tuple[np.ndarray, dict]]


def disk_kernel(radius: float) -> np.ndarray:
    """A uniform disk of ``radius`` pixels with anti-aliased edges: the geometric defocus PSF of a lens
    with a round aperture."""
    half = int(np.ceil(radius)) + 1
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1]
    kernel = np.clip(radius + 0.5 - np.hypot(yy, xx), 0.0, 1.0)
    return kernel / kernel.sum()


def gaussian_kernel(sigma: float) -> np.ndarray:
    half = max(1, int(np.ceil(3 * sigma)))
    x = np.arange(-half, half + 1)
    g = np.exp(-0.5 * (x / sigma) ** 2)
    kernel = np.outer(g, g)
    return kernel / kernel.sum()


def splat_kernel(points: np.ndarray) -> np.ndarray:
    """The kernel of light spread evenly over ``points`` ((N, 2) as (y, x) pixel offsets, e.g. samples of
    a path at equal time steps): each point's share goes to its four neighbouring pixels (bilinear), after
    moving the points' centroid to the centre pixel."""
    points = points - points.mean(axis=0)
    weights = np.full(len(points), 1.0 / len(points))
    half = int(np.ceil(np.abs(points).max())) + 1
    kernel = np.zeros((2 * half + 1, 2 * half + 1))
    pos = points + half
    base = np.floor(pos).astype(int)
    frac = pos - base
    for dy in (0, 1):
        for dx in (0, 1):
            w = weights * np.where(dy, frac[:, 0], 1 - frac[:, 0]) * np.where(dx, frac[:, 1], 1 - frac[:, 1])
            np.add.at(kernel, (base[:, 0] + dy, base[:, 1] + dx), w)
    return kernel / kernel.sum()


def shake_trajectory(
    rng: np.random.Generator, length: float, wobble: float, samples: int = 512
) -> np.ndarray:
    """A hand-held camera's path during the exposure, (samples, 2) as (y, x): a velocity that starts in a
    random direction and drifts smoothly (``wobble`` is the size of the drift relative to the initial
    speed, so 0 is a straight line and 2 is a strongly curved path that may turn back), scaled so that the
    path is ``length`` pixels long. Where the camera slows down, light piles up: the bright knots of real
    shake kernels."""
    angle = rng.uniform(0, 2 * np.pi)
    drift = gaussian_filter1d(rng.standard_normal((samples, 2)), sigma=samples / 10, axis=0, mode="wrap")
    drift = drift / max(np.sqrt((drift**2).sum(axis=1).mean()), 1e-12)
    velocity = np.array([np.sin(angle), np.cos(angle)]) + wobble * (drift - drift[0])
    path = np.cumsum(velocity, axis=0)
    arc = np.hypot(*np.diff(path, axis=0).T).sum()
    return path * (length / max(arc, 1e-12))


def _blur_linear(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    return apply_psf(srgb_to_linear(image), kernel)


def _rounded(params: dict) -> dict:
    return {k: round(float(v), 4) if isinstance(v, float | np.floating) else v for k, v in params.items()}


def defocus(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Out-of-focus lens: a disk PSF (the aperture's image on the sensor), half the time softened by a
    small Gaussian standing in for aberrations and diffraction. Uniform over the image, as for a flat
    scene at one distance."""
    radius = rng.uniform(1.5, 4.5)
    sigma = rng.uniform(0.4, 1.2) if rng.random() < 0.5 else 0.0
    kernel = disk_kernel(radius)
    if sigma > 0:
        kernel = np.clip(fftconvolve(kernel, gaussian_kernel(sigma)), 0.0, None)
        kernel = kernel / kernel.sum()
    out = linear_to_srgb(_blur_linear(image, kernel))
    return out, _rounded({"radius": radius, "gaussian_sigma": sigma})


def global_motion(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Camera shake during a long exposure: the whole image is smeared along one random, smooth, curved
    path (the camera's motion), with light piling up where the camera slowed down."""
    length = rng.uniform(6.0, 16.0)
    wobble = rng.uniform(0.3, 1.5)
    kernel = splat_kernel(shake_trajectory(rng, length, wobble))
    out = linear_to_srgb(_blur_linear(image, kernel))
    return out, _rounded({"length": length, "wobble": wobble, "kernel_size": kernel.shape[0]})


def frames_kernel(frames: int, step: float, duty: float, angle: float) -> np.ndarray:
    """``frames`` short segments along a straight line at ``angle`` (radians), ``step`` pixels apart, each
    ``duty * step`` long: the light of consecutive video frames, each exposed for a ``duty`` fraction of
    the frame interval."""
    starts = (np.arange(frames) - (frames - 1) / 2) * step
    within = (np.arange(16) / 16 - 0.5) * duty * step
    offsets = (starts[:, None] + within[None, :]).ravel()
    return splat_kernel(offsets[:, None] * np.array([np.sin(angle), np.cos(angle)]))


def line_kernel(length: float, angle: float) -> np.ndarray:
    """Uniform motion along a straight line of ``length`` pixels at ``angle`` (radians)."""
    offsets = np.linspace(-0.5, 0.5, max(16, int(8 * length))) * length
    return splat_kernel(offsets[:, None] * np.array([np.sin(angle), np.cos(angle)]))


def synth_global_motion(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """GoPro-style synthetic blur: the average, in linear light, of consecutive high-frame-rate frames of a
    camera moving along a straight line at constant speed. Each frame is itself exposed for a fraction
    of the frame interval, so the kernel is a dashed line of ``frames`` short segments; the sharp image
    is the middle frame."""
    frames = int(rng.choice([7, 9, 11, 13]))
    step = rng.uniform(0.7, 1.5)
    duty = rng.uniform(0.2, 0.6)
    angle = rng.uniform(0, np.pi)
    out = linear_to_srgb(_blur_linear(image, frames_kernel(frames, step, duty, angle)))
    params = {"frames": frames, "step": step, "duty": duty, "angle_deg": float(np.degrees(angle))}
    return out, _rounded({**params, "length": (frames - 1) * step})


def blob_mask(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, dict]:
    """The matte of a moving object: a random smooth star-shaped blob (a circle whose radius varies with
    three random harmonics), anti-aliased over about two pixels, covering roughly 10-30% of the image."""
    size = min(height, width)
    cy, cx = rng.uniform(0.3, 0.7) * height, rng.uniform(0.3, 0.7) * width
    radius = rng.uniform(0.18, 0.3) * size
    amplitudes = rng.uniform(0, 0.12, 3)
    phases = rng.uniform(0, 2 * np.pi, 3)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    theta = np.arctan2(yy - cy, xx - cx)
    edge = np.full_like(theta, radius)
    for order, amplitude, phase in zip((2, 3, 4), amplitudes, phases, strict=True):
        edge += radius * amplitude * np.cos(order * theta + phase)
    mask = np.clip((edge - np.hypot(yy - cy, xx - cx)) / 2.0 + 0.5, 0.0, 1.0)
    return mask.astype(np.float32), {"center_y": cy, "center_x": cx, "radius": radius}


def local_motion(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """An object moving in front of a still camera: the object layer (image times its matte) is smeared
    along its straight path and composited over the sharp background, which shows through wherever the
    smeared matte does not cover it (``K*(m x) + (1 - K*m) x`` in linear light). Pixels the object never
    reaches stay exactly as they were."""
    mask, blob = blob_mask(rng, *image.shape[:2])
    length = rng.uniform(12.0, 28.0)
    angle = rng.uniform(0, np.pi)
    kernel = line_kernel(length, angle)
    linear = srgb_to_linear(image)
    moving = apply_psf(linear * mask[..., None], kernel)
    coverage = apply_psf(mask, kernel)[..., None]
    out = np.where(coverage > 1e-6, moving + (1 - coverage) * linear, linear)
    params = {"length": length, "angle_deg": float(np.degrees(angle)), **blob, "area": float(mask.mean())}
    return linear_to_srgb(out), _rounded(params)


def low_light(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """A photo of a dim scene: exposure reduced in linear light (1/16 to 1/4 of the sharp image's), mild
    hand shake from the longer exposure, photon shot noise (Poisson: ``photons`` electrons at full
    scale before dimming) and read noise (Gaussian), then the sRGB curve; the sharp target is the
    well-exposed image, as in LOL-Blur."""
    exposure = float(np.exp(rng.uniform(np.log(1 / 16), np.log(1 / 4))))
    photons = float(np.exp(rng.uniform(np.log(300), np.log(3000))))
    read_noise = rng.uniform(0.0005, 0.002)
    length = rng.uniform(2.0, 5.0)
    kernel = splat_kernel(shake_trajectory(rng, length, 0.5))
    dim = _blur_linear(image, kernel) * exposure
    noisy = poisson_gaussian_noise(dim, 1 / photons, read_noise, rng)
    params = {
        "exposure": exposure,
        "photons_full_scale": photons,
        "read_noise": read_noise,
        "shake_length": length,
    }
    return linear_to_srgb(noisy), _rounded(params)


DEGRADATIONS: dict[str, Degradation] = {
    "defocus": defocus,
    "global_motion": global_motion,
    "local_motion": local_motion,
    "synth_global_motion": synth_global_motion,
    "low_light": low_light,
}
