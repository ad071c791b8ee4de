"""Networks with seeded random weights, and the dense network of one MoE path."""

import torch

from demoe.net import ARCHITECTURES, DeMoE, DenseNAFNet


def seeded_network(arch: str, kwargs: dict, seed: int) -> torch.nn.Module:
    """The network with seeded random weights, including non-zero residual scales (beta, gamma)."""
    torch.manual_seed(seed)
    model = ARCHITECTURES[arch](**kwargs)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("beta", "gamma")):
                p.normal_(0.0, 0.1)
    return model.eval()


def dense_of_path(model: DeMoE, expert: int) -> DenseNAFNet:
    """A dense network with ``model``'s weights whose post-blocks are the experts ``expert`` of each MoE
    block: what ``model`` computes at k=1 when the router picks ``expert``, without the MoE machinery."""
    dense = DenseNAFNet(
        img_channel=model.intro.in_channels,
        width=model.intro.out_channels,
        middle_blk_num=len(model.middle_blks.modules_list),
        enc_blk_nums=[len(e.modules_list) for e in model.encoders],
        dec_blk_nums=[len(d.modules_list) for d in model.decoders],
    )
    state = {k: v for k, v in model.state_dict().items() if not k.startswith(("experts.", "mlp_branch."))}
    for i, block in enumerate(model.experts):
        for k, v in block.experts[expert].state_dict().items():
            state[f"post_blocks.{i}.{k}"] = v
    dense.load_state_dict(state)
    return dense.eval()
