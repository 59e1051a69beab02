"""Face detection with OpenCV's Haar cascade, the detector of DAN's demo (paper_code_notes §1.3).

ABAW ships faces already cropped and aligned; this is for everything else (a webcam frame, a photo, a
dataset that gives whole images). The Haar cascade is fast, needs no weights download and is good
enough for frontal faces; papers A and C used stronger detectors (DeepFace, MTCNN) on their external
data. opencv-python(-headless) 4.x wheels bundle the cascade files under cv2.data.haarcascades.
"""
from __future__ import annotations

import os
import warnings

import cv2
import numpy as np
import torch

from .transforms import crop_face

_CASCADE = "haarcascade_frontalface_default.xml"


def default_cascade_path() -> str | None:
    """Where the installed OpenCV keeps the frontal-face cascade, or None if it ships none."""
    folder = getattr(getattr(cv2, "data", None), "haarcascades", None)
    return os.path.join(folder, _CASCADE) if folder else None


class FaceDetector:
    """Haar-cascade face detector: `detect(image)` gives boxes (x0, y0, x1, y1), largest first."""

    def __init__(self, cascade_path: str | None = None, scale_factor: float = 1.1, min_neighbors: int = 5,
                 min_size: int = 24):
        path = cascade_path or default_cascade_path()
        if not path or not os.path.isfile(path):
            raise RuntimeError(
                f"Haar cascade file not found ({path or 'cv2.data.haarcascades is missing'}). "
                f"opencv>=5 wheels no longer bundle the cascades: install "
                f"'pip install \"opencv-python-headless<5\"', or download {_CASCADE} from the OpenCV "
                f"repository (data/haarcascades/) and pass FaceDetector(cascade_path=...).")
        self.cascade = cv2.CascadeClassifier(path)
        if self.cascade.empty():
            raise RuntimeError(f"OpenCV could not load a Haar cascade from {path}")
        self.scale_factor, self.min_neighbors, self.min_size = scale_factor, min_neighbors, min_size

    def detect(self, image) -> list[tuple[int, int, int, int]]:
        """Face boxes (x0, y0, x1, y1) in pixels of an RGB uint8 image ((H, W, 3) array or (3, H, W)
        tensor), largest first; an empty list when there is no face."""
        if isinstance(image, torch.Tensor):
            image = image.permute(1, 2, 0).numpy()
        gray = cv2.equalizeHist(cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY))
        found = self.cascade.detectMultiScale(gray, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
                                              minSize=(self.min_size, self.min_size))
        boxes = [(int(x), int(y), int(x + w), int(y + h)) for x, y, w, h in found]
        return sorted(boxes, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]), reverse=True)

    def detect_and_crop(self, image, size: int = 112, margin: float = 0.2):
        """The largest face, cropped square with `margin` and resized (see crop_face); the same kind of
        image as given. Without a face, warns and returns the central square, so a pipeline keeps going."""
        boxes = self.detect(image)
        if boxes:
            return crop_face(image, boxes[0], margin=margin, size=size)
        h, w = (image.shape[:2] if isinstance(image, np.ndarray) else image.shape[-2:])
        side = min(h, w)
        warnings.warn("no face found: using a centre crop", stacklevel=2)
        box = ((w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2)
        return crop_face(image, box, margin=0.0, size=size)
