"""A benchmark's published results beside ours in the report's main table, marked "as published", and the
one sentence saying when our identity row is far from the published input row."""

import io

import pandas as pd

from demoe.registry.benchmarks import load_registry
from demoe.report import formats, tables
from demoe.report.collect import Collection, EvalRun, ModeResult
from demoe.report.published import add_published_rows, input_gap_note, published_results


def eval_run(bench: str, identity_psnr: float, split: str = "test") -> EvalRun:
    modes = {
        "identity": ModeResult("identity", {"psnr": identity_psnr, "ssimc": 0.5}, images=40),
        "oracle": ModeResult("oracle", {"psnr": identity_psnr + 3, "ssimc": 0.6}, images=40),
    }
    return EvalRun(
        run_id="r1",
        label="DeMoE-DRMI",
        model="DeMoE-DRMI",
        bench=bench,
        split=split,
        k=None,
        checkpoint_sha256="0" * 64,
        bench_fingerprint="f" * 16,
        start_time=0,
        modes=modes,
        metrics_requested=["psnr", "ssimc"],
    )


def main_csv(evals: list[EvalRun]) -> tuple[pd.DataFrame, formats.Table]:
    table = tables.main_table(Collection("test store", evals, []))
    add_published_rows(table, evals, published_results(r.bench for r in evals))
    frame = pd.read_csv(io.StringIO(formats.to_csv(table)), keep_default_na=False).set_index(
        ["model", "routing"]
    )
    return frame, table


def test_drmi_rows_as_published_sit_beside_ours_and_their_source_and_protocol_are_noted():
    frame, table = main_csv([eval_run("DRMI", 14.9)])
    published = frame.xs("as published", level="routing")
    assert list(published.index) == [
        "Metalens (paper)",
        "MIRNetV2 (paper)",
        "SFNet (paper)",
        "HINet (Local) (paper)",
        "NAFNet (paper)",
        "DRMI (paper)",
    ]
    assert float(published.loc["DRMI (paper)", "DRMI/psnr"]) == 22.109
    assert (
        float(published.loc["Metalens (paper)", "DRMI/ssimc"]) == 0.464
    )  # the paper's SSIM, in our SSIM column
    assert float(frame.loc[("DeMoE-DRMI", "oracle"), "DRMI/psnr"]) == 17.9
    markdown = formats.to_markdown(table)
    assert markdown.count("| as published |") == 6 and "**22.11**" not in markdown, (
        "published rows are not ranked"
    )
    note = next(n for n in table.notes if n.startswith("DRMI rows marked (paper)"))
    assert "protocol not known here" in note and "Metalens PSNR 1.328, SSIM 0.160, LPIPS 0.112." in note
    assert not any("the blurred input scores" in n for n in table.notes), "14.9 dB is near the paper's 14.722"


def test_an_identity_row_far_from_the_published_input_row_is_said_in_one_sentence():
    _, table = main_csv([eval_run("DRMI", 27.31)])
    gap = [n for n in table.notes if "the blurred input scores" in n]
    assert len(gap) == 1 and gap[0].count(". ") == 0 and gap[0].endswith(".")
    assert (
        "27.31 dB PSNR here (40 images) against 14.72 dB in the published Metalens row (+12.59 dB)" in gap[0]
    )
    drmi = load_registry()["DRMI"].published
    assert input_gap_note([eval_run("DRMI", 15.7)], "DRMI", drmi) is None
    assert input_gap_note([eval_run("DRMI", 13.7)], "DRMI", drmi) is not None


def test_no_published_rows_for_another_split_or_a_benchmark_without_them():
    frame, table = main_csv([eval_run("DRMI", 30.0, split="train"), eval_run("GoPro", 25.0)])
    assert "as published" not in set(frame.index.get_level_values("routing"))
    assert not any("rows marked (paper)" in n or "blurred input scores" in n for n in table.notes)
