import hashlib
import http.server
import subprocess
import sys
import threading
from functools import partial
from pathlib import Path

import pytest
import torch
import yaml

from demoe.registry import build, zoo
from demoe.registry.checkpoints import CheckpointError
from demoe.registry.zoo import ZooError

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args: str, env=None, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "demoe.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=300,
    )


@pytest.fixture
def file_server(tmp_path):
    """A real HTTP server on 127.0.0.1 serving tmp_path/served."""
    served = tmp_path / "served"
    served.mkdir()
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def write_zoo(folder: Path, url: str, sha256: str, size: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    entry = {
        "name": "Tiny-remote",
        "arch": "DeMoE",
        "kwargs": dict(
            img_channel=3,
            width=8,
            middle_blk_num=1,
            enc_blk_nums=[1, 1],
            dec_blk_nums=[1, 1],
            num_exp=5,
            k_used=2,
        ),
        "checkpoint": {"file": "tiny_remote.pt", "url": url, "sha256": sha256, "size": size},
    }
    (folder / "remote.yaml").write_text(yaml.safe_dump({"models": [entry]}))


def test_shipped_zoo_has_the_published_entries():
    entries = zoo.load_zoo()
    official = entries["DeMoE"]
    assert official.checkpoint.sha256 == "5b0aef148ffcb1a5572b4da6cbd33f86ed2e18639db28b46838aae46bcd011a5"
    assert official.checkpoint.size == 80_848_778
    assert official.checkpoint.url == "https://huggingface.co/spaces/Cidaut/DeMoE/resolve/main/DeMoE.pt"
    assert [entries[f"DeMoE-k{k}"].k_used for k in (2, 3, 5)] == [2, 3, 5]
    assert entries["NAFNet-baseline"].arch == "DenseNAFNet"


def test_unknown_name_suggests_close_names():
    with pytest.raises(ZooError, match="Did you mean: DeMoE"):
        zoo.get_entry("DeMoe")


def test_missing_checkpoint_says_where_it_looked_and_how_to_fetch(isolated_home):
    with pytest.raises(ZooError) as err:
        build.create_model("DeMoE-k2")
    message = str(err.value)
    assert str(isolated_home / "checkpoints" / "DeMoE.pt") in message
    assert "demoe-eval zoo fetch DeMoE-k2" in message and "huggingface.co" in message


def test_checkpoint_resolution_order(tmp_path, isolated_home, fixtures_dir, monkeypatch):
    entry = zoo.ZooEntry(name="t", arch="DeMoE", kwargs={}, checkpoint=zoo.CheckpointSource(file="t.pt"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    local = tmp_path / "models" / "t.pt"
    local.write_bytes(b"x")
    assert zoo.resolve_checkpoint(entry) == Path("models/t.pt")
    home = isolated_home / "checkpoints" / "t.pt"
    home.parent.mkdir()
    home.write_bytes(b"x")
    assert zoo.resolve_checkpoint(entry) == home
    assert zoo.resolve_checkpoint(entry, fixtures_dir / "tiny_a.pt") == fixtures_dir / "tiny_a.pt"


def test_fetch_downloads_verifies_and_loads(file_server, tmp_path, fixtures_dir, isolated_home):
    served, base = file_server
    data = (fixtures_dir / "tiny_a.pt").read_bytes()
    (served / "tiny.pt").write_bytes(data)
    zoo_dir = tmp_path / "myzoo"
    write_zoo(zoo_dir, f"{base}/tiny.pt", hashlib.sha256(data).hexdigest(), len(data))

    result = run_cli("zoo", "fetch", "Tiny-remote", "--zoo-dir", str(zoo_dir))
    assert result.returncode == 0, result.stderr
    dest = isolated_home / "checkpoints" / "tiny_remote.pt"
    assert dest.read_bytes() == data
    model, entry, path = build.create_model("Tiny-remote", zoo=zoo.load_zoo([zoo_dir]))
    assert path == dest and entry.k_used == 2
    assert model(torch.rand(1, 3, 16, 16))["output"].shape == (1, 3, 16, 16)


def test_fetch_rejects_a_wrong_hash_and_leaves_no_file(file_server, tmp_path, fixtures_dir, isolated_home):
    served, base = file_server
    data = (fixtures_dir / "tiny_a.pt").read_bytes()
    (served / "tiny.pt").write_bytes(data)
    zoo_dir = tmp_path / "myzoo"
    write_zoo(zoo_dir, f"{base}/tiny.pt", "0" * 64, len(data))

    result = run_cli("zoo", "fetch", "Tiny-remote", "--zoo-dir", str(zoo_dir))
    assert result.returncode == 1
    assert "expected 0000" in result.stderr and "nothing was saved" in result.stderr
    assert "Traceback" not in result.stderr
    folder = isolated_home / "checkpoints"
    assert not folder.exists() or list(folder.iterdir()) == []


def test_offline_fetch_is_one_actionable_line(tmp_path):
    zoo_dir = tmp_path / "myzoo"
    write_zoo(zoo_dir, "http://127.0.0.1:9/none.pt", "0" * 64, 10)
    result = run_cli("zoo", "fetch", "Tiny-remote", "--zoo-dir", str(zoo_dir))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "could not download http://127.0.0.1:9/none.pt" in lines[0]
    assert "put it at" in lines[0]


@pytest.mark.slow
def test_zoo_list_prints_the_table():
    result = run_cli("zoo", "list")
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines()[1:]}
    assert rows["DeMoE"][2:5] == ["20.15M", "21.69", "1"]
    assert rows["DeMoE"][5] == "missing"
    assert rows["DeMoE-k5"][4] == "5"


def test_help_lists_commands_quickly():
    result = run_cli("--help")
    assert result.returncode == 0 and "zoo" in result.stdout
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import demoe.cli"], capture_output=True, text=True
    )
    heavy = [
        line
        for line in out.stderr.splitlines()
        if any(f" {m}" in line.split("|")[-1] for m in ("torch", "pyiqa", "mlflow"))
    ]
    assert heavy == [], "the CLI must not import heavy libraries at start-up"


def test_flops_of_the_official_configuration_are_the_published_count(fixtures_dir):
    import json

    manifest = json.loads((fixtures_dir / "official_state_dict_manifest.json").read_text())
    model = build.build_model(zoo.get_entry("DeMoE")).eval()
    assert build.count_flops(model, 256) == manifest["flops_256_torch_flop_counter"]


@pytest.mark.parametrize("name", ["DeMoE-tiny", "NAFNet-small"])
def test_flops_from_two_small_sides_equal_a_direct_count(name):
    from torch.utils.flop_counter import FlopCounterMode

    model = build.build_model(zoo.get_entry(name)).eval()
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(torch.rand(1, 3, 192, 192))
    assert build.count_flops(model, 192) == counter.get_total_flops()


@pytest.mark.parametrize("name", sorted(zoo.load_zoo([zoo.shipped_dir("zoo")])))
def test_shipped_stats_are_what_the_flop_counter_counts(name):
    entry = zoo.get_entry(name)
    assert {"params", "flops_256"} <= entry.stats.keys(), f"{entry.source}: {name} ships no stats"
    model = build.build_model(entry).eval()
    assert entry.stats["params"] == sum(p.numel() for p in model.parameters())
    assert entry.stats["flops_256"] == build.count_flops(model, 256)


def test_every_shipped_entry_with_weights_names_their_licence():
    entries = zoo.load_zoo([zoo.shipped_dir("zoo")])
    with_weights = [e for e in entries.values() if e.checkpoint is not None]
    assert with_weights and all(e.licence for e in with_weights)
    assert "CC BY-NC-SA 4.0" in entries["DeMoE"].licence and "non-commercial" in entries["DeMoE"].licence


def test_zoo_show_prints_the_licence_of_the_weights():
    done = run_cli("zoo", "show", "DeMoE-k2")
    assert done.returncode == 0, done.stderr
    assert yaml.safe_load(done.stdout)["licence"].startswith("CC BY-NC-SA 4.0")


def test_zoo_list_that_finds_no_zoo_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setattr(zoo, "shipped_dir", lambda name: tmp_path / "missing")
    with pytest.raises(ZooError, match="installation is incomplete"):
        zoo.zoo_dirs()


TINY_KWARGS = dict(
    img_channel=3, width=8, middle_blk_num=1, enc_blk_nums=[1, 1], dec_blk_nums=[1, 1], num_exp=5, k_used=2
)


def write_entry(folder: Path, checkpoint: dict) -> dict[str, zoo.ZooEntry]:
    folder.mkdir(parents=True, exist_ok=True)
    entry = {"name": "Tiny-basicsr", "arch": "DeMoE", "kwargs": TINY_KWARGS, "checkpoint": checkpoint}
    (folder / "mine.yaml").write_text(yaml.safe_dump(entry))
    return zoo.load_zoo([folder])


def test_zoo_checkpoint_param_key_and_cast_weights_choose_how_its_own_file_loads(tmp_path, fixtures_dir):
    state = torch.load(fixtures_dir / "tiny_a.pt", weights_only=True)["params"]
    ema = {k: (v * 0.5).half() if v.is_floating_point() else v for k, v in state.items()}
    folder = tmp_path / "myzoo"
    (folder / "weights").mkdir(parents=True)
    torch.save({"params": state, "params_ema": ema}, folder / "weights" / "both.pt")
    shipped = {"file": "both.pt", "path": "weights/both.pt"}

    entries = write_entry(folder, {**shipped, "param_key": "params_ema", "cast_weights": True})
    loaded = build.load_model("Tiny-basicsr", zoo=entries)
    assert loaded.weights.param_key == "params_ema" and loaded.weights.cast
    assert torch.equal(loaded.model.intro.bias, ema["intro.bias"].float())
    # the command line wins; a --checkpoint is another file, which the entry's settings do not describe
    assert build.load_model("Tiny-basicsr", zoo=entries, param_key="params").weights.param_key == "params"
    other = build.load_model("Tiny-basicsr", checkpoint=fixtures_dir / "tiny_a.pt", zoo=entries)
    assert other.weights.param_key == "params" and other.weights.cast == {}

    entries = write_entry(folder, {**shipped, "param_key": "params_ema"})
    with pytest.raises(CheckpointError, match=r"both\.pt: .* tensors are stored in another dtype"):
        build.load_model("Tiny-basicsr", zoo=entries)
    assert build.load_model("Tiny-basicsr", zoo=entries, cast_weights=True).weights.param_key == "params_ema"
    assert build.load_model("Tiny-basicsr", zoo=write_entry(folder, shipped)).weights.param_key == "params"


def test_zoo_checkpoint_param_key_and_cast_weights_are_validated(tmp_path):
    with pytest.raises(ZooError) as err:
        write_entry(tmp_path / "bad", {"file": "x.pt", "param_key": 3, "cast_weights": "yes"})
    message = str(err.value)
    assert message.startswith(f"{tmp_path / 'bad' / 'mine.yaml'}: entry 'Tiny-basicsr', checkpoint: ")
    assert (
        "param_key 3 must name the file's entry" in message and "cast_weights 'yes' must be true" in message
    )
    with pytest.raises(ZooError, match="param_key '' must name"):
        write_entry(tmp_path / "bad", {"file": "x.pt", "param_key": ""})
