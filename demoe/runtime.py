"""Where a command runs: the device, the torchrun process group (gloo on CPU, NCCL on GPU), this
process's rank, and the collectives the runner and the trainer need. One process needs no group."""

import os
import subprocess
import sys
from dataclasses import dataclass

import torch

from demoe.errors import DemoeError


class RuntimeSetupError(DemoeError):
    pass


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def wanted_backend_device(device: str) -> str:
    """The device type a ``--device`` value asks for (``auto``: CUDA when there is one)."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def init_distributed(device: str) -> Dist:
    """Join the torchrun process group when launched by torchrun; a single process needs none."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return Dist()
    import torch.distributed as dist

    backend = "nccl" if wanted_backend_device(device).startswith("cuda") else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


def resolve_device(device: str, dist_info: Dist) -> torch.device:
    device = wanted_backend_device(device)
    if device == "cuda" and dist_info.world > 1:
        device = f"cuda:{dist_info.local_rank}"
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise RuntimeSetupError(f"--device {device}: not a device; use cpu, cuda, cuda:N or auto") from None
    if resolved.type not in ("cpu", "cuda"):
        raise RuntimeSetupError(
            f"--device {device}: demoe-eval runs on cpu or cuda; use cpu, cuda, cuda:N or auto"
        )
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeSetupError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
    return resolved


def gather(obj, dist_info: Dist) -> list:
    """Every rank's ``obj``, in rank order (``[obj]`` in a single process)."""
    if dist_info.world == 1:
        return [obj]
    import torch.distributed as dist

    gathered: list = [None] * dist_info.world
    dist.all_gather_object(gathered, obj)
    return gathered


def barrier(dist_info: Dist) -> None:
    if dist_info.world > 1:
        import torch.distributed as dist

        dist.barrier()


def all_reduce_mean(tensor: torch.Tensor, dist_info: Dist) -> torch.Tensor:
    """``tensor`` averaged over the ranks, in place."""
    if dist_info.world > 1:
        import torch.distributed as dist

        dist.all_reduce(tensor)
        tensor /= dist_info.world
    return tensor


def shutdown(dist_info: Dist) -> None:
    if dist_info.world > 1:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()


def launch_torchrun(nproc: int, command: str, argv: list[str]) -> int:
    """Run ``demoe-eval COMMAND`` with ``argv`` (``--nproc`` removed) under torchrun with ``nproc``
    processes of one torch thread each; returns its exit code."""
    args, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            args.append(arg)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc)]
    cmd += ["-m", "demoe.cli", command, *args]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    return subprocess.call(cmd, env=env)
