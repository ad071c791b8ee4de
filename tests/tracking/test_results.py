"""The results folder: records appended batch by batch, torn lines, several ranks."""

import json

from demoe.records import ImageRecord
from demoe.tracking.results import RecordsFile, read_records, unique_records


def record(name: str, psnr: float | None = None) -> ImageRecord:
    return ImageRecord("auto", name, None, 0.0, {} if psnr is None else {"psnr": psnr})


def test_a_torn_line_from_a_kill_is_dropped_and_never_counted(tmp_path):
    RecordsFile(tmp_path, 0).append([record("a", 20.0)])
    path = tmp_path / "records.rank0.jsonl"
    path.write_text(path.read_text() + '{"mode": "auto", "na')
    assert [r.name for r in read_records(tmp_path)] == ["a"]
    RecordsFile(tmp_path, 0).append([record("b", 22.0)])
    lines = path.read_text().splitlines()
    assert [json.loads(line)["name"] for line in lines] == ["a", "b"]


def test_records_of_several_ranks_are_merged_once(tmp_path):
    RecordsFile(tmp_path, 0).append([record("a"), record("c")])
    RecordsFile(tmp_path, 1).append([record("b"), record("a")])
    assert [r.name for r in unique_records(read_records(tmp_path))] == ["a", "b", "c"]


def test_a_record_reads_back_as_it_was_written(tmp_path):
    written = ImageRecord(
        "auto",
        "defocus/x",
        "defocus",
        0.25,
        {"psnr": 30.5, "lpips": 0.1},
        (0.9, 0.1, 0.0, 0.0, 0.0),
        "defocus",
        ((0,), (0,)),
    )
    RecordsFile(tmp_path, 0).append([written])
    assert read_records(tmp_path) == [written]
