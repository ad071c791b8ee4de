"""``demoe-eval finetune``: the training loop, readable top to bottom (setup, resume, loop, validate,
save, register).

One process needs no process group; under torchrun each rank trains on its share of every global
batch and rank 0 validates, checkpoints and logs. The run folder decides between starting and
resuming: a training state there is resumed exactly (``state.py``).
"""

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from demoe.config import dump_config
from demoe.fileio import append_jsonl, atomic_write_text, read_jsonl
from demoe.finetune.data import TrainData, ValData, train_data, val_data
from demoe.finetune.model import StartModel, apply_freeze, optimisation, place, start_model
from demoe.finetune.options import RunOptions, validation_set
from demoe.finetune.register import register
from demoe.finetune.state import TrainState, load_saved
from demoe.net import has_router
from demoe.net.losses import fft_loss, pixel_loss, router_ce
from demoe.net.training import MEMORY_FORMATS, set_train_mode
from demoe.registry.checkpoints import save_checkpoint
from demoe.runner.scoring import validate
from demoe.runtime import Dist, all_reduce_mean, barrier, init_distributed, resolve_device, shutdown
from demoe.tracking.mlflow_runs import FinetuneTracker, end_active_run
from demoe.vocab import IDENTITY, ORACLE, TASKS


@dataclass
class Run:
    """What the loop's steps share: the options, where it runs, the model, its data and state."""

    cfg: dict
    opts: RunOptions
    dist_info: Dist
    device: torch.device
    run_dir: Path
    start: StartModel
    net: nn.Module  # what the steps call: the model, or DDP's wrapper of it
    trainable: list
    data: TrainData
    val: ValData | None
    state: TrainState
    amp_dtype: torch.dtype | None
    tracker: FinetuneTracker
    identity_done: bool = False
    loss_sums: torch.Tensor | None = None  # (loss, pixel, fft, router_ce) summed since the last report
    loss_count: int = 0

    @property
    def model(self) -> nn.Module:
        return self.state.model

    @property
    def total(self) -> int:
        return int(self.cfg["train"]["total_iter"])


def finetune(cfg: dict, opts: RunOptions) -> dict:
    """Train as ``cfg`` says; returns a summary (rank 0: step, best_psnr, checkpoints, zoo entry, run id).
    A run that stops on an error is marked FAILED in MLflow (KILLED on Ctrl-C), not left to look finished."""
    try:
        return _finetune(cfg, opts)
    except BaseException as e:
        end_active_run("KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED")
        raise


def _finetune(cfg: dict, opts: RunOptions) -> dict:
    # ---- setup: where, what from, on which data
    seed, train = int(cfg["manual_seed"]), cfg["train"]
    dist_info = init_distributed(cfg["device"])
    device = resolve_device(cfg["device"], dist_info)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    run_dir = opts.run_folder(cfg)
    saved = load_saved(run_dir, cfg, opts.resume)
    torch.manual_seed(seed)  # the same initial weights on every rank
    start = start_model(cfg, opts.zoo_dirs)
    frozen = apply_freeze(start.model, train["freeze"])
    if saved is not None:
        start.model.load_state_dict(saved["params"])
    model, net, trainable = place(start.model, train["routing"], train["memory_format"], device, dist_info)
    data = train_data(cfg, opts, dist_info, device)
    val = val_data(cfg, opts, device) if dist_info.is_main else None
    optimizer, scheduler, scaler, amp_dtype = optimisation(train, trainable, device)

    # ---- resume: the training state of the run folder, or a fresh start
    state = TrainState(model, optimizer, scheduler, scaler, data.generator)
    state.restore(saved, seed, dist_info)
    tracker = FinetuneTracker(
        opts.tracking and dist_info.is_main, opts.tracking_uri, opts.experiment or cfg["logger"]["experiment"]
    )
    run = Run(
        cfg, opts, dist_info, device, run_dir, start, net, trainable, data, val, state, amp_dtype, tracker
    )
    if dist_info.is_main:
        open_run_folder(run, resumed=saved is not None, frozen=frozen)

    # ---- the loop
    print_freq, save_freq = int(cfg["logger"]["print_freq"]), int(cfg["logger"]["save_checkpoint_freq"])
    keep_freq = int(cfg["logger"]["keep_checkpoint_freq"] or 0)
    started_at, since = state.step, time.perf_counter()
    memory_format = MEMORY_FORMATS[train["memory_format"]]
    set_train_mode(model)
    while not stopping(run, started_at):
        epoch = data.start_epoch(state.step)
        for blurred, sharp, _names, labels in data.loader:
            lr = optimizer.param_groups[0]["lr"]
            batch = (
                blurred.to(device, memory_format=memory_format),
                sharp.to(device, memory_format=memory_format),
                labels.to(device),
            )
            losses = train_step(run, *batch)
            run.loss_sums = losses if run.loss_sums is None else run.loss_sums + losses
            run.loss_count += 1
            state.step += 1
            if state.step % print_freq == 0 or state.step == run.total:
                report_losses(run, epoch, lr, time.perf_counter() - since)
                since = time.perf_counter()
            if validation_due(run):
                run_validation(run)
            if state.step % save_freq == 0 or state.step == run.total:
                save_state(run)
            if dist_info.is_main and keep_freq and state.step % keep_freq == 0:
                save_weights(run, f"step_{state.step:07d}")
            if stopping(run, started_at):
                break

    # ---- the end: a last save, the best checkpoint into the zoo and MLflow
    if state.step - started_at and state.step % save_freq and state.step != run.total:
        save_state(run)
    result = {
        "step": state.step,
        "total_iter": run.total,
        "run_dir": str(run_dir),
        "best_psnr": state.best_psnr,
        "run_id": state.run_id,
    }
    if state.step >= run.total and dist_info.is_main:
        if val is None or not (run_dir / "models" / "best.pt").exists():
            save_weights(run, "best")
        result |= register(
            run.cfg, run.opts, run_dir, start, state, data.bench, tracker, best_validation(run)
        )
    if dist_info.is_main:
        tracker.end("FINISHED" if state.step >= run.total else "KILLED")
    shutdown(dist_info)
    return result


def stopping(run: Run, started_at: int) -> bool:
    """Whether the loop is done: all steps taken, or this invocation's ``stop_after`` steps."""
    stop_after = run.opts.stop_after
    return run.state.step >= run.total or (
        stop_after is not None and run.state.step - started_at >= stop_after
    )


def open_run_folder(run: Run, resumed: bool, frozen: list[str]) -> None:
    """The run folder's options and logs (cut back to the resumed step), the MLflow run, the first line."""
    cfg, state, run_dir = run.cfg, run.state, run.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.yaml", dump_config(cfg))
    for path in (run_dir / "train_log.jsonl", run_dir / "validation.jsonl"):
        if resumed:
            kept = [r for r in read_jsonl(path) if isinstance(r.get("step"), int) and r["step"] <= state.step]
            atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))
        else:
            path.unlink(missing_ok=True)
    tags = {
        "demoe.kind": "finetune",
        "demoe.model": cfg["name"],
        "demoe.start": cfg["model"] or run.start.arch,
        "demoe.train_bench": f"{run.data.bench.spec.name}/{run.data.bench.split}",
        "demoe.run_dir": str(run_dir.resolve()),
        "demoe.world_size": str(run.dist_info.world),
    }
    if run.val is not None:
        held = f" (held out of train: {run.val.held_out} pairs)" if run.val.held_out else ""
        tags["demoe.val_bench"] = f"{run.val.bench.spec.name}/{run.val.bench.split}{held}"
        tags["demoe.val_is_test"] = str(run.val.is_test_split).lower()
    state.run_id = run.tracker.start(state.run_id, cfg["name"], tags, cfg, dump_config(cfg))
    params = sum(p.numel() for p in run.model.parameters())
    weights = run.start.weights
    print(
        f"{'resuming' if resumed else 'starting'} {cfg['name']} at step {state.step}/{run.total}: "
        f"{run.start.arch} ({params / 1e6:.2f}M parameters, {sum(p.numel() for p in run.trainable) / 1e6:.2f}M "
        f"trained{', frozen: ' + ', '.join(frozen) if frozen else ''}), {len(run.data.pairs)} training pairs, "
        f"{run.data.steps_per_epoch} steps/epoch, {run.dist_info.world} process(es) on {run.device}"
        + (f", from {weights}" if weights and not resumed else ""),
        flush=True,
    )


def train_step(run: Run, blurred: torch.Tensor, sharp: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """One optimiser step on one batch; returns (loss, pixel, fft, router_ce), detached."""
    t, device = run.cfg["train"], run.device
    task = labels if t["routing"] == ORACLE else t["routing"]
    with torch.autocast(device.type, dtype=run.amp_dtype or torch.float32, enabled=run.amp_dtype is not None):
        out = run.net(blurred, task=task)
    restored = out["output"].float()
    zero = torch.zeros((), device=device)
    pix = pixel_loss(restored, sharp, t["pixel_loss"])
    freq = fft_loss(restored, sharp) if t["fft_loss_weight"] else zero
    ce = router_ce(out["router_logits"], labels) if has_router(run.model) else zero
    loss = pix + float(t["fft_loss_weight"]) * freq + float(t["router_loss_weight"]) * ce
    if not loss.requires_grad:
        # no sample of this batch went through a trained part (only named experts train and none was
        # chosen): a step with zero gradients, which every DDP rank has to take too
        loss = loss + sum(p.sum() for p in run.trainable) * 0.0
    state = run.state
    state.optimizer.zero_grad(set_to_none=True)
    state.scaler.scale(loss).backward()
    if t["grad_clip"]:
        state.scaler.unscale_(state.optimizer)
        nn.utils.clip_grad_norm_(run.trainable, float(t["grad_clip"]))
    state.scaler.step(state.optimizer)
    state.scaler.update()
    state.scheduler.step()
    return torch.stack([loss, pix, freq, ce]).detach().to(torch.float64)


def report_losses(run: Run, epoch: int, lr: float, seconds: float) -> None:
    """The mean losses since the last report, averaged over the ranks: logged, printed and in MLflow."""
    n, t, step = run.loss_count, run.cfg["train"], run.state.step
    mean = (all_reduce_mean(run.loss_sums, run.dist_info) / n).tolist()
    run.loss_sums, run.loss_count = None, 0
    if not run.dist_info.is_main:
        return
    record = {"step": step, "epoch": epoch, "loss": mean[0], "pixel": mean[1], "fft": mean[2]}
    record |= {"router_ce": mean[3], "lr": lr, "seconds_per_step": seconds / n}
    append_jsonl(run.run_dir / "train_log.jsonl", [record], sync=False)
    curves = {
        "train/loss": mean[0],
        f"train/{t['pixel_loss']}": mean[1],
        "train/router_ce": mean[3],
        "lr": lr,
    }
    run.tracker.metrics(curves | ({"train/fft": mean[2]} if t["fft_loss_weight"] else {}), step)
    print(
        f"step {step}/{run.total}  epoch {epoch}  loss {mean[0]:.5f}  {t['pixel_loss']} {mean[1]:.5f}  "
        f"router_ce {mean[3]:.4f}  lr {lr:.2e}  {seconds / n:.3f} s/step",
        flush=True,
    )


def validation_due(run: Run) -> bool:
    if validation_set(run.cfg) is None:
        return False
    step, val_freq = run.state.step, run.cfg["val"]["val_freq"]
    return (
        step == run.total
        or (val_freq == "epoch" and step % run.data.steps_per_epoch == 0)
        or (isinstance(val_freq, int) and step % val_freq == 0)
    )


def validation_figures(cfg: dict, summary: dict) -> dict[str, float]:
    """The logged validation figures: ``val/METRIC`` of the first routing mode, ``val/MODE/METRIC`` of the
    others and of identity, and the first MoE block's expert shares."""
    figures = {}
    for i, mode in enumerate(cfg["val"]["routing"]):
        prefix = "val/" if i == 0 else f"val/{mode}/"
        figures |= {f"{prefix}{m}": v for m, v in summary[mode].metrics.items()}
        if summary[mode].routing_accuracy is not None:
            figures[f"{prefix}routing_accuracy"] = summary[mode].routing_accuracy
    if IDENTITY in summary:
        figures |= {f"val/identity/{m}": v for m, v in summary[IDENTITY].metrics.items()}
    usage = summary[cfg["val"]["routing"][0]].expert_usage
    if usage:
        first_block = [sum(counts[0][e] for counts in usage.values()) for e in range(len(TASKS))]
        figures |= {
            f"val/expert_usage/{task}": n / max(1, sum(first_block))
            for task, n in zip(TASKS, first_block, strict=True)
        }
    return figures


def run_validation(run: Run) -> None:
    """Validate (rank 0), keep the best checkpoint, log the figures; the other ranks wait."""
    cfg, state = run.cfg, run.state
    if run.dist_info.is_main:
        modes = [*([] if run.identity_done else [IDENTITY]), *cfg["val"]["routing"]]
        summary = validate(run.model, run.val.loader, run.val.metrics, modes, run.device)
        set_train_mode(run.model)
        run.identity_done = True
        figures = validation_figures(cfg, summary)
        psnr = figures["val/psnr"]
        if not cfg["val"]["select_best"] or state.best_psnr is None or psnr > state.best_psnr:
            state.best_psnr, state.best_step = psnr, state.step
            save_weights(run, "best")
        summary_json = {mode: s.to_json() for mode, s in summary.items()}
        epoch = state.step // run.data.steps_per_epoch
        record = {"step": state.step, "epoch": epoch, "figures": figures, "summary": summary_json}
        append_jsonl(run.run_dir / "validation.jsonl", [record], sync=False)
        run.tracker.metrics(figures, state.step)
        run.tracker.json(summary_json, f"validation/step_{state.step:07d}.json")
        shown = "  ".join(f"{k[4:]} {v:.4f}" for k, v in figures.items() if "/" not in k[4:])
        best = (
            f"  (best psnr {state.best_psnr:.2f} at step {state.best_step})"
            if cfg["val"]["select_best"]
            else ""
        )
        print(f"validation at step {state.step}: {shown}{best}", flush=True)
    barrier(run.dist_info)


def best_validation(run: Run) -> dict | None:
    """The validation figures of the registered checkpoint's step, from the run folder's log."""
    by_step = {r.get("step"): r.get("figures") for r in read_jsonl(run.run_dir / "validation.jsonl")}
    return by_step.get(run.state.best_step)


def save_weights(run: Run, kind: str) -> None:
    """A checkpoint in the published layout (rank 0)."""
    state = run.state
    meta = {
        "epoch": state.step // run.data.steps_per_epoch,
        "step": state.step,
        "best_psnr": state.best_psnr,
        "name": run.cfg["name"],
    }
    path = run.run_dir / "models" / f"{kind}.pt"
    save_checkpoint(path, run.model, **meta, arch=run.start.arch, kwargs=run.start.kwargs)


def save_state(run: Run) -> None:
    """latest.pt and the training state (every rank hands in its random generators)."""
    if run.dist_info.is_main:
        save_weights(run, "latest")
    run.state.save(run.run_dir, run.cfg, run.data.steps_per_epoch, run.dist_info)
