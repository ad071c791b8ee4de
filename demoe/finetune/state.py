"""The training state: what a finetuning needs to resume exactly where it stopped.

It holds the model, optimiser, scheduler, gradient scaler, the step, the best validation so far, the
MLflow run and every random generator of every rank, and is saved atomically beside ``latest.pt``. On
a CPU a resumed run ends with the same parameters, bit for bit, as a run never stopped.
"""

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml

from demoe.config import dump_config
from demoe.fileio import atomic_write
from demoe.finetune.options import NOT_COMPARED_ON_RESUME, STATE_FILE, TrainError, flat_options
from demoe.runtime import Dist, gather


def rng_state(loader_gen: torch.Generator) -> dict:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        "loader": loader_gen.get_state(),
    }


def set_rng_state(state: dict, loader_gen: torch.Generator) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    loader_gen.set_state(state["loader"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def load_saved(run_dir: Path, cfg: dict, insist: bool) -> dict | None:
    """The training state saved in ``run_dir`` (None to start afresh), refused when it was made with
    other options than ``cfg``; ``insist`` (``--resume``) makes a missing one an error."""
    path = Path(run_dir) / STATE_FILE
    if not path.exists():
        if insist:
            raise TrainError(
                f"--resume: {run_dir} holds no {STATE_FILE}; drop --resume to start a new run there"
            )
        return None
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        latest = Path(run_dir) / "models" / "latest.pt"
        keep = (
            f", or start a new run from its last saved weights with --set path.pretrain_network_g={latest} "
            "--out NEW_FOLDER (the optimiser and schedule start anew)"
            if latest.is_file()
            else ""
        )
        raise TrainError(
            f"{path}: the training state cannot be read ({type(e).__name__}); delete it to restart "
            f"from step 0{keep}"
        ) from None

    def compared(options: dict) -> dict:
        return {
            k: v for k, v in flat_options(options).items() if k.split(".")[0] not in NOT_COMPARED_ON_RESUME
        }

    before, now = compared(yaml.safe_load(saved["config"])), compared(cfg)
    changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
    if changed:
        raise TrainError(
            f"{run_dir}: holds a run with other settings ({', '.join(changed[:5])}); resume with the same "
            "configuration, or use another --out / delete that folder to start again"
        )
    return saved


@dataclass
class TrainState:
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    generator: torch.Generator  # the training DataLoader's
    step: int = 0
    best_psnr: float | None = None
    best_step: int | None = None
    run_id: str | None = None  # the MLflow run, kept across resumes

    def restore(self, saved: dict | None, seed: int, dist_info: Dist) -> None:
        """Take over ``saved`` (optimiser, schedule, step, random generators), or seed a fresh start."""
        if saved is None:
            seed_everything(seed + dist_info.rank)
            return
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        self.scaler.load_state_dict(saved["scaler"])
        self.step, self.best_psnr = saved["step"], saved["best_psnr"]
        self.best_step, self.run_id = saved["best_step"], saved["run_id"]
        if saved["world_size"] == dist_info.world:
            set_rng_state(saved["rng"][dist_info.rank], self.generator)
        elif dist_info.is_main:
            print(
                f"note: resuming {saved['world_size']} processes' run with {dist_info.world}: not bit-exact",
                flush=True,
            )

    def save(self, run_dir: Path, cfg: dict, steps_per_epoch: int, dist_info: Dist) -> None:
        """Write the training state (rank 0); every rank hands in its random generators."""
        rngs = gather(rng_state(self.generator), dist_info)
        if not dist_info.is_main:
            return
        state = {
            "params": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rngs,
            "step": self.step,
            "epoch": self.step // steps_per_epoch,
            "batch_in_epoch": self.step % steps_per_epoch,
            "best_psnr": self.best_psnr,
            "best_step": self.best_step,
            "run_id": self.run_id,
            "world_size": dist_info.world,
            "config": dump_config(cfg),
        }
        atomic_write(Path(run_dir) / STATE_FILE, lambda tmp: torch.save(state, tmp))
