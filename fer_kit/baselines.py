"""Trivial reference predictors: a number only means something next to what no real model can miss."""
from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from . import metrics


def _pixels(dataset, size: int) -> np.ndarray:
    """Raw RGB pixels of every frame, downsampled to size x size, as float rows."""
    images = torch.stack([dataset.image(i) for i in range(len(dataset))]).float() / 255
    if images.shape[-1] != size:
        images = F.interpolate(images, size=(size, size), mode="area")
    return images.flatten(1).numpy()


def pixel_logistic_regression(train, val, size: int = 48, max_iter: int = 200, C: float = 0.01) -> dict:
    """Multinomial logistic regression on standardised raw pixels of the same split.

    If this scores close to a trained CNN, the task is a matter of fixed pixel positions and teaches
    nothing. lbfgs is capped at `max_iter` iterations: a baseline need not be polished to be a baseline.
    """
    x_tr, x_va = _pixels(train, size), _pixels(val, size)
    y_tr, y_va = train.labels.numpy(), val.labels.numpy()
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter, class_weight="balanced"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(x_tr, y_tr)
    classes = list(getattr(train.table, "classes", range(int(y_tr.max()) + 1)))
    return metrics.expr_report(y_va, clf.predict(x_va), num_classes=len(classes), class_names=classes)


def majority_class(train, val) -> dict:
    """Always predict the most frequent training class."""
    y_tr, y_va = train.labels.numpy(), val.labels.numpy()
    classes = list(train.table.classes)
    pred = np.full_like(y_va, np.bincount(y_tr, minlength=len(classes)).argmax())
    return metrics.expr_report(y_va, pred, num_classes=len(classes), class_names=classes)
