"""One training loop for every paper: `fit` trains cfg.model on cfg's data, validates each epoch,
keeps the best checkpoint, resumes, and reports on the test split. torchrun calls the same `fit`."""
from __future__ import annotations

import os
import time
from contextlib import ExitStack
from pathlib import Path

import pandas as pd
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, RandomSampler
from tqdm import tqdm

from ..config import TrainConfig, image_size_note
from ..data.batch_augment import BatchAugment
from ..data.sampling import weighted_sampler
from ..data.transforms import mixup_batch
from ..model_card import write_model_card
from ..paths import output_dir, shown
from ..schedules import Clock, lr_factor
from . import distributed
from .checkpoints import _kill_due, _kill_self, init_weights, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .data import ExprData, augment_batch, batch_augmentation, load_expr_data, loader_workers
from .device import determinism, seed_everything, select_device, to_device
from .evaluate import VAL_COLUMNS, evaluate
from .precision import Precision, resolve as resolve_precision
from .recipe import build_criterion, build_model, build_optimizer, compute_loss, keep_frozen_in_eval, set_stage
from .run_folder import (RunResult, check_same_run, finished_run, prepare_run_folder, run_lock, save_run_figures,
                         write_json)


def batches_per_epoch(loader, cfg: TrainConfig) -> int:
    return len(loader) if cfg.max_batches is None else min(len(loader), cfg.max_batches)


def train_one_epoch(model, criterion, loader, optimizer, device, cfg: TrainConfig, epoch: int,
                    start: dict | None = None, checkpoint=None, after_step=None,
                    augment: BatchAugment | None = None, policy: Precision | None = None,
                    scaler: torch.amp.GradScaler | None = None) -> dict[str, float]:
    """One pass over the loader. `start` continues a mid-epoch checkpoint: its first `step` batches are
    drawn again (the loader must be rebuilt from the epoch's first sampler state) but not trained on, then
    the global RNGs are set to where they were, so the rest of the epoch is exactly the uninterrupted one.
    `checkpoint(step, sums, n_seen)` is offered every finished step (fit decides whether to save);
    `after_step()` follows every optimiser step (a per-step schedule) and ends the epoch early when it
    returns True (a run sized in minutes or steps has reached its last step). `policy` is the run's
    precision (default: cfg.precision resolved here); `scaler` scales fp16 losses (fp16 runs only)."""
    policy = policy or resolve_precision(cfg.precision, device, model)
    r = distributed.ranks()
    model.train()                                        # (a DistributedDataParallel wrapper under torchrun)
    if getattr(getattr(model, "module", model), "features_frozen", False):   # the heads-only stage (set_stage)
        keep_frozen_in_eval(model)
    criterion.train()
    sums, n_seen, skip = ({}, 0, 0) if start is None else (dict(start["sums"]), start["n_seen"], start["step"])
    total = batches_per_epoch(loader, cfg)
    # a refresh every 15 s keeps notebooks saved by papermill readable (each refresh is stored)
    of = "" if cfg.minutes or cfg.steps else f"/{cfg.epochs}"
    bar = tqdm(loader, total=total, desc=f"epoch {epoch}{of}", unit="batch", disable=not (cfg.progress and r.main),
               mininterval=15.0)
    for step, (x, y) in enumerate(bar):
        if step >= total:
            break
        if step < skip:                                  # trained on before the interruption
            if step == skip - 1:
                set_rng_state(start["rng"])
            continue
        x = to_device(x, device)
        y = {k: v.to(device) for k, v in y.items()} if isinstance(y, dict) else y.to(device)
        if augment is not None:                          # augment_on="batch": the recipe on the whole batch
            x, y = augment_batch(augment, x, y)
        n = len(x)
        with policy.autocast():
            if cfg.mixup_alpha:
                # paper E's code: the emotion branch sees the mixed batch and learns lam y_a + (1 - lam) y_b
                # (soft targets into its weighted CE); the landmark branch sees the unmixed faces
                mixed, soft = mixup_batch(x, y["expr"], cfg.mixup_alpha, cfg.num_classes)
                out = model(mixed, x_landmarks=x)
                y = {**y, "expr": soft}
            else:
                out = model(x)
        parts = compute_loss(criterion, out, y)
        loss = parts["loss"]
        optimizer.zero_grad(set_to_none=True)
        if scaler is None:
            loss.backward()
        else:                                            # fp16: clip and check the unscaled gradients
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        distributed.average_gradients(criterion, r)     # the loss's own parameters (DAN's centres): DDP holds the model's
        # the norm is measured even without clipping, and checked before the step: a NaN or infinite gradient
        # (a NaN loss gives one) would turn every weight into NaN. This check is the step's one wait for the
        # device; the loss terms add up there and are read per epoch.
        params = [p for g in optimizer.param_groups for p in g["params"]]
        if scaler is not None:                           # an fp16 overflow: the scaler skips this step and
            nn.utils.clip_grad_norm_(params, cfg.clip_grad or float("inf"))
            scaler.step(optimizer)                       # lowers its scale, as fp16 training expects
            scaler.update()
        else:
            try:
                if cfg.clip_grad:
                    nn.utils.clip_grad_norm_(params, cfg.clip_grad, error_if_nonfinite=True)
                else:                                    # the check alone: clipping at max_norm inf would also
                    grads = [p.grad for p in params if p.grad is not None]    # multiply every gradient by 1
                    nn.utils.get_total_norm(grads, error_if_nonfinite=True)
            except RuntimeError as e:
                raise _not_finite(loss, params, epoch, step, cfg) from e
            optimizer.step()
        for k, v in parts.items():
            sums[k] = sums.get(k, 0.0) + v.detach().float() * n
        n_seen += n
        if step % 20 == 0:                               # the running loss, without a wait every step
            bar.set_postfix(loss=f"{float(sums['loss']) / n_seen:.3f}", refresh=False)
        if _kill_due("step"):
            _kill_self()
        if after_step is not None and after_step():
            break
        if checkpoint is not None and step + 1 < total:
            checkpoint(step + 1, sums, n_seen)
    bar.close()
    sums = {k: float(v) for k, v in sums.items()}
    totals = distributed.all_sum({**sums, "images": n_seen}, r)     # over every rank's share of the batches
    n_seen = int(totals.pop("images"))
    return {**{f"train_{k}": v / max(n_seen, 1) for k, v in totals.items()}, "images": n_seen}


def _not_finite(loss: torch.Tensor, params, epoch: int, step: int, cfg: TrainConfig) -> FloatingPointError:
    """What became infinite or NaN at a step, said in the words a student can act on."""
    if not torch.isfinite(loss):
        return FloatingPointError(f"loss became {loss.item()} at epoch {epoch}, step {step}; "
                                  f"try a lower lr (now {cfg.lr}) or clip_grad")
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad.float()) for p in params
                                                 if p.grad is not None]))
    return FloatingPointError(f"the gradients became {norm.item()} at epoch {epoch}, step {step} (the loss "
                              f"{loss.item():.4g} was finite); try a lower lr (now {cfg.lr}) or clip_grad, "
                              "and look for a log, sqrt or division of zero in the model or loss")


def fit_after(pretrain: TrainConfig | None, cfg: TrainConfig, data: ExprData | None = None) -> RunResult:
    """fit(cfg, data), after fitting `pretrain` (on its own data) when there is one: the run whose
    checkpoint cfg.init_from names (notebook 04's `pretrain_epochs`)."""
    if pretrain is not None:
        fit(pretrain)
    return fit(cfg, data)


def fit(cfg: TrainConfig, data: ExprData | None = None, resume: bool = False) -> RunResult:
    """Train cfg.model on cfg.task's data, validating every epoch over the whole validation split and
    keeping the checkpoint of the best validation score (P_EXPR; P = CCC + F1 + AU F1 for "mtl").

    A folder that already holds a run is handled by cfg.exist ("error", "resume", "overwrite");
    `resume=True` is the same as exist="resume". With cfg.checkpoint_minutes > 0, last.pt is also
    written within epochs, so a killed run loses at most that much work.

    Launched by torchrun (fer_kit.distributed), every process calls fit: rank 0 owns the run folder."""
    out_dir = output_dir() / cfg.out_dir
    device_type = select_device(cfg.device).type
    r = distributed.setup(device_type)
    if r.on:
        check_distributed(cfg, r)
    elif not resume and (cfg.reuse if cfg.reuse is not None else os.environ.get("FER_KIT_WORKSHOP") == "1"):
        done = finished_run(out_dir, cfg)
        if done is not None:
            print(f"{shown(out_dir)} holds this configuration's finished run: loaded, not trained again "
                  f"(best validation {done.best['score']:.4f} at epoch {done.best['epoch']}); reuse=False retrains")
            return done
    deterministic = cfg.deterministic if cfg.deterministic is not None else device_type != "cuda"
    with ExitStack() as stack:
        def claim_folder() -> bool:
            try:
                out_dir.mkdir(parents=True, exist_ok=True)
            except PermissionError as e:
                raise PermissionError(f"cannot create the run folder {shown(out_dir)} ({e.strerror}); choose another "
                                      "out_dir (or set FER_KIT_OUTPUT to a writable folder)") from e
            stack.enter_context(run_lock(out_dir))
            return prepare_run_folder(out_dir, "resume" if resume else cfg.exist)
        resuming = distributed.on_main(claim_folder, r)
        stack.enter_context(determinism(deterministic))
        stack.enter_context(distributed.quiet_unless_main(r))
        return _fit(cfg, data, resuming, out_dir, r)


# fields that change how a run goes, not what it learns: a finished run that differs only in these is this run
def check_distributed(cfg: TrainConfig, r: distributed.Ranks) -> None:
    """What a multi-process run cannot do yet, said before any process starts work."""
    if cfg.minutes or cfg.checkpoint_minutes:
        raise ValueError(f"a {r.world}-process run cannot size itself or its checkpoints by the clock (each process "
                         "has its own): use epochs or steps, and checkpoint_minutes 0 (last.pt is written every epoch)")
    if cfg.batch_size % r.world:
        raise ValueError(f"batch_size {cfg.batch_size} is the global batch of a {r.world}-process run and must "
                         f"divide by {r.world}")


def _fit(cfg: TrainConfig, data: ExprData | None, resume: bool, out_dir: Path,
         r: distributed.Ranks = distributed.Ranks()) -> RunResult:
    last_path, best_path = out_dir / "last.pt", out_dir / "best.pt"
    state = None
    if resume:
        state = load_checkpoint(last_path)
        check_same_run(state.get("config"), cfg, last_path)
    seed_everything(cfg.seed)
    data = data or load_expr_data(cfg)
    device = distributed.device_of(select_device(cfg.device), r)
    data, augment = batch_augmentation(cfg, data, device)
    if r.main:
        write_json(cfg.to_dict(), out_dir / "config.json")
    size_note = image_size_note(cfg)
    print(f"image size {size_note}")

    model = build_model(cfg)
    if cfg.init_from and state is None:
        counts = init_weights(model, cfg.init_from, cfg.init_min_share, model_name=cfg.model)
        fresh = list(counts["reinitialised"].values())
        print(f"initialised from {cfg.init_from}: {counts['loaded']} tensors loaded, {len(fresh)} re-initialised"
              + (f": {'; '.join(fresh[:8])}" + (f"; ... ({len(fresh) - 8} more)" if len(fresh) > 8 else "") if fresh else ""))
    if hasattr(model, "start_landmarks_at") and getattr(data.train, "landmarks", None) is not None \
            and not cfg.init_from and state is None:
        model.start_landmarks_at(torch.nanmean(data.train.landmarks, dim=0))   # (68, 2), paper E's LSD runs
    model = model.to(device).to(memory_format=torch.channels_last)
    if cfg.sync_bn and r.on:
        distributed.global_batch_norm(model, device.type)
    criterion = build_criterion(cfg, data.train.table.class_counts()).to(device)
    optimizer = build_optimizer(cfg, model, criterion)
    policy = resolve_precision(cfg.precision, device, model)
    scaler = policy.scaler()
    print(f"precision {policy} on {device.type}")
    gen = torch.Generator().manual_seed(cfg.seed)
    sampler = weighted_sampler(data.train.table.labels, len(data.classes), generator=gen) \
        if cfg.weighted_sampling and cfg.task == "expr" and cfg.clip_length == 1 else None   # paper B: none for clips
    # decoding workers (cache "none") are seeded from `gen`, so their per-face augmentation draws follow the
    # run's seed; on a CPU they start anew each epoch, so a resumed run draws what it would have. On a GPU
    # they stay between epochs, and batches are page-locked so their copies overlap the step.
    workers = loader_workers(data.train, cfg.workers)
    feeding = dict(num_workers=workers, pin_memory=device.type == "cuda",
                   persistent_workers=workers > 0 and device.type == "cuda")
    if r.on:           # every rank draws the one-process order from `gen` and trains on its share of each batch
        if len(data.train) < cfg.batch_size:
            raise ValueError(f"{len(data.train)} training items cannot fill one global batch of {cfg.batch_size}")
        loader = DataLoader(data.train, batch_size=cfg.batch_size // r.world, generator=gen,
                            sampler=distributed.RankSlice(sampler or RandomSampler(data.train, generator=gen),
                                                          cfg.batch_size, r), **feeding)
    else:
        loader = DataLoader(data.train, batch_size=cfg.batch_size, sampler=sampler, shuffle=sampler is None,
                            generator=gen, drop_last=len(data.train) > cfg.batch_size, **feeding)
    per_epoch = batches_per_epoch(loader, cfg)
    clock = Clock(cfg.minutes * 60, per_epoch, val_steps=len(data.val) / cfg.batch_size / 3) if cfg.minutes else None
    if cfg.schedule == "exponential":
        scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=cfg.lr_decay)
    else:   # a per-step schedule over a total set by the clock, by steps, or by epochs
        planned = cfg.steps or (None if clock else cfg.epochs * per_epoch)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: lr_factor(cfg.schedule, step, clock.total if clock else planned))
    open_ended = bool(cfg.minutes or cfg.steps)     # the run ends at its last step, not after cfg.epochs

    history, best, start_epoch, partial = [], None, 1, None
    if r.rank:         # the same weights on every rank, but each its own augmentation and dropout draws
        seed_everything(cfg.seed + 7919 * r.rank)
    if state is not None:
        model.load_state_dict(state["model"])
        criterion.load_state_dict(state["criterion"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        gen.set_state(state["sampler_rng"])             # the sampler's state at the start of the unfinished epoch
        history, best, start_epoch = state["history"], state["best"], state["epoch"] + 1
        if clock is not None and state.get("clock"):
            clock = Clock.from_state(state["clock"])
        if state.get("step"):                            # a mid-epoch checkpoint
            partial = {"step": state["step"], "sums": state["sums"], "n_seen": state["n_seen"], "rng": state["rng"]}
        else:
            set_rng_state(state["rng"] if not r.rank else state["rank_rng"][r.rank])
        where = f", step {state['step']} of epoch {start_epoch}" if partial else ""
        print(f"resumed from {shown(last_path)} after epoch {state['epoch']}{where}")

    def resumable(epoch: int, step: int = 0, sums=None, n_seen: int = 0, epoch_rng=None) -> dict:
        return {"model": model.state_dict(), "criterion": criterion.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "rng": rng_state(), "sampler_rng": epoch_rng,
                "rank_rng": distributed.gather_in_order([rng_state()], r) if r.on else None,
                "epoch": epoch, "step": step, "sums": {k: float(v) for k, v in (sums or {}).items()}, "n_seen": n_seen,
                "history": history, "best": best, "config": cfg.to_dict(), "clock": clock.state() if clock else None,
                "scaler": scaler.state_dict() if scaler is not None else None}

    if open_ended or cfg.schedule != "exponential":
        print(f"{cfg.schedule} schedule over " + (f"{cfg.minutes:g} minutes (its steps sized to the clock)" if clock
                                                  else f"{cfg.steps or cfg.epochs * per_epoch} steps"))
    last_lr = [optimizer.param_groups[0]["lr"]]

    def at_last_step() -> bool:
        """A run sized in minutes or steps has taken its planned steps (counted by the per-step scheduler)."""
        total = clock.total if clock is not None else cfg.steps
        return bool(total) and scheduler.last_epoch >= total

    def after_step() -> bool:
        last_lr[0] = optimizer.param_groups[0]["lr"]   # the rate this step was taken at
        if clock is not None:
            clock.step_done()                          # may plan the total: before the next step's rate
        if cfg.schedule != "exponential":
            scheduler.step()
        return at_last_step()

    def finished(epoch: int) -> bool:
        return at_last_step() if open_ended else epoch > cfg.epochs

    wrapped = {}       # what the steps call: the model, in DDP under torchrun, compiled with cfg.compile

    def trained(stage: str) -> nn.Module:
        if stage not in wrapped:                         # DDP fixes its parameters when built: rebuilt on unfreezing
            wrapped.clear()
            net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) \
                if r.on else model
            wrapped[stage] = torch.compile(net) if cfg.compile else net
        return wrapped[stage]

    epoch, t_loop = start_epoch, time.perf_counter()
    while not finished(epoch):
        t0 = time.perf_counter()
        epoch_rng = gen.get_state()                      # before the loader draws this epoch's order from it
        row = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"], "stage": set_stage(model, criterion, cfg, epoch)}
        if clock is not None:
            clock.start_epoch()
        row.update(train_one_epoch(trained(row["stage"]), criterion, loader, optimizer, device, cfg, epoch, start=partial,
                                   checkpoint=_every(cfg.checkpoint_minutes, lambda step, sums, n: save_checkpoint(
                                       resumable(epoch - 1, step, sums, n, epoch_rng), last_path)),
                                   after_step=after_step, augment=augment, policy=policy, scaler=scaler))
        partial = None
        if cfg.schedule == "exponential":
            scheduler.step()
        seconds = time.perf_counter() - t0
        row.update(steps=scheduler.last_epoch if cfg.schedule != "exponential" else None, last_lr=last_lr[0])
        t_val = time.perf_counter()
        report = evaluate(model, data.val, data.classes, device=device, precision=cfg.precision)
        if clock is not None:
            clock.validated(time.perf_counter() - t_val)
        row.update(seconds=seconds, val_score=report["score"])
        row.update({f"val_{k}": report[k] for k in VAL_COLUMNS if k in report})
        row.update({f"f1_{k}": v for k, v in report.get("per_class_f1", {}).items()})
        shown_metrics = "  ".join(f"{name} {report[k]:.3f}" for k, name in VAL_COLUMNS.items() if k in report)
        history.append(row)
        stage = f" [{row['stage']}]" if cfg.freeze_epochs else ""
        print(f"epoch {epoch}{stage}: train loss {row['train_loss']:.3f}  val {shown_metrics}  ({seconds:.0f} s)")
        # a fine-tuned run keeps a fine-tuned epoch: with freeze_epochs < epochs, the heads-only epochs are
        # not candidates (else a "fine-tuned" row could report a heads-only checkpoint)
        candidate = epoch > cfg.freeze_epochs or cfg.freeze_epochs >= cfg.epochs
        if candidate and (best is None or report["score"] > best["score"]):
            best = {**report, "epoch": epoch}
            if r.main:
                save_checkpoint({"model": model.state_dict(), "config": cfg.to_dict(), "classes": list(data.classes),
                                 "epoch": epoch, "metrics": best}, best_path)
        state_now = resumable(epoch, epoch_rng=gen.get_state())
        if r.main:
            save_checkpoint(state_now, last_path)
            pd.DataFrame(history).to_csv(out_dir / "history.csv", index=False)
        epoch += 1
    distributed.barrier(r)                              # rank 0's files are written before anyone reads them

    loop_seconds = (clock.elapsed() if clock else time.perf_counter() - t_loop)   # steps + validations
    # the test split, never seen by model selection: the final epoch's weights, then the chosen epoch's
    def on_test():
        return evaluate(model, data.test, data.classes, device=device, interval=True, precision=cfg.precision)
    test_final = on_test() if data.test is not None else None
    test = dict(test_final) if test_final is not None else None
    if best["epoch"] != history[-1]["epoch"]:            # (when the last epoch is the chosen one, its weights are)
        model.load_state_dict(load_checkpoint(best_path)["model"])
        test = on_test() if data.test is not None else None

    hist = pd.DataFrame(history)
    images = float(hist.get("images", pd.Series(dtype=float)).sum()) * getattr(data.train, "clip_length", 1)
    final = {k: v for k, v in history[-1].items() if k.startswith("val_")}
    schedule = {"kind": cfg.schedule, "epochs": len(hist), "steps": int(scheduler.last_epoch) if cfg.schedule !=
                "exponential" else None, "last_lr": float(history[-1].get("last_lr", history[-1]["lr"])), "minutes": cfg.minutes,
                "train_seconds": float(hist["seconds"].sum()),
                "run_seconds": loop_seconds}     # steps + validations: what minutes budgets
    summary = {"best": best, "best_epoch": best["epoch"], "final": final, "protocol": data.protocol,
               "test": test, "test_final": test_final, "schedule": schedule, "image_size": size_note,
               "data": {"source": data.source, "train_frames": len(data.train), "val_frames": len(data.val),
                        "test_frames": len(data.test) if data.test is not None else 0,
                        "train_report": str(data.train.table.report), "val_report": str(data.val.table.report)},
               "train_images_per_second": images / max(float(hist["seconds"].sum()), 1e-9),
               "device": device.type, "precision": {"used": policy.name, "why": policy.why},
               "deterministic": torch.are_deterministic_algorithms_enabled(), "processes": r.world,
               "config": cfg.to_dict()}
    metrics_path = out_dir / "metrics.json"
    if r.main:
        write_json(summary, metrics_path)
        write_model_card(summary, out_dir)
        save_run_figures(hist, test or best, out_dir)
    return RunResult(model=model, history=hist, best=best, out_dir=out_dir, metrics_path=metrics_path,
                     test=test, test_final=test_final, protocol=data.protocol)


def _every(minutes: float, save):
    """A step callback that calls save(step, sums, n_seen) once `minutes` have passed since the last
    save (or the start); None when minutes is 0 (a checkpoint per epoch only)."""
    if not minutes:
        return None
    last = [time.monotonic()]

    def maybe(step, sums, n_seen):
        if time.monotonic() - last[0] >= minutes * 60:
            save(step, sums, n_seen)
            last[0] = time.monotonic()
    return maybe
