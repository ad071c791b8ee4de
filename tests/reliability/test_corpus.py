"""Bad input, as a careless or hostile user gives it, through the CLI in a subprocess: each case must end
with exit code 1 (2 for a usage error), one ``Error:`` line on stderr that names the file or option, no
traceback, and nothing previously computed changed."""

import hashlib
import http.server
import io
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers import TINY_A, cli, tiny_run_args, write_pairs
from PIL import Image


@dataclass
class Case:
    args: list[str]
    names: str  # what the Error line must name (the file, key or option)
    code: int = 1
    keep: list[Path] = field(default_factory=list)  # files and folders that must come out unchanged


def digest(path: Path) -> str:
    """The hash of a file, or of a folder's file names and contents; "absent" when not there."""
    if not path.exists():
        return "absent"
    h = hashlib.sha256()
    for file in sorted(p for p in ([path] if path.is_file() else path.rglob("*")) if p.is_file()):
        h.update(os.fsencode(file.relative_to(path.parent)) + b"\0" + file.read_bytes())
    return h.hexdigest()


# ------------------------------------------------------------------------------------------ the makers


def bench(tmp: Path, count: int = 2) -> Path:
    write_pairs(tmp / "bench", count, np.random.default_rng(0))
    return tmp / "bench"


def run_args(tmp: Path, *extra: str, folder: Path | None = None) -> list[str]:
    """``run`` of the tiny model on ``folder`` (a fresh two-pair benchmark when not given)."""
    return tiny_run_args(folder or bench(tmp), tmp / "out", *extra)


def write_then(path: Path, data: bytes, case: Callable[[], Case]) -> Case:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return case()


def zoo_entry(tmp: Path, **checkpoint) -> Path:
    folder = tmp / "shared_zoo"
    folder.mkdir(exist_ok=True)
    entry = {"name": "Shared", "arch": "DeMoE", "kwargs": {"width": 8}, "checkpoint": checkpoint}
    (folder / "shared.yaml").write_text(yaml.safe_dump(entry))
    return folder


def zoo_fetch(tmp: Path, names: str, **checkpoint) -> Case:
    folder = zoo_entry(tmp, **checkpoint)
    outside = tmp / "outside.pt"
    outside.write_bytes(b"a file the entry must not reach")
    return Case(["zoo", "fetch", "Shared", "--zoo-dir", str(folder), "--force"], names, keep=[outside])


def zoo_file(tmp: Path, text: bytes) -> Case:
    folder = tmp / "shared_zoo"
    folder.mkdir()
    (folder / "bad.yaml").write_bytes(text)
    return Case(["zoo", "list", "--zoo-dir", str(folder)], "bad.yaml")


def finetune_set(tmp: Path, assignment: str, names: str, *more: str) -> Case:
    zoo = tmp / "zoo"
    zoo.mkdir()
    existing = zoo / "tiny-ft.yaml"
    existing.write_text("name: tiny-ft\narch: DeMoE\nkwargs: {width: 8}\n")
    args = [
        "finetune",
        "-c",
        "tiny_synth_restore",
        "--set",
        assignment,
        *(arg for extra in more for arg in ("--set", extra)),
        "--register-dir",
        str(zoo),
        "--no-tracking",
    ]
    return Case(args + ["--out", str(tmp / "run")], names, keep=[existing])


def bad_image_bench(tmp: Path, write_bad, name: str = "1.png", **run_extra) -> Case:
    """A two-pair benchmark whose second blurred image is replaced by what ``write_bad`` writes."""
    folder = bench(tmp)
    target = folder / "blur" / name
    if name != "1.png":
        (folder / "blur" / "1.png").unlink()
        (folder / "sharp" / "1.png").rename(folder / "sharp" / Path(name).with_suffix(".png"))
    target.unlink(missing_ok=True)
    write_bad(target)
    extra = [a for kv in run_extra.items() for a in kv]
    named = "1.png" if name == "1.png" else Path(name).stem[:3]  # the bad file (its escaped name's start)
    return Case(run_args(tmp, *extra, folder=folder), named, keep=[folder])


def png_bytes(size=(32, 32), mode="RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size).save(buffer, format="PNG")
    return buffer.getvalue()


def corrupt_pixels(path: Path) -> None:
    """A PNG with a valid header and end whose compressed pixel data is garbage."""
    data = bytearray(png_bytes())
    start = data.index(b"IDAT") + 4
    data[start : start + 40] = bytes(range(40))
    path.write_bytes(bytes(data))


def bomb(path: Path) -> None:
    """A PNG whose header claims 30000 x 30000 pixels (Pillow's decompression-bomb limit is 179 M)."""
    Image.new("1", (30000, 30000)).save(path, format="PNG")


def bench_manifest(tmp: Path, text: bytes, names: str = "mine.yaml") -> Case:
    """A manifest that is right but for ``text`` (which may replace its keys)."""
    folder = tmp / "benches"
    folder.mkdir()
    (folder / "mine.yaml").write_bytes(b"root: data/mine\nsplits: {test: {pairs: 2}}\n" + text)
    case = Case(["bench", "show", "mine", "--bench-dir", str(folder)], "mine.yaml")
    case.names = names
    return case


def partial_bench(tmp: Path, *extra: str) -> Case:
    folder = bench(tmp, 1)
    (folder / "benchmark.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "declared-seven",
                "root": str(folder),
                "layout": {"blurred": "blur", "sharp": "sharp", "files": ["*.png"]},
                "splits": {"test": {"pairs": 7}},
                "test_split": "test",
            }
        )
    )
    return Case(run_args(tmp, *extra, folder=folder), "of the 7 its manifest declares")


def checkpoint(tmp: Path, write) -> Case:
    path = tmp / "weights.pt"
    write(path)
    return Case(run_args(tmp, "--checkpoint", str(path)), "weights.pt", keep=[path])


class _Exploit:
    """Pickled, it runs ``touch`` on load: a loader that executes pickled code makes the marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def malicious_pickle(tmp: Path) -> Case:
    case = checkpoint(tmp, lambda p: torch.save({"params": _Exploit(tmp / "pwned")}, p))
    case.keep.append(tmp / "pwned")  # must stay absent
    return case


def tiny_state(**change) -> dict:
    state = torch.load(TINY_A, weights_only=True)
    state = state.get("params", state)
    return {k: change.get(k, v) for k, v in state.items()}


def nan_weights(path: Path) -> None:
    state = tiny_state()
    key = next(k for k in state if state[k].is_floating_point())
    state[key] = torch.full_like(state[key], float("nan"))
    torch.save({"params": state}, path)


def wrong_shape(path: Path) -> None:
    state = tiny_state()
    key = next(k for k in state if state[k].dim() == 4)
    state[key] = torch.zeros(1, 1, 1, 1)
    torch.save({"params": state}, path)


def psf_case(tmp: Path, array=None, raw: bytes | None = None, suffix: str = ".npy") -> Case:
    sharp = tmp / "sharp_in"
    sharp.mkdir()
    Image.new("RGB", (32, 32), (120, 60, 30)).save(sharp / "a.png")
    psf = tmp / f"psf{suffix}"
    if raw is not None:
        psf.write_bytes(raw)
    else:
        np.save(psf, array, allow_pickle=True)
    out = tmp / "made"
    return Case(
        ["bench", "make", "--psf", str(psf), "--input", str(sharp), "--out", str(out)], "--psf", keep=[out]
    )


def tracking_store(tmp: Path, content: bytes, mode: int | None = None, command: str = "run") -> Case:
    db = tmp / "mlflow.db"
    db.write_bytes(content)
    if mode is not None:
        db.chmod(mode)
    uri = f"sqlite:///{db}"
    if command == "report":
        return Case(["report", "--tracking-uri", uri, "--out", str(tmp / "report")], "mlflow.db", keep=[db])
    args = run_args(tmp, "--tracking-uri", uri)
    args.remove("--no-tracking")
    return Case(args, "mlflow.db", keep=[db, tmp / "out"])


def results_folder(tmp: Path, text: bytes | None) -> Case:
    folder = tmp / "results"
    folder.mkdir()
    if text is not None:
        (folder / "results.json").write_bytes(text)
    return Case(
        ["log", str(folder), "--tracking-uri", f"sqlite:///{tmp / 'mlflow.db'}"], "results", keep=[folder]
    )


def sweep_file(tmp: Path, doc: dict, names: str) -> Case:
    path = tmp / "sweep.yaml"
    path.write_text(yaml.safe_dump(doc))
    return Case(["run", "-e", str(path), "--no-tracking"], names)


def experiment_file(tmp: Path, text: bytes, names: str) -> Case:
    path = tmp / "recipe.yaml"
    path.write_bytes(text)
    return Case(["finetune", "-c", str(path), "--no-tracking", "--out", str(tmp / "run")], names)


def read_only_dir(tmp: Path) -> Path:
    folder = tmp / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    return folder


ROOT = os.geteuid() == 0  # file modes do not stop root: those cases are checked as another user only


CASES: dict[str, Callable[[Path], Case]] = {
    # zoo: a shared zoo folder is untrusted
    "zoo-file-escapes-upwards": lambda t: zoo_fetch(
        t, "file", file="../../outside.pt", url="http://127.0.0.1:9/x"
    ),
    "zoo-file-absolute": lambda t: zoo_fetch(
        t, "file", file=str(t / "outside.pt"), url="http://127.0.0.1:9/x"
    ),
    "zoo-url-file-scheme": lambda t: zoo_fetch(t, "url", file="x.pt", url=f"file://{t / 'outside.pt'}"),
    "zoo-sha256-not-hex": lambda t: zoo_fetch(
        t, "sha256", file="x.pt", url="http://127.0.0.1:9/x", sha256="zz"
    ),
    "zoo-size-negative": lambda t: zoo_fetch(t, "size", file="x.pt", url="http://127.0.0.1:9/x", size=-3),
    "zoo-shipped-path-escapes": lambda t: zoo_fetch(t, "path", file="x.pt", path="../../outside.pt"),
    "zoo-top-level-list": lambda t: zoo_file(t, b"- name: a\n  arch: DeMoE\n"),
    "zoo-not-utf8": lambda t: zoo_file(t, b"name: caf\xe9\narch: DeMoE\n"),
    "zoo-not-yaml": lambda t: zoo_file(t, b"name: [unclosed\n"),
    "zoo-unknown-arch": lambda t: zoo_file(t, b"name: a\narch: ResNet\n"),
    # run: options
    "run-batch-size-zero": lambda t: Case(run_args(t, "--batch-size", "0"), "--batch-size", 2),
    "run-k-zero": lambda t: Case(run_args(t, "--k", "0"), "--k", 2),
    "run-device-unknown": lambda t: Case(run_args(t, "--device", "foo"), "--device"),
    "run-limit-negative": lambda t: Case(run_args(t, "--limit", "-2"), "--limit", 2),
    "run-routing-unknown": lambda t: Case(run_args(t, "--routing", "sideways"), "--routing"),
    "run-unknown-model": lambda t: Case(run_args(t, "--model", "DeMoE-huge"), "DeMoE-huge"),
    "run-checkpoint-missing": lambda t: Case(run_args(t, "--checkpoint", str(t / "none.pt")), "none.pt"),
    "run-out-is-a-file": lambda t: (
        (t / "taken").write_text("mine")
        and Case(run_args(t, "--out", str(t / "taken")), "taken", keep=[t / "taken"])
    ),
    # tracking: an unreachable server is found before the work, in seconds
    "run-unreachable-server": lambda t: Case(
        run_args(t, "--tracking", "--tracking-uri", "http://127.0.0.1:9"), "--tracking-uri"
    ),
    "log-unreachable-server": lambda t: (
        (t / "results").mkdir()
        or Case(["log", str(t / "results"), "--tracking-uri", "http://127.0.0.1:9"], "--tracking-uri")
    ),
    # finetune: nonsensical training options never register over an entry
    "finetune-no-steps": lambda t: finetune_set(t, "train.total_iter=0", "total_iter"),
    "finetune-negative-steps": lambda t: finetune_set(t, "train.total_iter=-5", "total_iter"),
    "finetune-steps-not-a-number": lambda t: finetune_set(t, "train.total_iter=abc", "total_iter"),
    "finetune-lr-zero": lambda t: finetune_set(t, "train.lr=0", "lr"),
    "finetune-batch-size-zero": lambda t: finetune_set(t, "datasets.train.batch_size=0", "batch_size"),
    "finetune-print-freq-zero": lambda t: finetune_set(t, "logger.print_freq=0", "print_freq"),
    "zoo-width-not-a-number": lambda t: zoo_file(t, b"name: a\narch: DeMoE\nkwargs: {width: abc}\n"),
    "zoo-k-used-above-experts": lambda t: zoo_file(t, b"name: a\narch: DeMoE\nkwargs: {k_used: 9}\n"),
    "zoo-unknown-keyword": lambda t: zoo_file(t, b"name: a\narch: DeMoE\nkwargs: {depth: 3}\n"),
    "zoo-kwargs-a-list": lambda t: zoo_file(t, b"name: a\narch: DeMoE\nkwargs: [1, 2]\n"),
    "zoo-blocks-not-a-list": lambda t: zoo_file(t, b"name: a\narch: DeMoE\nkwargs: {enc_blk_nums: 3}\n"),
    "zoo-no-name": lambda t: zoo_file(t, b"arch: DeMoE\n"),
    "zoo-checkpoint-a-string": lambda t: zoo_file(t, b"name: a\narch: DeMoE\ncheckpoint: x.pt\n"),
    # benchmark manifests
    "bench-layout-a-list": lambda t: bench_manifest(t, b"name: mine\nlayout: [blur, sharp]\n", "layout"),
    "bench-files-a-number": lambda t: bench_manifest(
        t, b"name: mine\nlayout: {blurred: blur, sharp: sharp, files: 5}\n", "files 5"
    ),
    "bench-protocol-a-string": lambda t: bench_manifest(t, b"name: mine\nprotocol: rgb\n", "protocol"),
    "bench-not-utf8": lambda t: bench_manifest(t, b"name: m\xefne\n"),
    "bench-not-yaml": lambda t: bench_manifest(t, b"name: [mine\n"),
    "bench-pairs-negative": lambda t: bench_manifest(
        t, b"name: mine\nsplits: {test: {pairs: -7}}\n", "pairs must be a count"
    ),
    "bench-unknown-task": lambda t: bench_manifest(
        t, b"name: mine\ntask: motion_sickness\n", "motion_sickness"
    ),
    "bench-generated-a-list": lambda t: bench_manifest(t, b"name: mine\ngenerated: [x]\n", "generated"),
    "bench-extras-a-list": lambda t: bench_manifest(t, b"name: mine\nextras: [1]\n", "extras"),
    "bench-no-root": lambda t: write_then(
        t / "benches" / "mine.yaml",
        b"name: mine\nsplits: {test: {}}\n",
        lambda: Case(["bench", "show", "mine", "--bench-dir", str(t / "benches")], "root"),
    ),
    "bench-three-mistakes-at-once": lambda t: bench_manifest(
        t, b"name: mine\ntask: blurry\npaper_protocol: xyz\nunpaired: maybe\n", "'blurry'"
    ),
    # benchmark data
    "data-partial-benchmark": lambda t: partial_bench(t),
    "data-empty-folder-check": lambda t: (
        (t / "empty" / "blur").mkdir(parents=True)
        or (t / "empty" / "sharp").mkdir()
        or Case(["bench", "check", str(t / "empty")], "empty")
    ),
    "data-empty-folder-run": lambda t: (
        (t / "empty" / "blur").mkdir(parents=True)
        or (t / "empty" / "sharp").mkdir()
        or Case(run_args(t, folder=t / "empty"), "empty")
    ),
    "data-sharp-folder-misnamed": lambda t: (
        bench(t).joinpath("sharp").rename(t / "bench" / "gt") and Case(run_args(t, folder=t / "bench"), "gt/")
    ),
    "data-zero-byte-image": lambda t: bad_image_bench(t, lambda p: p.write_bytes(b"")),
    "data-truncated-png": lambda t: bad_image_bench(t, lambda p: p.write_bytes(png_bytes()[:60])),
    "data-text-named-png": lambda t: bad_image_bench(t, lambda p: p.write_text("not an image")),
    "data-corrupt-pixels": lambda t: bad_image_bench(t, corrupt_pixels),
    "data-decompression-bomb": lambda t: bad_image_bench(t, bomb),
    "data-size-mismatch": lambda t: bad_image_bench(t, lambda p: p.write_bytes(png_bytes((40, 24)))),
    "data-image-is-a-folder": lambda t: bad_image_bench(t, lambda p: p.mkdir()),
    "data-non-utf8-name": lambda t: bad_image_bench(
        t, lambda p: p.write_bytes(png_bytes()), name=os.fsdecode(b"caf\xe9.png")
    ),
    "data-symlink-loop": lambda t: bad_image_bench(
        t, lambda p: (p.parent / "loop").symlink_to(p.parent, target_is_directory=True) or p.write_bytes(b"")
    ),
    # checkpoints: never execute, never load half
    "checkpoint-malicious-pickle": malicious_pickle,
    "checkpoint-nan-weights": lambda t: checkpoint(t, nan_weights),
    "checkpoint-wrong-shape": lambda t: checkpoint(t, wrong_shape),
    "checkpoint-zero-bytes": lambda t: checkpoint(t, lambda p: p.write_bytes(b"")),
    "checkpoint-truncated": lambda t: checkpoint(t, lambda p: p.write_bytes(TINY_A.read_bytes()[:5000])),
    "checkpoint-random-bytes": lambda t: checkpoint(t, lambda p: p.write_bytes(os.urandom(3000))),
    "checkpoint-not-a-mapping": lambda t: checkpoint(t, lambda p: torch.save([1, 2, 3], p)),
    "checkpoint-bad-safetensors": lambda t: write_then(
        t / "weights.safetensors",
        b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}",
        lambda: Case(run_args(t, "--checkpoint", str(t / "weights.safetensors")), "weights.safetensors"),
    ),
    # PSFs for bench make
    "psf-nan": lambda t: psf_case(t, np.full((5, 5), np.nan)),
    "psf-negative": lambda t: psf_case(t, -np.ones((5, 5))),
    "psf-all-zero": lambda t: psf_case(t, np.zeros((5, 5))),
    "psf-wrong-shape": lambda t: psf_case(t, np.ones((2, 5, 5, 5))),
    "psf-object-array": lambda t: psf_case(t, np.array([{"a": 1}], dtype=object)),
    "psf-complex": lambda t: psf_case(t, np.ones((5, 5), dtype=complex)),
    "psf-corrupt-file": lambda t: psf_case(t, raw=b"\x93NUMPY garbage"),
    "psf-not-npy": lambda t: psf_case(t, raw=b"1 2 3", suffix=".txt"),
    # tracking stores and results folders
    "tracking-corrupt-db-run": lambda t: tracking_store(t, os.urandom(4096)),
    "tracking-corrupt-db-report": lambda t: tracking_store(
        t, b"SQLite formut 3\x00" + os.urandom(4096), command="report"
    ),
    "log-truncated-results": lambda t: results_folder(t, b'{"run_name": "x", "model": "DeMo'),
    "log-results-not-an-object": lambda t: results_folder(t, b"[1, 2, 3]"),
    "log-no-results-file": lambda t: results_folder(t, None),
    # sweeps and recipes
    "sweep-models-a-string": lambda t: sweep_file(t, {"models": "DeMoE", "benches": ["aio-synth"]}, "models"),
    "sweep-k-zero": lambda t: sweep_file(t, {"models": ["DeMoE"], "benches": ["aio-synth"], "k": 0}, "k"),
    "sweep-unknown-option": lambda t: sweep_file(
        t, {"models": ["DeMoE"], "benches": ["aio-synth"], "options": {"speed": 2}}, "speed"
    ),
    "recipe-not-yaml": lambda t: experiment_file(t, b"train: [1\n", "recipe.yaml"),
    "recipe-not-utf8": lambda t: experiment_file(t, b"name: caf\xe9\n", "recipe.yaml"),
    "recipe-network-bad-width": lambda t: experiment_file(
        t, b"network_g: {type: DeMoE, width: abc}\ndatasets: {train: {bench: aio-synth}}\n", "width"
    ),
    "recipe-published-datasets-a-list": lambda t: experiment_file(
        t, b"experiment_name: x\nnetwork: {name: DeMoE}\ndatasets: [train]\n", "datasets"
    ),
    "recipe-missing": lambda t: Case(["finetune", "-c", str(t / "none.yaml")], "none.yaml"),
    "finetune-betas-a-number": lambda t: finetune_set(t, "train.betas=0.9", "betas"),
    "finetune-save-freq-zero": lambda t: finetune_set(
        t, "train.save_checkpoint_freq=0", "save_checkpoint_freq"
    ),
    "finetune-unknown-option": lambda t: finetune_set(t, "train.speed=2", "speed"),
    "run-nproc-zero": lambda t: Case(run_args(t, "--nproc", "0"), "--nproc", 2),
    "run-out-read-only": lambda t: Case(run_args(t, "--out", str(read_only_dir(t) / "out")), "locked"),
    "tracking-read-only-db": lambda t: tracking_store(t, b"", mode=0o444),
}
NEEDS_NON_ROOT = {"run-out-read-only", "tracking-read-only-db"}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_is_one_error_line_and_changes_nothing(name, tmp_path):
    if name in NEEDS_NON_ROOT and ROOT:
        pytest.skip("file modes do not stop root")
    case = CASES[name](tmp_path)
    before = {path: digest(path) for path in case.keep}
    result = cli(*case.args, cwd=tmp_path)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.returncode == case.code, result.stderr
    errors = [line for line in lines if line.startswith("Error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
    assert case.names in errors[0], errors[0]
    assert {path: digest(path) for path in case.keep} == before


class _Payload(http.server.BaseHTTPRequestHandler):
    body = b"these are not the weights the zoo entry names"

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


def test_a_download_with_the_wrong_hash_keeps_the_verified_file_it_would_replace(tmp_path, isolated_home):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Payload)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/weights.pt"
        good = b"the verified weights"
        folder = zoo_entry(tmp_path, file="shared.pt", url=url, sha256=hashlib.sha256(good).hexdigest())
        kept = isolated_home / "checkpoints" / "shared.pt"
        kept.parent.mkdir(parents=True)
        kept.write_bytes(good)
        result = cli("zoo", "fetch", "Shared", "--zoo-dir", str(folder), "--force", cwd=tmp_path)
    finally:
        server.shutdown()
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("Error: download of ")
    assert "nothing was saved" in result.stderr
    assert kept.read_bytes() == good and sorted(p.name for p in kept.parent.iterdir()) == ["shared.pt"]
