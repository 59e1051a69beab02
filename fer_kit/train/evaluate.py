"""Inference over whole splits (in the table's frame order, gathered from every rank under torchrun)
and the split's report: per-class F1, the ABAW scores, a bootstrap interval over videos."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from .. import metrics
from ..data.clips import ClipDataset
from . import distributed
from .data import augment_batch, frame_videos, loader_workers, transform_on_device
from .device import to_device
from .precision import resolve as resolve_precision


@torch.no_grad()
def device_batches(dataset, batch_size: int, device, progress: bool = False, desc: str = "predicting",
                   ranks: distributed.Ranks | None = None):
    """(images on the device, targets on the CPU) batch by batch over a whole dataset, in order (with
    `ranks`, rank r's block of it). The loader hands over decoded uint8 frames (a quarter of the float
    bytes to collate and copy, pinned for a GPU) and the dataset's transform runs once per batch on the
    device, where normalising belongs; a transform with no batched version (recipe paper_a) runs per
    face in the loader instead. What predict and the ensembles' one pass both read."""
    device = torch.device(device)
    try:
        plain, transform = transform_on_device(dataset)
    except ValueError:
        plain, transform = dataset, None
    workers = loader_workers(plain)
    if ranks is not None:
        plain = distributed.shard(plain, ranks)
    loader = DataLoader(plain, batch_size=batch_size, shuffle=False, num_workers=workers, pin_memory=device.type == "cuda")
    for x, y in tqdm(loader, desc=desc, unit="batch", disable=not progress, mininterval=2.0):
        x = to_device(x, device)
        if transform is not None:           # landmark targets move with geometric steps, on x's device
            x, y = augment_batch(transform, x, {k: v.to(device) for k, v in y.items()} if isinstance(y, dict) else y)
            y = distributed.to_cpu(y)
        yield x, y


@torch.no_grad()
def _outputs(model: nn.Module, dataset, batch_size: int, device, progress: bool = False, precision: str = "auto"):
    """(model output, targets) batch by batch over a whole dataset, in order, in eval mode: the one
    inference loop the predict functions share. Batches of clips hold batch_size frames in all.
    `precision` as TrainConfig.precision (auto: what training on this device would use for this model)."""
    device = torch.device(device)
    policy = resolve_precision(precision, device, model)
    model.eval()
    if isinstance(dataset, ClipDataset):
        batch_size = max(1, batch_size // dataset.clip_length)
    r = distributed.ranks()
    if r.on:           # under torchrun: each rank its block of the split, every rank all of it back in order
        local = [distributed.to_cpu(b) for b in _outputs_of(model, dataset, batch_size, device, policy, False, r)]
        yield from distributed.gather_in_order(local, r)
        return
    yield from _outputs_of(model, dataset, batch_size, device, policy, progress)


@torch.no_grad()
def _outputs_of(model, dataset, batch_size, device, policy, progress, ranks=None):
    for x, y in device_batches(dataset, batch_size, device, progress, ranks=ranks):
        with policy.autocast():
            yield model(x), y


def predict(model: nn.Module, dataset, batch_size: int = 128, device: torch.device | str = "cpu",
            progress: bool = False, precision: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """Logits (N, C) for every frame of a dataset and the labels (N,), in the table's frame order (for
    whole-split metrics). For clip datasets the padding is dropped: each real frame counts once."""
    clips = isinstance(dataset, ClipDataset)
    logits, labels = [], []
    for out, y in _outputs(model, dataset, batch_size, device, progress, precision):
        z = (out.logits if hasattr(out, "logits") else out).float().cpu()
        if clips:                                   # (B, T, C), (B, T) -> the real frames only
            z, y = z[y >= 0], y[y >= 0]
        logits.append(z)
        labels.append(y)
    logits, labels = torch.cat(logits).numpy(), torch.cat(labels).numpy()
    if clips:                                       # clip order -> the table's frame order
        order = dataset.index.reshape(-1)
        order = order[order >= 0]
        logits[order], labels[order] = logits.copy(), labels.copy()
    return logits, labels


def predict_tasks(model: nn.Module, dataset, batch_size: int = 128, device: torch.device | str = "cpu",
                  progress: bool = False, precision: str = "auto") -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """A multi-task model's outputs over a whole dataset ({"va", "expr", "au"}, AU as probabilities) and
    the matching targets, in order."""
    outs, targets = {}, {}
    for out, y in _outputs(model, dataset, batch_size, device, progress, precision):
        for k in ("va", "expr", "au"):
            if getattr(out, k) is not None:
                v = getattr(out, k).float().cpu()
                outs.setdefault(k, []).append(v.sigmoid() if k == "au" else v)
        for k, v in y.items():
            targets.setdefault(k, []).append(v)
    return ({k: torch.cat(v).numpy() for k, v in outs.items()}, {k: torch.cat(v).numpy() for k, v in targets.items()})


def predict_landmarks(model: nn.Module, dataset, batch_size: int = 128, device: torch.device | str = "cpu",
                      precision: str = "auto") -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Paper E's two outputs over a whole dataset: logits (N, C), labels (N,), predicted and target
    landmarks (N, 68, 2) in normalised coordinates."""
    cols = {"logits": [], "labels": [], "pred": [], "true": []}
    for out, y in _outputs(model, dataset, batch_size, device, precision=precision):
        for k, v in zip(cols, (out.logits, y["expr"], out.landmarks, y["landmarks"])):
            cols[k].append(v.float().cpu() if v.is_floating_point() else v)
    return tuple(torch.cat(v).numpy() for v in cols.values())


# report key -> how the epoch line names it; each becomes a val_<key> column of the history when present
VAL_COLUMNS = {"p_mtl": "P", "ccc_mean": "CCC", "p_expr": "P_EXPR", "accuracy": "acc", "au_f1_mean": "AU F1",
               "landmark_nme": "landmark NME"}


def evaluate(model, dataset, classes, batch_size: int = 128, device="cpu", interval: bool = False,
             precision: str = "auto") -> dict:
    """Whole-split report; its "score" is the run's model-selection metric: P_EXPR (mean F1 over 8
    classes), or P for multi-task runs.

    With 7 classes (the ABAW 2020 EXPR set) the report adds "abaw2020" = 0.67 F1 + 0.33 accuracy, and the
    score is that: it was the challenge's measure, and paper C selected its models by it. Both terms are
    over the whole split; paper C's published code averaged a per-batch F1 instead (notes §4.4). Paper
    E's 6-class runs score the LSD mean F1 and add the landmark error.

    interval=True adds "interval": the score's 95% bootstrap interval over the split's videos (frames of
    one video are near-duplicates, so frames would give a far too narrow one).
    """
    kind = getattr(dataset, "targets", "expr")
    if kind == "mtl":
        outs, targets = predict_tasks(model, dataset, batch_size, device, precision=precision)
        report = metrics.task_report(outs, targets, classes)
        score = metrics.task_score_fn(outs, targets, len(classes))
    elif kind == "landmarks":      # paper E: LSD mean F1 over 6, landmark error
        logits, labels, pred, true = predict_landmarks(model, dataset, batch_size, device, precision)
        report = metrics.lsd_report(labels, logits.argmax(1), class_names=list(classes))
        report = {"score": report["lsd_mean_f1"], **report, **metrics.landmark_errors(pred, true)}
        y, p = labels, logits.argmax(1)
        score = metrics.frame_score_fn(y, p, "p_expr", len(classes))
    else:
        logits, labels = predict(model, dataset, batch_size, device, precision=precision)
        y, p = labels, logits.argmax(1)
        report = metrics.expr_report(y, p, num_classes=len(classes), class_names=list(classes))
        report = {"score": report.get("abaw2020", report["p_expr"]), **report}
        score = metrics.frame_score_fn(y, p, "abaw2020" if len(classes) == 7 else "p_expr", len(classes))
    if interval:
        report["interval"] = list(metrics.video_bootstrap(score, frame_videos(dataset)))
    return report
