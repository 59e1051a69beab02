"""One training loop for the kit: config -> data -> model -> loss -> fit -> metrics -> run folder.

Used by the notebooks and by the command line, which take the same parameter names:
    python -m fer_kit.train --epochs 8 --batch_size 64            # writes runs/dan_expr/
    python -m fer_kit.train --epochs 12 --exist resume            # continues it from last.pt
    torchrun --standalone --nproc_per_node 2 -m fer_kit.train ...   # one run over 2 processes (distributed.py)
The command line refuses a folder that already holds a run unless told `--exist resume|overwrite`;
notebooks and library callers overwrite by default (re-running a notebook is the normal case).
A run folder holds config.json, history.csv, metrics.json, MODEL_CARD.md (data, per-class F1, what the
model must not be used for), best.pt (best validation score), last.pt (for resuming) and figures/
(learning curves, per-class F1, confusion matrix); checkpoints are written atomically and read back with
`weights_only=True`.

One file per job, in the order a run meets them:
    data.py         the splits as datasets (ExprData), clips, per-face or per-batch augmentation
    recipe.py       model, loss and optimiser from the config (what each model needs: its registry entry)
    device.py       device, seeding, deterministic kernels;  precision.py  the precision policy
    distributed.py  torchrun: ranks, the sampler's share per rank, gathering, SyncBatchNorm on CPUs
    loop.py         fit() and one epoch
    evaluate.py     predictions over whole splits and their reports
    checkpoints.py  atomic saves, weights_only loads, a run's best model, another run's weights to start from
    run_folder.py   the folder's lock, resume checks, JSON, a finished run read back, its figures
    cli.py          `python -m fer_kit.train` (__main__.py)
"""
from .checkpoints import init_weights, load_checkpoint, load_run, save_checkpoint
from .cli import config_parser, default_out_dir, main
from .data import PROTOCOLS, ExprData, as_clips, batch_augmentation, frame_dataset, frame_videos, load_expr_data, \
    split_tables
from .device import seed_everything, select_device
from .evaluate import evaluate, predict, predict_landmarks, predict_tasks
from .loop import check_distributed, fit, fit_after, train_one_epoch
from .recipe import build_criterion, build_model, build_optimizer, compute_loss, keep_frozen_in_eval, set_stage
from .run_folder import NotTheSameRunError, RunInUseError, RunResult, record

__all__ = ["ExprData", "NotTheSameRunError", "PROTOCOLS", "RunInUseError", "RunResult", "as_clips",
           "batch_augmentation", "build_criterion", "build_model", "build_optimizer", "check_distributed",
           "compute_loss", "config_parser", "default_out_dir", "evaluate", "fit", "fit_after", "frame_dataset", "frame_videos",
           "init_weights", "keep_frozen_in_eval", "load_checkpoint", "load_expr_data", "load_run", "main", "predict",
           "predict_landmarks", "predict_tasks", "record", "save_checkpoint", "seed_everything", "select_device",
           "set_stage", "split_tables", "train_one_epoch"]
