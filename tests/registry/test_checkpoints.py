import re
import shutil

import pytest
import torch

from demoe.net import DeMoE
from demoe.registry.checkpoints import (
    CheckpointError,
    load_checkpoint,
    load_weights,
    read_checkpoint,
    save_checkpoint,
)

CONFIG_A = dict(
    img_channel=3, width=8, middle_blk_num=1, enc_blk_nums=[1, 1], dec_blk_nums=[1, 1], num_exp=5, k_used=2
)


def reference_state(fixtures_dir) -> dict:
    return torch.load(fixtures_dir / "tiny_a.pt", weights_only=True)["params"]


def outputs(model, x):
    with torch.inference_mode():
        return model.eval()(x)["output"]


@pytest.fixture
def x():
    return torch.rand(1, 3, 20, 20, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(
    "layout",
    [
        lambda sd: {"params": sd, "epoch": 7},
        lambda sd: {"params_ema": sd, "iter": 100},
        lambda sd: sd,
        lambda sd: {"params": {f"module.{k}": v for k, v in sd.items()}},
        lambda sd: {"state_dict": {f"_orig_mod.{k}": v for k, v in sd.items()}},
    ],
    ids=["published", "basicsr-ema", "bare", "ddp-prefix", "compiled"],
)
def test_every_layout_loads_the_same_weights(tmp_path, fixtures_dir, x, layout):
    path = tmp_path / "ckpt.pth"
    torch.save(layout(reference_state(fixtures_dir)), path)
    ours, ref = DeMoE(**CONFIG_A), DeMoE(**CONFIG_A)
    load_weights(ours, path)
    load_weights(ref, fixtures_dir / "tiny_a.pt")
    assert torch.equal(outputs(ours, x), outputs(ref, x))


def test_safetensors_roundtrip_and_published_layout(tmp_path, fixtures_dir, x):
    ref = DeMoE(**CONFIG_A)
    meta = load_weights(ref, fixtures_dir / "tiny_a.pt")
    assert meta == {"epoch": 7, "best_psnr": 28.5}
    for name in ["copy.safetensors", "copy.pth"]:
        save_checkpoint(tmp_path / name, ref, epoch=3, best_psnr=30.0)
        again = DeMoE(**CONFIG_A)
        load_weights(again, tmp_path / name)
        assert torch.equal(outputs(again, x), outputs(ref, x))
    published = torch.load(tmp_path / "copy.pth", weights_only=True)
    assert set(published) == {"params", "epoch", "best_psnr"}
    assert list(tmp_path.glob(".*tmp")) == []


def test_mismatch_lists_missing_unexpected_and_wrong_shape_keys(tmp_path, fixtures_dir):
    state = dict(reference_state(fixtures_dir))
    state.pop("intro.bias")
    state["extra.weight"] = torch.zeros(1)
    state["ending.bias"] = torch.zeros(4)
    torch.save({"params": state}, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError) as err:
        load_weights(DeMoE(**CONFIG_A), tmp_path / "bad.pt")
    message = str(err.value)
    assert "bad.pt" in message and "\n" not in message
    assert "1 missing (intro.bias)" in message
    assert "1 unexpected (extra.weight)" in message
    assert "ending.bias (4,) vs model (3,)" in message


def test_truncated_files_are_named_as_damaged(tmp_path, fixtures_dir):
    data = (fixtures_dir / "tiny_a.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"cut\.pt: the checkpoint is damaged or truncated"):
        read_checkpoint(tmp_path / "cut.pt")
    save_checkpoint(tmp_path / "w.safetensors", reference_state(fixtures_dir))
    cut = (tmp_path / "w.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(cut[:1000])
    with pytest.raises(CheckpointError, match=r"cut\.safetensors: the safetensors file is damaged"):
        read_checkpoint(tmp_path / "cut.safetensors")


class Payload:
    def __reduce__(self):
        return (shutil.rmtree, ("/nonexistent-demoe-path",))


def test_pickles_that_need_code_are_refused(tmp_path):
    torch.save({"params": {}, "evil": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="would execute pickled code"):
        read_checkpoint(tmp_path / "evil.pt")


@pytest.mark.parametrize(
    "change,reported",
    [
        (lambda s: s.pop("intro.bias"), "1 missing (intro.bias)"),
        (lambda s: s.__setitem__("extra.weight", torch.zeros(1)), "1 unexpected (extra.weight)"),
        (lambda s: s.__setitem__("ending.bias", torch.zeros(4)), "ending.bias (4,) vs model (3,)"),
    ],
    ids=["missing", "unexpected", "wrong-shape"],
)
def test_each_kind_of_key_mismatch_alone_is_refused(tmp_path, fixtures_dir, change, reported):
    state = dict(reference_state(fixtures_dir))
    change(state)
    torch.save({"params": state}, tmp_path / "one_problem.pt")
    model = DeMoE(**CONFIG_A)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match=re.escape(reported)):
        load_weights(model, tmp_path / "one_problem.pt")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_fp16_weights_are_refused_unless_cast_and_then_cast_as_recorded(tmp_path, fixtures_dir, x):
    state = reference_state(fixtures_dir)
    half = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    torch.save({"params": half}, tmp_path / "half.pt")
    model = DeMoE(**CONFIG_A)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError) as err:
        load_weights(model, tmp_path / "half.pt")
    floats = sum(v.is_floating_point() for v in state.values())
    message = str(err.value)
    assert "half.pt" in message and "\n" not in message and "--cast-weights" in message
    assert (
        f"{floats} tensors are stored in another dtype" in message and f"{floats} float16->float32" in message
    )
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())

    loaded = load_checkpoint(model, tmp_path / "half.pt", cast_weights=True)
    assert loaded.cast == {"float16->float32": floats}
    assert all(v.dtype == torch.float32 for v in model.state_dict().values() if v.is_floating_point())
    rounded = DeMoE(**CONFIG_A)
    rounded.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in half.items()})
    assert torch.equal(outputs(model, x), outputs(rounded, x))
    assert load_checkpoint(DeMoE(**CONFIG_A), fixtures_dir / "tiny_a.pt").cast == {}


@pytest.mark.parametrize("prefix", ["module.", "_orig_mod."])
def test_a_key_both_with_and_without_the_ddp_prefix_is_refused(tmp_path, fixtures_dir, prefix):
    state = dict(reference_state(fixtures_dir))
    state[f"{prefix}intro.bias"] = state["intro.bias"] + 1
    torch.save({"params": state}, tmp_path / "both.pt")
    with pytest.raises(CheckpointError) as err:
        load_weights(DeMoE(**CONFIG_A), tmp_path / "both.pt")
    message = str(err.value)
    assert message.startswith(f"{tmp_path / 'both.pt'}: keys 'intro.bias' and '{prefix}intro.bias' are both")
    assert "\n" not in message


def test_params_or_params_ema_is_chosen_by_param_key(tmp_path, fixtures_dir, x):
    state = reference_state(fixtures_dir)
    ema = {k: v * 0.5 if v.is_floating_point() else v for k, v in state.items()}
    torch.save({"params": state, "params_ema": ema, "iter": 9}, tmp_path / "basicsr.pth")
    default, chosen, ref = DeMoE(**CONFIG_A), DeMoE(**CONFIG_A), DeMoE(**CONFIG_A)
    assert load_checkpoint(default, tmp_path / "basicsr.pth").param_key == "params"
    loaded = load_checkpoint(chosen, tmp_path / "basicsr.pth", param_key="params_ema")
    assert loaded.param_key == "params_ema" and loaded.meta == {"iter": 9}
    ref.load_state_dict(ema)
    assert torch.equal(outputs(chosen, x), outputs(ref, x))
    assert not torch.equal(outputs(default, x), outputs(ref, x))
    with pytest.raises(
        CheckpointError, match=r"basicsr\.pth: has no entry 'ema' \(its entries are params, params_ema\)"
    ):
        load_weights(DeMoE(**CONFIG_A), tmp_path / "basicsr.pth", param_key="ema")
    save_checkpoint(tmp_path / "bare.safetensors", state)
    assert load_checkpoint(DeMoE(**CONFIG_A), tmp_path / "bare.safetensors").param_key is None
    with pytest.raises(CheckpointError, match="it holds a bare state dict"):
        load_weights(DeMoE(**CONFIG_A), tmp_path / "bare.safetensors", param_key="params")
