"""aio-synth: the built-in all-in-one benchmark, generated on this machine from photos scikit-image ships.

Each pair is a 256x256 crop of a photo (the test split also has one full photo per task) degraded by one
of the five degradations in ``degradations.py``; the crop is degraded with a margin around it, so light
from outside the frame blurs into it as it would in a camera. Photos are split between train, val and
test, so no photo (nor the other view of the stereo motorcycle) is in two of them: recipes choose their
checkpoints on val and report test once. The val photos come from matplotlib and pyiqa, which ship
natural photos that scikit-image does not. scikit-image's soft photos (moon,
retina, cell) are left out, since their "sharp" crops are hardly sharper than blurred ones, and so are
page and text, which are smaller than a crop with its margin. The same generator version and
seed give byte-identical files: every pair has its own seeded ``Generator``, PNGs are written with fixed
settings and no metadata, and the manifest holds no time stamps.

Layout under the root: ``{train,val,test}/<task>/{blur,sharp}/NAME.png``, ``wild/clock_motion.png`` (a real
motion-blurred photo without ground truth) and ``manifest.json``, written last. Generation happens in a
hidden folder beside the root, renamed into place when complete, under a file lock, so an interrupted
run is never taken for a finished one and two processes starting at once generate it once.
"""

import fcntl
import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from demoe.data.degradations import DEGRADATIONS
from demoe.data.images import read_image
from demoe.data.psf import write_png
from demoe.errors import DemoeError
from demoe.fileio import atomic_write_text, sha256_file
from demoe.paths import demoe_home
from demoe.progress import bar as progress_bar
from demoe.vocab import TASKS

GENERATOR_VERSION = "2"  # 2: the val split (train and test are byte-identical to version 1's)
NAME = "aio-synth"
CROP = 256
MARGIN = 22  # more than any kernel reaches, so a crop never sees mirrored borders
MIN_CROP_STD = 0.06
CROP_TRIES = 30
SPLITS: dict[str, tuple[str, ...]] = {
    "train": (
        "astronaut.png",
        "chelsea.png",
        "rocket.jpg",
        "hubble_deep_field.jpg",
        "ihc.png",
        "brick.png",
        "grass.png",
        "coins.png",
    ),
    "test": ("coffee.png", "motorcycle_left.png", "motorcycle_right.png", "camera.png", "gravel.png"),
    # photos in neither train nor test, from two other packages demoe-eval depends on (EXTERNAL_SOURCES)
    "val": ("grace_hopper.jpg", "I03.bmp", "I04.bmp", "I06.bmp", "I08.bmp", "I19.bmp"),
}
PAIRS_PER_TASK = {"train": 40, "test": 15, "val": 12}
FULL_IMAGES_PER_TASK = {"train": 0, "test": 1, "val": 0}
# val photos that scikit-image does not ship: (distribution, path in it) -- matplotlib's sample photo and
# the five Kodak photos pyiqa ships as the references of its calibration set
EXTERNAL_SOURCES: dict[str, tuple[str, str]] = {
    "grace_hopper.jpg": ("matplotlib", "matplotlib/mpl-data/sample_data/grace_hopper.jpg"),
    **{f"I{n}.bmp": ("pyiqa", f"ResultsCalibra/ref_dir/I{n}.bmp") for n in ("03", "04", "06", "08", "19")},
}
WILD = "clock_motion.png"


class AioSynthError(DemoeError):
    """aio-synth cannot be generated where asked, or scikit-image lacks one of its photos."""


def skimage_data_dir() -> Path:
    import skimage.data

    return Path(skimage.data.__file__).parent


def default_root() -> Path:
    return demoe_home() / "benchmarks" / NAME


def is_generated(root: Path) -> bool:
    """Whether ``root`` holds a complete, full-size generation by this generator version."""
    try:
        manifest = json.loads((Path(root) / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (
        isinstance(manifest, dict)
        and manifest.get("generator_version") == GENERATOR_VERSION
        and manifest.get("subset") is None
    )


def _external_file(name: str) -> Path:
    from importlib import metadata

    distribution, wanted = EXTERNAL_SOURCES[name]
    try:
        found = [f for f in metadata.files(distribution) or [] if str(f) == wanted]
    except metadata.PackageNotFoundError:
        found = []
    path = Path(found[0].locate()) if found else None
    if path is None or not path.is_file():
        raise AioSynthError(
            f"{distribution} does not ship {wanted}, which aio-synth's val split is made from; install "
            f"{distribution} from a wheel (pip install --force-reinstall {distribution})"
        )
    return path


def _source_file(name: str) -> Path:
    if name in EXTERNAL_SOURCES:
        return _external_file(name)
    path = skimage_data_dir() / name
    if not path.is_file():
        import skimage

        raise AioSynthError(
            f"scikit-image {skimage.__version__} does not ship {name} in {path.parent}, which aio-synth is made "
            "from; install scikit-image >= 0.22 from a wheel"
        )
    return path


def _pick_crop(image: np.ndarray, rng: np.random.Generator, crop: int = CROP) -> tuple[int, int]:
    """A random crop position with a margin inside the photo, skipping near-flat ones (the black sky of the
    Hubble photo, the black surround of the retina): the first of ``CROP_TRIES`` whose brightness
    varies enough, else the most varied."""
    height, width = image.shape[:2]
    if height < crop + 2 * MARGIN or width < crop + 2 * MARGIN:
        raise AioSynthError(
            f"a {width}x{height} photo is too small for {crop}x{crop} crops with a {MARGIN} px margin"
        )
    best, best_std = (MARGIN, MARGIN), -1.0
    for _ in range(CROP_TRIES):
        y = int(rng.integers(MARGIN, height - crop - MARGIN + 1))
        x = int(rng.integers(MARGIN, width - crop - MARGIN + 1))
        std = float(image[y : y + crop, x : x + crop].mean(axis=2).std())
        if std >= MIN_CROP_STD:
            return y, x
        if std > best_std:
            best, best_std = (y, x), std
    return best


def _pair_plan(subset: int | None) -> list[dict]:
    """Every pair to make, in order: split, task, index, source photo and whether it is a full photo.
    Crops cycle through the split's photos (starting at a different photo for each task), so every task
    sees every photo about equally often; the full photos come last."""
    plan = []
    for split, sources in SPLITS.items():
        for t, task in enumerate(TASKS):
            count = PAIRS_PER_TASK[split]
            crops = count - FULL_IMAGES_PER_TASK[split]
            for i in range(count if subset is None else min(subset, count)):
                full = i >= crops
                source = sources[(t + (i - crops if full else i)) % len(sources)]
                plan.append({"split": split, "task": task, "index": i, "source": source, "full": full})
    return plan


def _make_pair(image: np.ndarray, item: dict, seed: int) -> tuple[np.ndarray, np.ndarray, dict]:
    rng = np.random.default_rng(
        [seed, list(SPLITS).index(item["split"]), TASKS.index(item["task"]), item["index"]]
    )
    if item["full"]:
        blurred, params = DEGRADATIONS[item["task"]](image, rng)
        return image, blurred, {"crop": None, "params": params}
    return degraded_crop(image, item["task"], CROP, rng)


def degraded_crop(
    image: np.ndarray, task: str, crop: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, dict]:
    """(sharp, blurred, info) of a random ``crop`` x ``crop`` patch of ``image`` degraded by ``task``'s
    degradation, as aio-synth makes its pairs: the patch is degraded with its margin, then cut out."""
    y, x = _pick_crop(image, rng, crop)
    region = image[y - MARGIN : y + crop + MARGIN, x - MARGIN : x + crop + MARGIN]
    blurred, params = DEGRADATIONS[task](region, rng)
    inner = (slice(MARGIN, MARGIN + crop), slice(MARGIN, MARGIN + crop))
    return region[inner], blurred[inner], {"crop": [y, x, crop, crop], "params": params}


def train_photos() -> dict[str, np.ndarray]:
    """The photos of aio-synth's train split, read from scikit-image's data folder."""
    return {name: read_image(_source_file(name)) for name in SPLITS["train"]}


def _pair_name(item: dict) -> str:
    stem = Path(item["source"]).stem
    return f"{stem}_full" if item["full"] else f"{stem}_{item['index']:03d}"


def _write_set(folder: Path, seed: int, subset: int | None, progress: bool) -> dict:
    import skimage

    plan = _pair_plan(subset)
    files = {name: _source_file(name) for sources in SPLITS.values() for name in sources}
    images = {name: read_image(path) for name, path in files.items()}
    pairs = []
    with progress_bar(len(plan), f"generating {NAME}", "pair", enabled=progress) as bar:
        for item in plan:
            sharp, blurred, info = _make_pair(images[item["source"]], item, seed)
            name = _pair_name(item)
            task_dir = folder / item["split"] / item["task"]
            write_png(task_dir / "sharp" / f"{name}.png", sharp)
            write_png(task_dir / "blur" / f"{name}.png", blurred)
            pairs.append(
                {"name": name, "task": item["task"], "split": item["split"], "source": item["source"], **info}
            )
            bar.update()
    wild = folder / "wild" / WILD
    wild.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_source_file(WILD), wild)
    manifest = {
        "name": NAME,
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "subset": subset,
        "crop": CROP,
        "scikit_image_version": skimage.__version__,
        "tasks": list(TASKS),
        "splits": {
            split: {
                "sources": list(sources),
                "pairs": sum(p["split"] == split for p in pairs),
                "pairs_per_task": {
                    t: sum(p["split"] == split and p["task"] == t for p in pairs) for t in TASKS
                },
            }
            for split, sources in SPLITS.items()
        },
        "source_sha256": {name: sha256_file(path) for name, path in files.items()},
        "wild": {"file": f"wild/{WILD}", "source": WILD, "sha256": sha256_file(wild)},
        "pairs": pairs,
    }
    atomic_write_text(folder / "manifest.json", json.dumps(manifest, indent=1) + "\n")
    return manifest


@contextmanager
def _lock(root: Path) -> Iterator[None]:
    """An exclusive ``flock`` on a file beside ``root``, held while it is generated."""
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f".{root.name}.lock", "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _generate_unlocked(root: Path, seed: int, progress: bool, subset: int | None) -> dict:
    if root.exists() and not (root / "manifest.json").is_file() and any(root.iterdir()):
        raise AioSynthError(
            f"{root} holds files but no aio-synth manifest.json; move it away so that aio-synth can be generated there"
        )
    partial = root.parent / f".{root.name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    manifest = _write_set(partial, seed, subset, progress)
    old = root.parent / f".{root.name}.old"
    shutil.rmtree(old, ignore_errors=True)
    if root.exists():
        root.rename(old)
    partial.rename(root)
    shutil.rmtree(old, ignore_errors=True)
    return manifest


def generate(root: Path, seed: int = 0, progress: bool = True, subset: int | None = None) -> dict:
    """Generate aio-synth into ``root`` (replacing an earlier generation) and return its manifest.
    ``subset`` keeps only the first N pairs of each task and split (for quick checks; such a set is not
    taken as generated by ``ensure_generated``)."""
    if seed < 0:
        raise AioSynthError(f"seed {seed}: use a non-negative integer")
    root = Path(root)
    with _lock(root):
        return _generate_unlocked(root, seed, progress, subset)


def ensure_generated(root: Path | None = None, progress: bool = True) -> Path:
    """``root`` (default ``$DEMOE_HOME/benchmarks/aio-synth``), generated first if its manifest is missing
    or from another generator version."""
    root = Path(root) if root is not None else default_root()
    if is_generated(root):
        return root
    with _lock(root):
        if not is_generated(root):
            _generate_unlocked(root, 0, progress, None)
    return root
