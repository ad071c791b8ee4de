"""DRMI's manifest filled in: where its data comes from, the paper's published rows, their protocol; what
`bench show` and `run` say about getting the data; the new keys leave every fingerprint as it was."""

from pathlib import Path

import pytest
import yaml
from helpers import cli, write_drmi

from demoe.data.pairs import check, resolve
from demoe.paths import shipped_dir
from demoe.registry.benchmarks import BenchmarkError, load_registry, parse_spec

MANIFEST = {
    "name": "mine",
    "root": "mine",
    "layout": {"blurred": "meta", "sharp": "ground_truth"},
    "splits": {"test": {"pairs": None}},
}
ROWS = [
    {"method": "Input", "input": True, "psnr": 14.7, "std": {"psnr": 1.3}},
    {"method": "Net", "psnr": 22.1},
]
PUBLISHED_KEYS = ("origin", "published")


def test_drmi_names_its_source_and_the_papers_test_set_results():
    drmi = load_registry()["DRMI"]
    assert "github.com/yhy258/EIDL_DRMI" in drmi.origin["code"]
    assert "24634740" in drmi.origin["data"] and "figshare" in drmi.origin["data"]
    assert (
        "DRMI_dataset/train/meta" in drmi.how_to_get()
        and "DRMI_dataset/test/ground_truth" in drmi.how_to_get()
    )
    published = drmi.published
    assert published.protocol == "unknown" and published.split == "test"
    figures = {r.method: (r.metrics["psnr"], r.metrics["ssim"], r.metrics["lpips"]) for r in published.rows}
    assert figures == {
        "Metalens": (14.722, 0.464, 0.788),
        "MIRNetV2": (18.517, 0.586, 0.553),
        "SFNet": (18.231, 0.597, 0.520),
        "HINet (Local)": (21.400, 0.674, 0.449),
        "NAFNet": (21.731, 0.676, 0.436),
        "DRMI": (22.109, 0.691, 0.428),
    }
    assert published.input_row.method == "Metalens"
    assert published.input_row.std == {"psnr": 1.328, "ssim": 0.160, "lpips": 0.112}


@pytest.mark.parametrize(
    "published, message",
    [
        ({"source": "x", "rows": ROWS}, "published.protocol None: name the protocol"),
        ({"source": "x", "protocol": "srgb", "rows": ROWS}, "published.protocol 'srgb'"),
        ({"source": "x", "protocol": "unknown", "split": "val", "rows": ROWS}, "published.split 'val'"),
        (
            {"source": "x", "protocol": "unknown", "rows": [{"method": "A", "psnrr": 1.0}]},
            "give metrics among",
        ),
        (
            {"source": "x", "protocol": "rgb", "rows": [{"method": "A", "psnr": "high"}]},
            "psnr must be a number",
        ),
        (
            {"source": "x", "protocol": "rgb", "rows": [{"method": "A", "psnr": 1, "std": {"ssim": 1}}]},
            "std maps",
        ),
        ({"source": "x", "protocol": "rgb", "rows": ROWS + [ROWS[0]]}, "each method once"),
        ({"protocol": "rgb", "rows": ROWS}, "published is a mapping"),
    ],
)
def test_a_published_block_that_cannot_be_used_is_a_one_line_error(published, message):
    with pytest.raises(BenchmarkError) as info:
        parse_spec({**MANIFEST, "published": published}, Path("mine.yaml"))
    text = str(info.value)
    assert text.startswith("mine.yaml: ") and message in text and "\n" not in text


def test_the_protocol_of_published_rows_defaults_to_the_manifests_paper_protocol():
    spec = parse_spec(
        {**MANIFEST, "paper_protocol": "rgb", "published": {"source": "x", "rows": ROWS}}, Path("m")
    )
    assert spec.published.protocol == "rgb" and spec.published.input_row.metrics == {"psnr": 14.7}
    with pytest.raises(BenchmarkError, match="origin is a mapping of paper, code, data, unpack"):
        parse_spec({**MANIFEST, "origin": {"homepage": "x"}}, Path("m"))


def test_the_new_keys_leave_every_benchmarks_pairs_and_fingerprint_as_they_were(tmp_path):
    """The fingerprint hashes the pairs' names, paths and sizes, which a manifest's root, layout and splits
    decide: origin and published change none of them."""
    for path in sorted(shipped_dir("benchmarks").glob("*.yaml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        bare = {k: v for k, v in data.items() if k not in PUBLISHED_KEYS}
        full, plain = parse_spec(data, path), parse_spec(bare, path)
        assert (full.root, full.splits, full.test_split) == (plain.root, plain.splits, plain.test_split)
    data_root = write_drmi(tmp_path / "data")
    bare_dir = tmp_path / "bare"
    bare_dir.mkdir()
    drmi = yaml.safe_load((shipped_dir("benchmarks") / "DRMI.yaml").read_text(encoding="utf-8"))
    (bare_dir / "DRMI.yaml").write_text(
        yaml.safe_dump({k: v for k, v in drmi.items() if k not in PUBLISHED_KEYS})
    )
    shipped = check(resolve("DRMI", data_root=data_root))
    bare = check(resolve("DRMI", data_root=data_root, bench_dirs=[bare_dir]))
    assert shipped.pairs == 2 and shipped.fingerprint == bare.fingerprint


def test_bench_show_says_where_to_get_drmi_and_run_without_it_says_the_same_in_one_line(tmp_path):
    shown = cli("bench", "show", "DRMI", "--data-root", str(tmp_path), cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    doc = yaml.safe_load(shown.stdout)
    assert "figshare.24634740" in doc["get_the_data"] and "DRMI_dataset/test/meta" in doc["get_the_data"]
    assert doc["origin"]["code"].startswith("https://github.com/yhy258/EIDL_DRMI")
    assert doc["published"]["protocol"] == "unknown"
    assert (
        doc["published"]["rows"]["Metalens (the input)"]
        == "psnr 14.722 (1.328), ssim 0.464 (0.160), lpips 0.788 (0.112)"
    )
    assert doc["published"]["rows"]["DRMI"] == "psnr 22.109, ssim 0.691, lpips 0.428"

    missing = cli("run", "--bench", "DRMI", "--data-root", str(tmp_path), "--no-tracking", cwd=tmp_path)
    assert missing.returncode == 1
    lines = missing.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: DRMI: no data at ")
    assert doc["get_the_data"] in lines[0] and "--data-root" in lines[0]
