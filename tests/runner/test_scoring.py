"""The runner's routing modes and batches."""

import pytest

from demoe.runner.scoring import EvaluationError, parse_routing, size_batches


def test_default_routing_depends_on_labels_and_router():
    assert parse_routing(None, bench_label_available=True, has_router=True) == ["auto", "oracle"]
    assert parse_routing(None, bench_label_available=False, has_router=True) == ["auto"]
    assert parse_routing(None, bench_label_available=True, has_router=False) == ["auto"]


def test_routing_all_expands_and_skips_oracle_without_labels():
    assert parse_routing("all", True, True) == [
        "auto",
        "oracle",
        "defocus",
        "global_motion",
        "local_motion",
        "synth_global_motion",
        "low_light",
    ]
    assert "oracle" not in parse_routing("all", False, True)
    assert parse_routing("low_light,auto,low_light", False, True) == ["low_light", "auto"]


@pytest.mark.parametrize(
    "value,labelled,router,message",
    [
        ("blur", True, True, "unknown mode 'blur'"),
        ("oracle", False, True, "no task labels"),
        ("defocus", True, False, "no router"),
    ],
)
def test_bad_routing_is_one_sentence(value, labelled, router, message):
    with pytest.raises(EvaluationError, match=message):
        parse_routing(value, labelled, router)


def test_batches_group_equal_sizes_only():
    sizes = [(8, 8), (8, 8), (16, 8), (8, 8), (16, 8)]
    batches = size_batches(sizes, 2)
    assert sorted(i for b in batches for i in b) == [0, 1, 2, 3, 4]
    for batch in batches:
        assert len({sizes[i] for i in batch}) == 1 and len(batch) <= 2
