"""The fast inference path gives the published outputs, and tiles give the whole image's."""

import copy
import json

import pytest
import torch
import torch.nn.functional as F

from demoe.net import DeMoE, DenseNAFNet, reference
from demoe.net.blocks import NAFBlock
from demoe.perf.networks import seeded_network
from demoe.registry import zoo
from demoe.registry.checkpoints import load_weights
from demoe.runner import inference
from demoe.vocab import TASKS

SMALL = zoo.get_entry("DeMoE-small").kwargs


def rel_diff(ours: torch.Tensor, expected: torch.Tensor) -> float:
    return float((ours - expected).abs().max() / max(1.0, expected.abs().max().item()))


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1 / ((a - b) ** 2).mean()))


def tiny_a(fixtures_dir) -> DeMoE:
    config = json.loads((fixtures_dir / "tiny_a_config.json").read_text())["config"]
    model = DeMoE(**config)
    load_weights(model, fixtures_dir / "tiny_a.pt")
    return model.eval()


def attentive_model(seed: int = 0) -> DeMoE:
    """A random DeMoE-small whose channel attention matters: large attention weights and branch scales."""
    model = seeded_network("DeMoE", SMALL, seed)
    with torch.no_grad():
        for block in model.modules():
            if isinstance(block, NAFBlock):
                block.sca[1].weight.normal_(0.0, 1.0)
                block.beta.normal_(0.0, 0.3)
    return model


def blurred_pair(height: int = 192, width: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    from skimage import data

    sharp = torch.from_numpy(data.astronaut()[100 : 100 + height, 100 : 100 + width].copy())
    sharp = sharp.permute(2, 0, 1)[None].float() / 255
    blurred = F.avg_pool2d(F.pad(sharp, (3, 3, 3, 3), mode="replicate"), 7, stride=1)
    return blurred, sharp


def test_reference_is_the_published_computation(fixtures_dir):
    expected = torch.load(fixtures_dir / "tiny_a_expected.pt", weights_only=True)
    model = tiny_a(fixtures_dir)
    with torch.inference_mode():
        for task in ("auto", "low_light"):
            out = reference.forward(model, expected["input"], task)
            assert rel_diff(out["output"], expected[f"{task}.output"]) <= 1e-6
            assert rel_diff(out["pred_labels"], expected[f"{task}.pred_labels"]) <= 1e-6


@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("precision_task", ["auto", "defocus", "per-sample"])
def test_fast_path_matches_the_reference_within_1e_5(k, precision_task):
    model = seeded_network("DeMoE", {**SMALL, "k_used": k}, seed=1)
    ours = inference.prepare(copy.deepcopy(model))
    x = torch.rand(3, 3, 40, 56) * torch.tensor([0.2, 0.6, 1.0]).view(3, 1, 1, 1)
    task = torch.tensor([0, 4, 2]) if precision_task == "per-sample" else precision_task
    with torch.inference_mode():
        expected = reference.forward(model, x, task)
    out = inference.forward(ours, x, task)
    assert out["output"].shape == x.shape
    assert rel_diff(out["output"], expected["output"]) <= 1e-5
    assert torch.equal(out["bin_counts"], expected["bin_counts"])


@pytest.mark.parametrize("channels_last", [False, True])
def test_finetuning_gets_the_gradients_of_the_published_computation(channels_last):
    model = seeded_network("DeMoE", {**SMALL, "k_used": 2}, seed=0).train()
    ours = copy.deepcopy(model)
    x = torch.rand(3, 3, 48, 48)
    if channels_last:
        ours.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    task = torch.tensor([0, 1, 2])
    torch.manual_seed(0)
    ours(x, task=task)["output"].square().mean().backward()
    torch.manual_seed(0)
    reference.forward(model, x, task)["output"].square().mean().backward()
    for (name, p), q in zip(ours.named_parameters(), model.parameters(), strict=True):
        if q.grad is not None:
            assert (p.grad - q.grad).abs().max() <= 1e-4 * q.grad.abs().max() + 1e-10, name


def test_samples_that_chose_the_same_expert_run_through_it_as_one_batch(fixtures_dir):
    model = inference.prepare(tiny_a(fixtures_dir))
    model.set_k(1)
    batches = []
    for e, expert in enumerate(model.experts[0].experts):
        expert.register_forward_hook(lambda m, args, out, e=e: batches.append((e, args[0].shape[0])))
    inference.forward(model, torch.rand(5, 3, 24, 24), task=torch.tensor([1, 3, 1, 1, 3]))
    assert sorted(batches) == [(1, 3), (3, 2)]


def test_bf16_stays_close_to_fp32_and_returns_float32():
    model = inference.prepare(seeded_network("DeMoE", SMALL, seed=2))
    x = torch.rand(1, 3, 64, 64)
    fp32 = inference.restore(model, x)
    bf16 = inference.restore(model, x, precision="bf16")
    assert bf16["output"].dtype == torch.float32
    assert rel_diff(bf16["output"], fp32["output"]) < 0.05
    assert torch.equal(bf16["pred_labels"].argmax(1), fp32["pred_labels"].argmax(1))


def test_precision_and_tile_mistakes_are_one_line_errors():
    model = inference.prepare(seeded_network("DeMoE", SMALL, seed=0))
    with pytest.raises(inference.InferenceError, match="needs a CUDA device"):
        inference.restore(model, torch.rand(1, 3, 32, 32), precision="fp16")
    with pytest.raises(inference.InferenceError, match="--precision fp64"):
        inference.restore(model, torch.rand(1, 3, 32, 32), precision="fp64")
    with pytest.raises(inference.InferenceError, match="--tile 32: must be larger than --tile-overlap"):
        inference.restore(model, torch.rand(1, 3, 64, 64), tile=32, overlap=32)


@pytest.mark.parametrize(("height", "width", "tile", "overlap"), [(192, 256, 96, 32), (48, 400, 128, 16)])
def test_tiles_cover_the_image_on_the_downsampling_grid(height, width, tile, overlap):
    grid = inference.tile_grid(height, width, tile, overlap, align=16)
    seen = torch.zeros(height, width, dtype=torch.int64)
    for t in grid:
        assert t.top % 16 == 0 and t.left % 16 == 0
        assert t.top + t.height <= height and t.left + t.width <= width
        top, bottom, left, right = t.core
        assert t.top <= top < bottom <= t.top + t.height and t.left <= left < right <= t.left + t.width
        seen[top:bottom, left:right] += 1
    assert torch.equal(seen, torch.ones_like(seen)), "the tiles' cores must partition the image"
    tops = sorted({t.top for t in grid})
    assert all(b - a <= tile - overlap for a, b in zip(tops, tops[1:], strict=False))


def test_tiled_and_whole_outputs_agree_within_0_1_db():
    model = inference.prepare(attentive_model())
    blurred, sharp = blurred_pair()
    whole = inference.restore(model, blurred)["output"]
    tiled = inference.restore(model, blurred, tile=96, overlap=32, routing_side=128)
    assert tiled["output"].shape == whole.shape
    assert abs(psnr(tiled["output"], sharp) - psnr(whole, sharp)) < 0.1
    assert psnr(tiled["output"], whole) > 50
    assert (tiled["output"] - whole).abs().max() < 0.05, "a seam: tiles disagree with the whole image"


def test_two_pass_attention_follows_the_whole_image_better_than_the_shrunk_image():
    model = inference.prepare(attentive_model())
    blurred, _ = blurred_pair()
    whole = inference.restore(model, blurred, task="defocus")["output"]
    kwargs = {"task": "defocus", "tile": 96, "overlap": 32, "routing_side": 96}
    two_pass = inference.restore(model, blurred, attention="two-pass", **kwargs)["output"]
    one_pass = inference.restore(model, blurred, attention="one-pass", **kwargs)["output"]
    assert psnr(two_pass, whole) > psnr(one_pass, whole) + 2


def test_an_image_no_larger_than_the_routing_side_is_restored_whole():
    model = inference.prepare(attentive_model())
    blurred, _ = blurred_pair(96, 160)
    whole = inference.restore(model, blurred)["output"]
    assert torch.equal(
        inference.restore(model, blurred, tile=64, overlap=16, routing_side=160)["output"], whole
    )


def test_routing_is_decided_once_on_the_shrunk_image_and_applied_to_every_tile():
    model = inference.prepare(attentive_model(seed=3))
    blurred, _ = blurred_pair()
    shrunk = F.interpolate(blurred, size=(48, 64), mode="bilinear", antialias=True, align_corners=False)
    decided = inference.forward(model, shrunk)["pred_labels"]
    used = []
    for e, expert in enumerate(model.experts[-1].experts):
        expert.register_forward_hook(lambda m, args, out, e=e: used.append(e))
    out = inference.restore(model, blurred, tile=96, overlap=32, routing_side=64)
    tiles = len(inference.tile_grid(192, 256, 96, 32, model.padder_size))
    assert torch.allclose(out["pred_labels"], decided)
    assert used == [int(decided.argmax())] * (1 + 2 * tiles)


def test_tiled_batch_with_per_sample_tasks_matches_each_image_alone():
    model = inference.prepare(attentive_model())
    blurred, _ = blurred_pair(96, 160)
    batch = torch.cat([blurred, blurred.flip(-1)])
    labels = torch.tensor([0, 4])
    out = inference.restore(model, batch, task=labels, tile=64, overlap=16, routing_side=64)
    assert out["output"].shape == batch.shape
    assert out["bin_counts"].sum(dim=1).tolist() == [2] * len(model.experts)
    for i, label in enumerate(labels.tolist()):
        alone = inference.restore(
            model, batch[i : i + 1], task=TASKS[label], tile=64, overlap=16, routing_side=64
        )
        assert torch.allclose(out["output"][i : i + 1], alone["output"], atol=1e-6)


def test_the_dense_baseline_restores_in_tiles_too():
    torch.manual_seed(0)
    model = inference.prepare(DenseNAFNet(width=8, enc_blk_nums=[1, 1], dec_blk_nums=[1, 1]))
    x, _ = blurred_pair(90, 150)
    whole = inference.restore(model, x)["output"]
    tiled = inference.restore(model, x, tile=64, overlap=16, routing_side=64)["output"]
    assert tiled.shape == x.shape
    assert psnr(tiled, whole) > 45


def test_compile_is_opt_in_on_a_cpu():
    cpu = torch.device("cpu")
    assert not inference.use_compile("auto", cpu) and not inference.use_compile("off", cpu)
    assert inference.use_compile("on", cpu)
    with pytest.raises(inference.InferenceError, match="--compile fast: expected one of auto, on, off"):
        inference.use_compile("fast", cpu)


@pytest.mark.slow
def test_compiled_path_matches_the_reference_on_images_of_two_sizes(fixtures_dir):
    model = tiny_a(fixtures_dir)
    compiled = inference.prepare(copy.deepcopy(model), compile_mode="on")
    for size in ((32, 48), (48, 64)):
        x = torch.rand(1, 3, *size)
        with torch.inference_mode():
            expected = reference.forward(model, x)["output"]
        assert rel_diff(inference.forward(compiled, x)["output"], expected) <= 1e-5
