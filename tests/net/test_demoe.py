"""DeMoE reproduces the published architecture: keys, parameter count, FLOPs and golden outputs."""

import json

import pytest
import torch

from demoe.net import DeMoE, DenseNAFNet
from demoe.registry.checkpoints import load_weights
from demoe.vocab import TASKS


def config_a(fixtures_dir) -> dict:
    return json.loads((fixtures_dir / "tiny_a_config.json").read_text())["config"]


def tiny_a(fixtures_dir, checkpoint="tiny_a.pt") -> DeMoE:
    model = DeMoE(**config_a(fixtures_dir))
    load_weights(model, fixtures_dir / checkpoint)
    return model.eval()


def assert_close_rel(ours, expected, rel=1e-5):
    scale = max(1.0, expected.abs().max().item())
    assert (ours - expected).abs().max().item() <= rel * scale


def test_official_config_has_published_keys_shapes_and_parameter_count(fixtures_dir):
    manifest = json.loads((fixtures_dir / "official_state_dict_manifest.json").read_text())
    model = DeMoE(**manifest["config"])
    state = model.state_dict()
    assert [(k, list(v.shape), str(v.dtype).replace("torch.", "")) for k, v in state.items()] == [
        (e["key"], e["shape"], e["dtype"]) for e in manifest["entries"]
    ]
    assert sum(p.numel() for p in model.parameters()) == manifest["num_parameters"] == 20_150_665


@pytest.mark.parametrize("checkpoint", ["tiny_a.pt", "tiny_a_module.pt"])
@pytest.mark.parametrize("task", ["auto", "low_light"])
def test_reproduces_golden_outputs(fixtures_dir, checkpoint, task):
    expected = torch.load(fixtures_dir / "tiny_a_expected.pt", weights_only=True)
    model = tiny_a(fixtures_dir, checkpoint)
    with torch.inference_mode():
        out = model(expected["input"], task=task)
    assert out["output"].shape == expected["input"].shape
    assert_close_rel(out["output"], expected[f"{task}.output"])
    assert_close_rel(out["pred_labels"], expected[f"{task}.pred_labels"])
    for i, weights in enumerate(out["weights"]):
        assert_close_rel(weights, expected[f"{task}.weights.{i}"])
    if task == "auto":
        assert torch.equal(out["bin_counts"], expected["auto.bin_counts"])


def test_forced_task_with_k2_runs_only_the_forced_expert(fixtures_dir):
    model = tiny_a(fixtures_dir)
    calls = []
    for block in model.experts:
        for e, expert in enumerate(block.experts):
            expert.register_forward_hook(lambda m, i, o, e=e: calls.append(e))
    with torch.inference_mode():
        model(torch.rand(2, 3, 32, 32), task="global_motion")
    assert set(calls) == {TASKS.index("global_motion")}


def make_router_input_dependent(model: DeMoE) -> None:
    """Replace the router's last layer so that routing follows the image's mean brightness."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Linear) and m.out_features == model.num_experts:
                m.weight.normal_(0, 3.0)
                m.bias.zero_()


def test_each_sample_of_a_mixed_batch_matches_running_it_alone(fixtures_dir):
    torch.manual_seed(3)
    model = tiny_a(fixtures_dir)
    make_router_input_dependent(model)
    x = torch.rand(6, 3, 40, 36) * torch.linspace(0.1, 1.0, 6).view(6, 1, 1, 1)
    with torch.inference_mode():
        batch = model(x)
        chosen = batch["pred_labels"].topk(model.k_used, dim=1).indices
        assert len({tuple(sorted(c.tolist())) for c in chosen}) > 1, (
            "the test needs samples that pick different experts"
        )
        for i in range(x.shape[0]):
            alone = model(x[i : i + 1])
            assert_close_rel(batch["output"][i : i + 1], alone["output"])
            assert torch.equal(alone["pred_labels"].topk(model.k_used).indices, chosen[i : i + 1])


def test_per_sample_forced_tasks_match_forcing_each_sample_alone(fixtures_dir):
    model = tiny_a(fixtures_dir)
    x = torch.rand(3, 3, 24, 24)
    labels = torch.tensor([0, 4, 2])
    with torch.inference_mode():
        mixed = model(x, task=labels)["output"]
        for i, label in enumerate(labels.tolist()):
            assert_close_rel(mixed[i : i + 1], model(x[i : i + 1], task=TASKS[label])["output"])


def test_set_k_changes_bin_counts(fixtures_dir):
    model = tiny_a(fixtures_dir)
    model.set_k(3)
    with torch.inference_mode():
        out = model(torch.rand(2, 3, 16, 16))
    assert out["bin_counts"].sum(dim=1).tolist() == [6] * len(model.experts)
    with pytest.raises(ValueError, match="k must be between 1 and 5"):
        model.set_k(6)


def test_unknown_task_names_the_valid_ones(fixtures_dir):
    model = tiny_a(fixtures_dir)
    with pytest.raises(ValueError, match="defocus, global_motion"):
        model(torch.rand(1, 3, 8, 8), task="motion")


def test_dense_baseline_keeps_the_shape_and_refuses_forced_tasks():
    model = DenseNAFNet(width=8, enc_blk_nums=[1, 1], dec_blk_nums=[1, 1]).eval()
    with torch.inference_mode():
        out = model(torch.rand(1, 3, 37, 45))
    assert out["output"].shape == (1, 3, 37, 45)
    with pytest.raises(ValueError, match="no experts"):
        model(torch.rand(1, 3, 8, 8), task="defocus")


def test_the_keyword_schema_zoo_files_are_checked_against_is_each_constructors_own():
    import inspect

    from demoe.net import ARCHITECTURES
    from demoe.vocab import ARCHITECTURE_KWARGS

    for name, cls in ARCHITECTURES.items():
        assert list(ARCHITECTURE_KWARGS[name]) == list(inspect.signature(cls).parameters)
