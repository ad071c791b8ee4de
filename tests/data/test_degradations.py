"""The five aio-synth degradations: each changes a real photo the way its kind of blur does."""

import json

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from demoe.data import degradations as deg
from demoe.data.aio_synth import skimage_data_dir
from demoe.data.images import read_image
from demoe.data.psf import srgb_to_linear, to_uint8
from demoe.vocab import TASKS

CROP = slice(22, 278)


def photo_regions() -> list[np.ndarray]:
    """300x300 regions of real photos (a 256x256 crop plus the generator's margin)."""
    coffee = read_image(skimage_data_dir() / "coffee.png")
    camera = read_image(skimage_data_dir() / "camera.png")
    motorcycle = read_image(skimage_data_dir() / "motorcycle_left.png")
    return [
        coffee[50:350, 150:450],
        camera[0:300, 100:400],
        motorcycle[100:400, 200:500],
        coffee[100:400, 0:300],
    ]


@pytest.fixture(scope="module")
def regions() -> list[np.ndarray]:
    return photo_regions()


def texture(seed: int = 0, size: int = 256) -> np.ndarray:
    """An isotropic random texture (smoothed noise), so that directional effects show in any direction."""
    noise = gaussian_filter(np.random.default_rng(seed).random((size, size, 3)), sigma=(1.0, 1.0, 0))
    return ((noise - noise.min()) / (noise.max() - noise.min())).astype(np.float32)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    a8, b8 = to_uint8(a).astype(np.float64), to_uint8(b).astype(np.float64)
    return float(10 * np.log10(255**2 / np.mean((a8 - b8) ** 2)))


def directional_detail(image: np.ndarray, angle: float) -> float:
    """Mean absolute derivative of the luminance along ``angle`` (radians; 0 is +x, pi/2 is +y)."""
    gy, gx = np.gradient(image.mean(axis=2))
    return float(np.abs(np.cos(angle) * gx + np.sin(angle) * gy)[8:-8, 8:-8].mean())


def test_every_task_has_its_degradation():
    assert tuple(deg.DEGRADATIONS) == TASKS


@pytest.mark.parametrize("task", TASKS)
def test_degradations_keep_shape_range_and_are_reproducible(task, regions):
    image = regions[0]
    out, params = deg.DEGRADATIONS[task](image, np.random.default_rng(7))
    again, params_again = deg.DEGRADATIONS[task](image, np.random.default_rng(7))
    other, _ = deg.DEGRADATIONS[task](image, np.random.default_rng(8))
    assert out.shape == image.shape and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0
    np.testing.assert_array_equal(out, again)
    assert params == params_again and json.loads(json.dumps(params)) == params
    assert not np.array_equal(to_uint8(out), to_uint8(other))


@pytest.mark.parametrize(
    "kernel",
    [
        deg.disk_kernel(3.3),
        deg.gaussian_kernel(0.8),
        deg.line_kernel(17.0, 0.4),
        deg.frames_kernel(9, 1.3, 0.4, 2.0),
        *(deg.splat_kernel(deg.shake_trajectory(np.random.default_rng(s), 14.0, 1.2)) for s in range(4)),
    ],
)
def test_kernels_are_normalised_centred_and_odd(kernel):
    h, w = kernel.shape
    assert h % 2 == 1 and w % 2 == 1 and kernel.min() >= 0
    assert kernel.sum() == pytest.approx(1.0)
    yy, xx = np.mgrid[-(h // 2) : h // 2 + 1, -(w // 2) : w // 2 + 1]
    assert abs((kernel * yy).sum()) < 1e-9 and abs((kernel * xx).sum()) < 1e-9


def test_shake_paths_have_the_asked_length_and_curve_more_with_more_wobble():
    def bend(path: np.ndarray) -> float:
        """How far the path strays from its best straight line, relative to its extent (PCA axes)."""
        eig = np.linalg.eigvalsh(np.cov((path - path.mean(axis=0)).T))
        return float(np.sqrt(max(eig[0], 0.0) / eig[1]))

    for seed in range(5):
        path = deg.shake_trajectory(np.random.default_rng(seed), 12.0, 1.5)
        assert np.hypot(*np.diff(path, axis=0).T).sum() == pytest.approx(12.0)
    straight = [bend(deg.shake_trajectory(np.random.default_rng(s), 12.0, 0.0)) for s in range(10)]
    wobbly = [bend(deg.shake_trajectory(np.random.default_rng(s), 12.0, 1.5)) for s in range(10)]
    assert max(straight) < 1e-6
    assert np.median(wobbly) > 0.08 and min(wobbly) > 0.01


def test_defocus_removes_high_frequencies_equally_in_every_direction():
    for seed in range(3):
        image = texture(seed)
        out, params = deg.defocus(image, np.random.default_rng(seed))
        kept = [directional_detail(out, a) / directional_detail(image, a) for a in np.linspace(0, np.pi, 8)]
        assert max(kept) < 0.55, params
        assert max(kept) / min(kept) < 1.15, params


def test_synth_global_motion_blurs_along_its_straight_path_only():
    for seed in range(3):
        image = texture(seed)
        out, params = deg.synth_global_motion(image, np.random.default_rng(seed))
        along = np.radians(params["angle_deg"])
        kept_along = directional_detail(out, along) / directional_detail(image, along)
        kept_across = directional_detail(out, along + np.pi / 2) / directional_detail(
            image, along + np.pi / 2
        )
        assert kept_along < 0.6 * kept_across, params


def test_global_motion_blurs_the_whole_image(regions):
    for seed, image in enumerate(regions):
        out, params = deg.global_motion(image, np.random.default_rng(seed))
        crop_in, crop_out = image[CROP, CROP], out[CROP, CROP]
        changed = np.any(to_uint8(crop_out) != to_uint8(crop_in), axis=2)
        blocks = [
            changed[y : y + 32, x : x + 32].mean() for y in range(0, 256, 32) for x in range(0, 256, 32)
        ]
        assert min(blocks) > 0.2, params
        assert directional_detail(crop_out, 0) + directional_detail(crop_out, np.pi / 2) < 0.8 * (
            directional_detail(crop_in, 0) + directional_detail(crop_in, np.pi / 2)
        )


def test_local_motion_leaves_the_background_untouched(regions):
    for seed, image in enumerate(regions):
        out, params = deg.local_motion(image, np.random.default_rng(seed))
        changed = np.any(to_uint8(out) != to_uint8(image), axis=2)
        assert 0.05 < changed.mean() < 0.6, params
        yy, xx = np.nonzero(changed)
        reach = params["radius"] * 1.36 + params["length"] / 2 + 3
        assert np.hypot(yy - params["center_y"], xx - params["center_x"]).max() < reach, params


def test_low_light_darkens_in_linear_light_and_adds_sensor_noise():
    grey = np.full((128, 128, 3), 0.5, dtype=np.float32)
    for seed in range(3):
        out, params = deg.low_light(grey, np.random.default_rng(seed))
        linear = srgb_to_linear(out)
        expected_mean = params["exposure"] * srgb_to_linear(np.float32(0.5))
        assert linear.mean() == pytest.approx(expected_mean, rel=0.05), params
        expected_var = expected_mean / params["photons_full_scale"] + params["read_noise"] ** 2
        assert linear.var() == pytest.approx(expected_var, rel=0.15), params
        assert out.mean() < 0.6 * 0.5


@pytest.mark.parametrize(
    "task, band",
    [
        ("defocus", (19, 32)),
        ("global_motion", (19, 32)),
        ("local_motion", (19, 34)),
        ("synth_global_motion", (19, 32)),
        ("low_light", (7, 18)),
    ],
)
def test_blurred_crops_score_a_plausible_psnr(task, band, regions):
    scores = []
    for seed, image in enumerate(regions * 2):
        out, _ = deg.DEGRADATIONS[task](image, np.random.default_rng(seed))
        scores.append(psnr(out[CROP, CROP], image[CROP, CROP]))
    assert band[0] < np.mean(scores) < band[1], scores
    assert min(scores) > band[0] - 4 and max(scores) < band[1] + 6, scores
