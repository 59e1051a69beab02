"""The kit's figures: each returns its matplotlib Figure and, given a path, saves it as PNG."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator
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
                path=None, title: str | None = None, groups=None):
    """A row of faces per class; images are uint8 (3,H,W) tensors or (H,W,3) arrays. Pass each frame's
    video as `groups` so a row shows different people, not consecutive frames of one."""
    from .data.plots import landmark_grid   # data.plots builds on this module

    return landmark_grid(images, labels, None, classes, per_class=per_class, path=path, title=title, groups=groups)


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


def learning_curves(history: pd.DataFrame, path=None, loss_title="training loss and its terms"):
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
    for ax in (a, b):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))    # epochs are whole numbers
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
    ax.set_title(title + ("\nrow-normalised: each true class sums to 1 (recall on the diagonal)" if normalize else "\ncounts"),
                 fontsize=10)
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
    """Per-AU F1 at 0.5 beside F1 at each AU's tuned threshold; the thresholds are not F1 values, so they
    are written under the AU names (x axis), not on the F1 axis."""
    names = list(fixed)
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(10, 3.6))
    ax.bar(x - 0.2, [fixed[n] for n in names], 0.4, label="F1 at threshold 0.5")
    ax.bar(x + 0.2, [tuned[n] for n in names], 0.4, label="F1 at the AU's tuned threshold t")
    ax.set(xticks=x, xticklabels=[f"{n}\nt={thresholds[n]:.2f}" for n in names], ylabel="F1", ylim=(0, 1.05),
           title=title)
    ax.tick_params(axis="x", labelsize=8)
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
                 metric: str = "P_EXPR", title: str = "Validation score per model",
                 intervals: dict[str, tuple[float, float]] | None = None):
    """One bar per trained model, dashed lines for the reference points (initialisation, trivial
    predictor), and each bar's 95% interval over videos where given (bars whose intervals overlap
    are not told apart by this split)."""
    import textwrap

    fig, ax = plt.subplots(figsize=(1.8 * len(scores) + 2.5, 3.4))
    names = list(scores)
    err = None
    if intervals:
        err = np.array([[scores[n] - intervals[n][0], intervals[n][1] - scores[n]] if n in intervals else [0, 0]
                        for n in names]).T
    bars = ax.bar(range(len(names)), [scores[n] for n in names], color=sns.color_palette("deep", len(names)),
                  yerr=err, capsize=4, error_kw={"lw": 1})
    ax.set_xticks(range(len(names)), [textwrap.fill(n, 22) for n in names])   # long names wrap, never overlap
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
                   title: str = "One validation video, frame by frame", hidden: np.ndarray | None = None,
                   truth_label: str = "truth"):
    """The true class of every frame of a video and each model's prediction, one row each: flicker
    between frames is what temporal models are meant to remove. `hidden` marks (with a triangle above
    the truth row) the frames whose expression a hand or a blur hides. A class of -1 (no face) is blank."""
    rows = {truth_label: np.asarray(truth), **{k: np.asarray(v) for k, v in predictions.items()}}
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(rows) + 1.2))
    cmap = plt.get_cmap("tab10", len(classes))
    ax.imshow(np.ma.masked_less(np.stack(list(rows.values())), 0), aspect="auto", cmap=cmap, vmin=-0.5,
              vmax=len(classes) - 0.5, interpolation="nearest")
    ax.set_yticks(range(len(rows)), list(rows))
    ax.set_xlabel("frame")
    handles = [plt.Rectangle((0, 0), 1, 1, color=cmap(c)) for c in range(len(classes))]
    labels = list(classes)
    if hidden is not None and np.any(hidden):
        marks = np.flatnonzero(hidden)
        handles.append(ax.scatter(marks, np.full(len(marks), -0.35), marker="v", s=30, c="k", zorder=3))
        labels.append("expression hidden")
        ax.set_ylim(len(rows) - 0.5, -0.7)
    ax.legend(handles, labels, ncol=len(labels), fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.35 if len(rows) < 4 else -0.2))
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


# ------------------------------------------------------------------ notebook 09: ensembles

def scores_with_intervals(table: pd.DataFrame, path=None, metric: str = "P_EXPR",
                          title: str = "Members and ensembles (95% bootstrap interval over videos)"):
    """One horizontal bar per row of an ensemble table (columns model, kind, score, low, high), with its
    interval: overlapping intervals mean the data cannot tell the two apart."""
    fig, ax = plt.subplots(figsize=(8, 0.38 * len(table) + 1.2))
    colors = ["tab:gray" if k == "member" else "tab:blue" for k in table["kind"]]
    y = np.arange(len(table))[::-1]
    ax.barh(y, table["score"], color=colors, alpha=0.8)
    ax.errorbar(table["score"], y, xerr=[table["score"] - table["low"], table["high"] - table["score"]],
                fmt="none", ecolor="k", capsize=3, lw=1)
    for yi, s in zip(y, table["score"]):
        ax.text(s + 0.005, yi + 0.2, f"{s:.3f}", fontsize=8)
    ax.set_yticks(y, table["model"], fontsize=8)
    ax.set(xlabel=metric, title=title)
    fig.tight_layout()
    return _save(fig, path)


def per_class_f1_compare(f1s: dict[str, dict[str, float]], path=None, title="Per-class F1 (validation)"):
    """Grouped bars: per-class F1 of several models side by side (e.g. the best member and the ensemble)."""
    df = pd.DataFrame(f1s).rename_axis("class").reset_index().melt(id_vars="class", var_name="model", value_name="F1")
    fig, ax = plt.subplots(figsize=(9, 3.2))
    sns.barplot(data=df, x="class", y="F1", hue="model", ax=ax)
    ax.set(ylim=(0, 1.05), title=title)
    ax.tick_params(axis="x", rotation=30)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def diversity_vs_gain(study: pd.DataFrame, disagreement: np.ndarray, names: Sequence[str], path=None):
    """Left: how often each pair of members disagrees. Right: for every subset of >= 2 members, their
    mean pairwise disagreement against what soft voting gains over the subset's mean member."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8), gridspec_kw={"width_ratios": [1, 1.3]})
    sns.heatmap(disagreement, annot=True, fmt=".2f", cmap="magma_r", xticklabels=names, yticklabels=names,
                cbar=False, ax=a, annot_kws={"fontsize": 8})
    a.set_title("pairwise disagreement (share of frames)")
    a.tick_params(labelsize=7)
    sns.scatterplot(data=study, x="disagreement", y="gain_over_mean", hue="size", palette="viridis", ax=b)
    b.axhline(0, c="0.5", lw=1, ls="--")
    r = np.corrcoef(study["disagreement"], study["gain_over_mean"])[0, 1] if len(study) > 2 else float("nan")
    b.set(xlabel="mean pairwise disagreement of the subset", ylabel="soft voting - mean member",
          title=f"more diverse subsets gain more? (r = {r:.2f})")
    b.legend(title="members", fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


# ------------------------------------------------------------------ notebook 00: the quickstart

def predictions_grid(images: Sequence, probs: np.ndarray, labels: Sequence[int], classes: Sequence[str],
                     cams: np.ndarray | None = None, top: int = 3, path=None,
                     title: str = "Validation faces: truth, and the model's three most likely classes"):
    """One column per face: the face (with its Grad-CAM overlay below when `cams` is given) and a bar
    chart of its top classes, the true class in green when it is among them."""
    n = len(images)
    rows = 3 if cams is not None else 2
    fig, axes = plt.subplots(rows, n, figsize=(2.1 * n, 2.0 * rows + 0.4), squeeze=False,
                             gridspec_kw={"height_ratios": [1.2] * (rows - 1) + [0.9]})
    for j in range(n):
        img = np.asarray(images[j].permute(1, 2, 0) if isinstance(images[j], torch.Tensor) else images[j])
        axes[0, j].imshow(img)
        axes[0, j].set_title(f"true: {classes[labels[j]]}", fontsize=8)
        if cams is not None:
            axes[1, j].imshow(img)
            axes[1, j].imshow(cams[j], cmap="jet", alpha=0.45, vmin=0, vmax=1)
            axes[1, j].set_title("Grad-CAM", fontsize=8)
        order = np.argsort(probs[j])[::-1][:top]
        ax = axes[-1, j]
        ax.barh(range(top)[::-1], probs[j][order], color=["tab:green" if c == labels[j] else "tab:gray" for c in order])
        ax.set_yticks(range(top)[::-1], [classes[c] for c in order], fontsize=7)
        ax.set_xlim(0, 1)
        ax.tick_params(axis="x", labelsize=7)
    for ax in axes[:-1].ravel():
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


# ------------------------------------------------------------------ notebook 10: where the models look

def cam_overlay(pixels: np.ndarray, cam: np.ndarray, image_weight: float = 0.5) -> np.ndarray:
    """A map (H, W) in [0, 1] over a face (H, W, 3) in [0, 1], jet colours (pytorch-grad-cam's
    show_cam_on_image); returns (H, W, 3) floats in [0, 1]."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    return show_cam_on_image(np.float32(pixels), np.float32(cam), use_rgb=True, image_weight=image_weight) / 255.0


def _face_axis(ax, image, title: str | None = None, color: str = "k", mask: np.ndarray | None = None, fontsize=7):
    ax.imshow(image)
    if mask is not None and mask.any():
        ax.contour(mask.astype(float), levels=[0.5], colors="w", linewidths=0.8)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=fontsize, color=color)


def cam_grid(rows: dict[str, dict], path=None, title="Grad-CAM of the predicted class (paper C Figure 3 layout)"):
    """Paper C Figure 3's layout for several models: per model a row of faces, then a row of the same
    faces with the map over them, predicted and true label underneath (green: right, red: wrong).
    rows: model name -> dict(pixels (N, H, W, 3), maps (N, H, W), pred (N,), true (N,), classes)."""
    n = max(len(r["maps"]) for r in rows.values())
    fig, axes = plt.subplots(2 * len(rows), n, figsize=(1.25 * n, 2.75 * len(rows)), squeeze=False)
    for r, (name, row) in enumerate(rows.items()):
        for j in range(n):
            top, bottom = axes[2 * r, j], axes[2 * r + 1, j]
            if j >= len(row["maps"]):
                top.axis("off")
                bottom.axis("off")
                continue
            pred, true, classes = row["pred"][j], row["true"][j], row["classes"]
            _face_axis(top, row["pixels"][j])
            _face_axis(bottom, cam_overlay(row["pixels"][j], row["maps"][j]))
            empty = "" if np.asarray(row["maps"][j]).any() else "\n(empty map)"
            bottom.set_xlabel(f"pred {classes[pred]}\ntrue {classes[true]}{empty}", fontsize=7,
                              color="tab:green" if pred == true else "tab:red")
        axes[2 * r, 0].set_ylabel(name, fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def head_maps(pixels: np.ndarray, columns: dict[str, np.ndarray], captions: Sequence[str] | None = None,
              masks: np.ndarray | None = None, path=None, title="One map per attention head"):
    """Faces (rows) beside several maps of each (columns: name -> (N, H, W)), e.g. Grad-CAM on each DAN
    head's attended map and each head's raw attention; the white line is the class's AU regions."""
    n, k = len(pixels), len(columns)
    fig, axes = plt.subplots(n, k + 1, figsize=(1.3 * (k + 1), 1.4 * n + 0.6), squeeze=False)
    for i in range(n):
        mask = None if masks is None else masks[i]
        _face_axis(axes[i, 0], pixels[i], None, mask=mask)
        if captions is not None:
            axes[i, 0].set_ylabel(captions[i], fontsize=7)
        for j, (name, maps) in enumerate(columns.items()):
            _face_axis(axes[i, j + 1], cam_overlay(pixels[i], maps[i]), name if i == 0 else None, mask=mask)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def au_regions(pixels: np.ndarray, masks: np.ndarray, captions: Sequence[str], path=None,
               title="Where each class's action units act (the pointing score's ground truth)"):
    """Faces with their class's AU regions shaded, captioned (e.g. class, AUs, share of the image)."""
    n = len(pixels)
    fig, axes = plt.subplots(1, n, figsize=(1.45 * n, 2.0), squeeze=False)
    for ax, px, m, cap in zip(axes[0], pixels, masks, captions):
        shaded = px * (1 - 0.45 * m[..., None]) + 0.45 * m[..., None] * np.array([1.0, 0.85, 0.0])
        _face_axis(ax, shaded, cap, mask=m)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def pointing_bars(df: pd.DataFrame, x: str = "class", hue: str = "model", path=None,
                  title="Pointing score per class (1 = no better than a uniform map)", order=None, hue_order=None,
                  palette=None):
    """Mean pointing score with 95% intervals over faces (bootstrap), grouped by x and hue; dashed line at 1.
    palette "paired" colours hue levels in light/dark pairs (e.g. untrained/trained of one layer)."""
    fig, ax = plt.subplots(figsize=(9.5, 3.3))
    if palette == "paired":
        palette = sns.color_palette("Paired", len(hue_order or df[hue].unique()))
    sns.barplot(data=df, x=x, y="score", hue=hue, order=order, hue_order=hue_order, palette=palette,
                errorbar=("ci", 95), seed=0, ax=ax)
    ax.axhline(1.0, color="k", ls="--", lw=1)
    ax.set_ylabel("pointing score")
    ax.set_title(title)
    ax.tick_params(axis="x", rotation=20)
    ax.legend(fontsize=8, bbox_to_anchor=(1.01, 1), loc="upper left")
    fig.tight_layout()
    return _save(fig, path)


def failure_gallery(pixels: np.ndarray, cam_pred: np.ndarray, cam_true: np.ndarray, pred: Sequence[int],
                    true: Sequence[int], confidence: Sequence[float], classes: Sequence[str],
                    masks: np.ndarray | None = None, path=None, title="Confident mistakes: where the model looked"):
    """One column per mistake: the face (white line: the true class's AU regions), the map for the
    predicted class, the map for the true class."""
    n = len(pixels)
    fig, axes = plt.subplots(3, max(n, 1), figsize=(1.5 * max(n, 1), 5.0), squeeze=False)
    for j in range(n):
        mask = None if masks is None else masks[j]
        _face_axis(axes[0, j], pixels[j], f"true {classes[true[j]]}", mask=mask)
        _face_axis(axes[1, j], cam_overlay(pixels[j], cam_pred[j]),
                   f"pred {classes[pred[j]]} ({confidence[j]:.0%})", color="tab:red", mask=mask)
        _face_axis(axes[2, j], cam_overlay(pixels[j], cam_true[j]), f"for {classes[true[j]]}", mask=mask)
    for r, label in enumerate(("face", "map: predicted", "map: true class")):
        axes[r, 0].set_ylabel(label, fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def cam_panel(pixels: np.ndarray, cam: np.ndarray, mask: np.ndarray | None = None, title: str = "", path=None):
    """One face three ways: the face with the target class's AU regions, the map over it, the map alone."""
    fig, axes = plt.subplots(1, 3, figsize=(6.6, 2.5))
    _face_axis(axes[0], pixels, "face, AU regions", mask=mask, fontsize=8)
    _face_axis(axes[1], cam_overlay(pixels, cam), "overlay", mask=mask, fontsize=8)
    axes[2].imshow(cam, cmap="jet", vmin=0, vmax=1)
    axes[2].set(xticks=[], yticks=[])
    axes[2].set_title("map", fontsize=8)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def action_units(images: np.ndarray, names: Sequence[str], captions: Sequence[str], changed: np.ndarray, path=None,
                 title="The 12 ABAW action units, each alone on one synthetic face (outlined: what it changed)"):
    """The glossary's AU table: a neutral face, then the same face with one AU active, its change outlined."""
    cols = 5
    rows = -(-len(images) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.9 * cols, 2.5 * rows), squeeze=False)
    for ax in axes.flat[len(images):]:
        ax.axis("off")
    for ax, image, name, cap, mask in zip(axes.flat, images, names, captions, changed):
        _face_axis(ax, image, f"{name}\n{cap}", mask=mask, fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)
