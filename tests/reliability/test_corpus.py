"""Bad input, as a careless or hostile user gives it, through the CLI in a subprocess: each case must end
with exit code 1 (2 for a usage error), one ``Error:`` line on stderr that names the file or option, no
traceback, and nothing previously computed changed."""

import hashlib
import http.server
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import TINY_A, cli, write_pairs


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
        h.update(str(file.relative_to(path.parent)).encode() + b"\0" + file.read_bytes())
    return h.hexdigest()


# ------------------------------------------------------------------------------------------ the makers


def bench(tmp: Path, count: int = 2) -> Path:
    write_pairs(tmp / "bench", count, np.random.default_rng(0))
    return tmp / "bench"


def run_args(tmp: Path, *extra: str) -> list[str]:
    return ["run", "--model", "DeMoE-tiny", "--checkpoint", str(TINY_A), "--bench", str(bench(tmp))] + [
        "--metrics",
        "psnr",
        "--workers",
        "0",
        "--no-tracking",
        "--out",
        str(tmp / "out"),
        *extra,
    ]


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


def finetune_set(tmp: Path, assignment: str, names: str) -> Case:
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
        "--register-dir",
        str(zoo),
        "--no-tracking",
    ]
    return Case(args + ["--out", str(tmp / "run")], names, keep=[existing])


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
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_is_one_error_line_and_changes_nothing(name, tmp_path):
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
