"""The kit's figures: each returns its matplotlib Figure and, given a path, saves it as PNG."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch


def _save(fig, path: str | Path | None):
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110, bbox_inches="tight")
    return fig


def sample_grid(images: Sequence, labels: Sequence[int], classes: Sequence[str], per_class: int = 6,
                path=None, title: str | None = None):
    """A row of faces per class; images are uint8 (3,H,W) tensors or (H,W,3) arrays."""
    from .data.plots import landmark_grid   # data.plots builds on this module

    return landmark_grid(images, labels, None, classes, per_class=per_class, path=path, title=title)


def class_counts(summary: pd.DataFrame, path=None, title="Frames per class"):
    """Grouped bars of per-class frame counts for each split (rows of `summary`)."""
    df = summary.drop(columns=[c for c in ("total",) if c in summary]).T
    fig, ax = plt.subplots(figsize=(8, 3.2))
    df.plot.bar(ax=ax, width=0.8)
    ax.set_ylabel("frames")
    ax.set_title(title)
    ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    return _save(fig, path)


def learning_curves(history: pd.DataFrame, path=None, loss_title="training loss (paper A Eq. 3 and its terms)"):
    """Training loss terms and the validation numbers the run recorded, per epoch."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.2))
    loss_cols = [c for c in history if c.startswith("train_") and (history[c] > 0).all()]   # log scale
    history.plot(x="epoch", y=loss_cols, ax=a, marker="o")
    a.set_title(loss_title)
    a.set_yscale("log")
    val_cols = [c for c in ("val_p_mtl", "val_ccc_mean", "val_p_expr", "val_accuracy", "val_au_f1_mean",
                            "val_landmark_nme") if c in history]
    history.plot(x="epoch", y=val_cols, ax=b, marker="o")
    b.set_title("validation")
    b.set_ylim(min(0, float(history[val_cols].min().min())), max(1, float(history[val_cols].max().max())))
    fig.tight_layout()
    return _save(fig, path)


def per_class_f1(f1: dict[str, float], path=None, title="Per-class F1 (validation)", reference: float | None = None):
    fig, ax = plt.subplots(figsize=(8, 3.2))
    names, values = list(f1), list(f1.values())
    sns.barplot(x=names, y=values, hue=names, palette="viridis", legend=False, ax=ax)
    for i, v in enumerate(values):
        ax.text(i, v + 0.02, f"{v:.2f}", ha="center", fontsize=8)
    mean = float(np.mean(values))
    ax.axhline(mean, color="k", ls="--", lw=1, label=f"P_EXPR = mean F1 = {mean:.3f}")
    if reference is not None:
        ax.axhline(reference, color="tab:red", ls=":", lw=1.5, label=f"pixel logistic regression = {reference:.3f}")
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("F1")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    return _save(fig, path)


def confusion_matrix(cm, classes: Sequence[str], path=None, normalize: bool = True, title="Confusion matrix (validation)"):
    """Rows are the true class; with normalize, each row sums to 1 (recall on the diagonal)."""
    cm = np.asarray(cm, dtype=float)
    shown = cm / np.maximum(cm.sum(1, keepdims=True), 1) if normalize else cm
    fig, ax = plt.subplots(figsize=(6.2, 5.2))
    sns.heatmap(shown, annot=True, fmt=".2f" if normalize else ".0f", cmap="Blues", xticklabels=classes,
                yticklabels=classes, vmin=0, vmax=1 if normalize else None, cbar=False, ax=ax, annot_kws={"fontsize": 8})
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    return _save(fig, path)


# ------------------------------------------------------------------ notebook 03: what each loss rewards

def affinity_toy(toy, path=None):
    """Free 2-D features and their class centres before and after minimising the affinity loss."""
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6), gridspec_kw={"width_ratios": [1, 1, 0.9]})
    colours = sns.color_palette("tab10", int(toy.labels.max()) + 1)
    for ax, feats, centres, ratio, title in (
            (axes[0], toy.features_before, toy.centres_before, toy.ratio_before, "before"),
            (axes[1], toy.features_after, toy.centres_after, toy.ratio_after, "after")):
        for c, colour in enumerate(colours):
            pts = feats[toy.labels == c]
            ax.scatter(pts[:, 0], pts[:, 1], s=10, color=colour, alpha=0.6)
            ax.scatter(*centres[c], s=160, color=colour, marker="*", edgecolor="black", zorder=3)
        ax.set_title(f"{title}: within-class / centre spread = {ratio:.2f}")
        ax.set_aspect("equal", adjustable="datalim")
    axes[2].plot(toy.loss)
    axes[2].set(xlabel="step", ylabel="affinity loss", yscale="log", title="loss")
    fig.suptitle("Affinity loss (paper A Eq. 1): features gather at their centre (*), centres spread apart")
    fig.tight_layout()
    return _save(fig, path)


def partition_toy(toy, path=None):
    """Each head's share of every channel (softmax across heads) before and after the partition loss."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 2.9), gridspec_kw={"width_ratios": [1, 1, 0.6]})
    for ax, probs, title in ((axes[0], toy.probs_before, "before"), (axes[1], toy.probs_after, "after")):
        sns.heatmap(probs, ax=ax, vmin=0, vmax=1, cmap="viridis", cbar=ax is axes[1],
                    yticklabels=[f"head {i}" for i in range(probs.shape[0])])
        ax.set(xlabel="channel", title=f"{title}: share of each channel per head")
        ax.tick_params(axis="y", rotation=0)
    axes[2].plot(toy.loss)
    axes[2].set(xlabel="step", ylabel="partition loss", title="loss")
    fig.suptitle("Partition loss (paper A Eq. 2): heads that start alike divide the channels among themselves", y=1.04)
    fig.tight_layout()
    return _save(fig, path)


def ccc_vs_mse(table: pd.DataFrame, traces: dict, path=None):
    """Valence predictions over time, and their MSE beside 1 - CCC."""
    fig, axes = plt.subplots(1, 2, figsize=(13, 3.6), gridspec_kw={"width_ratios": [1.5, 1]})
    axes[0].plot(traces["truth"], color="black", lw=2.5, label="truth")
    for name in table["prediction"]:
        axes[0].plot(traces[name], lw=1.2, label=name)
    axes[0].set(xlabel="frame", ylabel="valence", title="one video's valence and four predictions")
    axes[0].legend(fontsize=7, loc="lower left")
    table.set_index("prediction")[["MSE", "1 - CCC (the loss)"]].plot.barh(ax=axes[1])
    axes[1].set(xlabel="loss (lower is better)", ylabel="", title="MSE rewards the mean; CCC does not")
    fig.tight_layout()
    return _save(fig, path)


def attention_diversity_toy(toy, path=None):
    """Two attention maps before and after DDAMFN's attention loss, and the loss against their distance."""
    fig, axes = plt.subplots(1, 5, figsize=(15, 3), gridspec_kw={"width_ratios": [1, 1, 1, 1, 1.4]})
    for i, (maps, when) in enumerate(((toy.maps_before, "before"), (toy.maps_after, "after"))):
        for h in range(2):
            ax = axes[2 * i + h]
            ax.imshow(maps[h], vmin=0, vmax=1, cmap="magma")
            ax.set(title=f"{when}: head {h}", xticks=[], yticks=[])
    axes[4].loglog(toy.curve["mean squared difference"], toy.curve["loss"])
    axes[4].set(xlabel="MSE between the two heads", ylabel="attention loss", title="loss = 1 / (MSE + eps)")
    fig.suptitle("DDAMFN attention loss: minimising it pushes the heads to attend to different places", y=1.05)
    fig.tight_layout()
    return _save(fig, path)


def focal_curves(curves: pd.DataFrame, path=None):
    """Focal loss against the true class's probability for several gammas (gamma 0 = cross-entropy)."""
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    x = curves.columns[0]
    for col in curves.columns[1:]:
        ax.plot(curves[x], curves[col], label=col)
    ax.set(xlabel=x, ylabel="loss", yscale="log",
           title="Focal loss: easy frames (high p) stop counting")
    ax.legend()
    fig.tight_layout()
    return _save(fig, path)


def patch_grids(image, grids: dict[str, tuple[list[int], list[int], int]], path=None):
    """Where SCAN's local patches and CCI's blocks fall on the face: for each panel, the cut positions
    (rows, cols) on a feature map of stride `stride` pixels, drawn on the resized image."""
    fig, axes = plt.subplots(1, len(grids), figsize=(3.3 * len(grids), 3.5))
    for ax, (title, (rows, cols, stride)) in zip(np.atleast_1d(axes), grids.items()):
        size = rows[-1] * stride
        ax.imshow(np.asarray(image), extent=(0, size, size, 0))
        for r in rows[1:-1]:
            ax.axhline(r * stride, color="yellow", lw=1.2)
        for c in cols[1:-1]:
            ax.axvline(c * stride, color="yellow", lw=1.2)
        ax.set(title=title, xticks=[], yticks=[])
    fig.tight_layout()
    return _save(fig, path)


# ------------------------------------------------------------------ notebook 07: multi-task results

def au_f1_thresholds(fixed: dict[str, float], tuned: dict[str, float], thresholds: dict[str, float], path=None,
                     title="Per-AU F1 (validation): threshold 0.5 vs tuned per AU"):
    """Per-AU F1 at 0.5 beside F1 at each AU's tuned threshold (printed above its bar)."""
    names = list(fixed)
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(10, 3.4))
    ax.bar(x - 0.2, [fixed[n] for n in names], 0.4, label="threshold 0.5")
    bars = ax.bar(x + 0.2, [tuned[n] for n in names], 0.4, label="tuned threshold")
    for b, n in zip(bars, names):
        ax.text(b.get_x() + b.get_width() / 2, b.get_height() + 0.01, f"{thresholds[n]:.2f}", ha="center", fontsize=7)
    ax.set(xticks=x, xticklabels=names, ylabel="F1", ylim=(0, 1.1), title=title)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def va_scatter(va_true: np.ndarray, va_pred: np.ndarray, path=None, title="Valence and arousal: prediction vs truth"):
    """Predicted against true valence and arousal (frames with a valid VA), with the identity line."""
    ok = ~(va_true == -5).any(axis=1)
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.8))
    for i, (ax, name) in enumerate(zip(axes, ("valence", "arousal"))):
        ax.scatter(va_true[ok, i], va_pred[ok, i], s=4, alpha=0.4)
        ax.plot([-1, 1], [-1, 1], color="black", lw=1)
        ax.set(xlim=(-1, 1), ylim=(-1, 1), xlabel=f"true {name}", ylabel=f"predicted {name}", aspect="equal")
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def model_scores(scores: dict[str, float], references: dict[str, float] | None = None, path=None,
                 metric: str = "P_EXPR", title: str = "Validation score per model"):
    """One bar per trained model, dashed lines for the reference points (initialisation, trivial predictor)."""
    fig, ax = plt.subplots(figsize=(1.3 * len(scores) + 2.5, 3.2))
    names = list(scores)
    bars = ax.bar(names, [scores[n] for n in names], color=sns.color_palette("deep", len(names)))
    ax.bar_label(bars, fmt="%.3f", fontsize=8)
    for (name, value), style in zip((references or {}).items(), ("--", ":", "-.")):
        ax.axhline(value, ls=style, c="0.3", lw=1, label=f"{name} {value:.3f}")
    if references:
        ax.legend(fontsize=8, loc="upper left")
    ax.set(ylabel=metric, title=title, ylim=(0, max(1.0, max(scores.values()) * 1.1)))
    ax.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    return _save(fig, path)


def video_timeline(truth: np.ndarray, predictions: dict[str, np.ndarray], classes: Sequence[str], path=None,
                   title: str = "One validation video, frame by frame"):
    """The true class of every frame of a video and each model's prediction, one row each: flicker
    between frames is what temporal models are meant to remove."""
    rows = {"truth": np.asarray(truth), **{k: np.asarray(v) for k, v in predictions.items()}}
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(rows) + 1.2))
    cmap = plt.get_cmap("tab10", len(classes))
    ax.imshow(np.stack(list(rows.values())), aspect="auto", cmap=cmap, vmin=-0.5, vmax=len(classes) - 0.5,
              interpolation="nearest")
    ax.set_yticks(range(len(rows)), list(rows))
    ax.set_xlabel("frame")
    handles = [plt.Rectangle((0, 0), 1, 1, color=cmap(c)) for c in range(len(classes))]
    ax.legend(handles, classes, ncol=len(classes), fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.35 if len(rows) < 4 else -0.2))
    ax.set_title(title)
    fig.tight_layout()
    return _save(fig, path)


def _picks(n_items: int, n: int) -> np.ndarray:
    return np.linspace(0, n_items - 1, min(n, n_items)).astype(int)


def domains_with_landmarks(datasets: dict, n: int = 8, path=None, title="The two domains, with their landmarks"):
    """A row of evenly spaced faces per dataset (FrameDataset with targets="landmarks"), with their
    68 landmark targets drawn in pixels."""
    from .data.plots import image_rows
    from .losses import denormalize_landmarks

    rows, points = {}, {}
    for name, ds in datasets.items():
        idx = _picks(len(ds), n)
        rows[name] = [ds.image(i) for i in idx]
        points[name] = [denormalize_landmarks(ds.landmarks[i], ds.image_size).numpy() for i in idx]
    return image_rows(rows, points, path=path, title=title)


def landmark_predictions(dataset, predicted: np.ndarray, n: int = 8, path=None, title="Landmarks: truth and prediction"):
    """The same faces twice: the landmark targets above, a model's predictions (normalised, (N, 68, 2))
    below."""
    from .data.plots import image_rows
    from .losses import denormalize_landmarks

    idx = _picks(len(dataset), n)
    faces = [dataset.image(i) for i in idx]
    px = lambda pts: denormalize_landmarks(torch.as_tensor(pts), dataset.image_size).numpy()
    return image_rows({"truth": faces, "predicted": faces},
                      {"truth": [px(dataset.landmarks[i]) for i in idx], "predicted": [px(predicted[i]) for i in idx]},
                      path=path, title=title)
