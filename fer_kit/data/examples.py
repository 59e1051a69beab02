"""A miniature of each dataset's on-disk layout, written with the kit's synthetic faces.

A reader's docstring says what it expects; a folder you can open says it better. `write_example(kind,
root)` lays out a few faces per class exactly as RAF-DB, AffectNet, FER2013 (csv or folders), ExpW or a
plain folder of class folders ship them, each face labelled in that dataset's own code, so notebook 02
can read them back through `read_splits` and show the split sizes and drop reports a real copy would
give. `LAYOUTS` is the same knowledge as text, `PARAMETERS` the one line that points a run at a copy.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ..labels import (AFFECTNET_TO_AFFWILD2, EXPR_CLASSES, EXPW_TO_AFFWILD2, FER2013_CLASSES,
                      FER2013_TO_AFFWILD2, RAFDB_TO_AFFWILD2)
from .affectnet import COLUMNS as AFFECTNET_COLUMNS
from .fer2013 import SIZE as FER_SIZE
from .splits import KINDS

# what a copy of each dataset looks like on disk, as the readers expect it (abaw: DESIGN.md §3; lsd:
# fer_kit.data.lsd)
LAYOUTS: dict[str, str] = {
    "rafdb": """<root>/basic/EmoLabel/list_patition_label.txt   lines 'train_00001.jpg 5' (1 Surprise ... 7 Neutral)
<root>/basic/Image/aligned/train_00001_aligned.jpg  (and test_0001_aligned.jpg ...)""",
    "affectnet": """<root>/Manually_Annotated_file_lists/training.csv     columns subDirectory_filePath,face_x,face_y,
<root>/Manually_Annotated_file_lists/validation.csv     face_width,face_height,facial_landmarks,expression,valence,arousal
<root>/Manually_Annotated_Images/<sub>/<name>.jpg        (0 Neutral ... 6 Anger, 7 Contempt, 8-10 no expression)""",
    "fer2013": """<root>/fer2013.csv   columns emotion,pixels,Usage: 48x48 grey pixels as one string per row
                     (0 Angry ... 6 Neutral; Usage Training, PublicTest, PrivateTest)""",
    "fer2013_folders": """<root>/train/<angry|disgust|fear|happy|neutral|sad|surprise>/<any>.png
<root>/test/<same class folders>/<any>.png""",
    "expw": """<root>/label/label.lst   lines 'image_name face_id top left right bottom confidence expression'
<root>/image/origin/<image_name>   whole photos; the face is the box (0 angry ... 6 neutral)""",
    "folders": """<root>/<class>/<any>.jpg     one folder per class, named in English (happy, Happiness, sad, ...);
or <root>/train/<class>/, with val/ and test/ beside it when you have them""",
}

PARAMETERS: dict[str, str] = {kind: f"-p dataset {kind} -p data_root /data/{folder}" for kind, folder in (
    ("abaw", "Aff-Wild2"), ("lsd", "ABAW4-LSD"), ("affectnet", "AffectNet"), ("rafdb", "RAF-DB"),
    ("fer2013", "fer2013"), ("fer2013_folders", "FER2013"), ("expw", "ExpW"), ("folders", "my_faces"))}
assert set(PARAMETERS) == set(KINDS)

SEVEN = range(7)                                            # Aff-Wild2 Neutral ... Surprise, no Other


def _own_code(to_affwild2: dict[int, int]) -> dict[int, int]:
    """Aff-Wild2 index -> the dataset's own label code."""
    return {affwild2: own for own, affwild2 in to_affwild2.items()}


def class_faces(label: int, per_class: int, size: int, seed: int) -> np.ndarray:
    """The faces an example draws of one class, (4 * per_class + 1, size, size, 3) uint8: every split of
    every layout takes its faces from these, by position."""
    from .synthetic import render_faces

    return render_faces(4 * per_class + 1, label=label, size=size, seed=seed + 101 * label)["images"]


def _faces(classes, per_class: int, size: int, seed: int) -> dict[int, np.ndarray]:
    return {c: class_faces(c, per_class, size, seed) for c in classes}


def _save(image: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return path


def _grey(image: np.ndarray) -> np.ndarray:
    """FER2013's faces: 48 x 48, one grey channel."""
    return np.asarray(Image.fromarray(image).convert("L").resize((FER_SIZE, FER_SIZE), Image.BILINEAR))


def write_example(kind: str, root: str | Path, per_class: int = 4, size: int = 48, seed: int = 0) -> Path:
    """Write `per_class` faces per class and split (twice as many in train) in `kind`'s layout under
    root, labelled in the dataset's own codes; returns root. For still-image datasets each face is its
    own group, so a carved split takes whole faces."""
    if kind not in LAYOUTS:
        raise ValueError(f"no example layout for dataset {kind!r}; choose one of {', '.join(LAYOUTS)} (the ABAW "
                         "layout is what fer_kit.data.synthetic writes)")
    root = Path(root)
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} is not empty: write_example writes into a new or empty folder (it never "
                              "overwrites, so it cannot be pointed at a real copy by mistake)")
    counts = {"train": 2 * per_class, "test": per_class}
    if kind == "rafdb":
        code = _own_code(RAFDB_TO_AFFWILD2)
        faces = _faces(SEVEN, per_class, size, seed)
        lines, k = [], 0
        for split, n in counts.items():
            for c in SEVEN:
                for i in range(n):
                    k += 1
                    name = f"{split}_{k:05d}"
                    _save(faces[c][i + (2 * per_class if split == "test" else 0)],
                          root / "basic" / "Image" / "aligned" / f"{name}_aligned.jpg")
                    lines.append(f"{name}.jpg {code[c] + 1}")             # RAF-DB counts from 1
        (root / "basic" / "EmoLabel").mkdir(parents=True, exist_ok=True)
        (root / "basic" / "EmoLabel" / "list_patition_label.txt").write_text("\n".join(lines) + "\n")
    elif kind == "affectnet":
        # its 8th class is Contempt, which Aff-Wild2 lacks: the synthetic Other faces stand in for it
        # (read with num_classes=8 it becomes Other); a few rows labelled None (8) show a drop in the report
        code = {**_own_code(AFFECTNET_TO_AFFWILD2), 7: 7}
        faces = _faces(range(8), per_class, size, seed)
        lists = root / "Manually_Annotated_file_lists"
        lists.mkdir(parents=True, exist_ok=True)
        for (split, n), csv_name in zip(counts.items(), ("training.csv", "validation.csv")):
            rows = [",".join(AFFECTNET_COLUMNS)]
            for c in range(8):
                for i in range(n + (c == 0)):                              # one Neutral more, labelled None
                    name = f"{split}{c}/{i:03d}.jpg"
                    _save(faces[c][i + (2 * per_class + 1 if split == "test" else 0)],
                          root / "Manually_Annotated_Images" / name)
                    expression = 8 if (c == 0 and i == n) else code[c]
                    marks = ";".join("0.0" for _ in range(136))             # not read unless landmarks=True
                    rows.append(f"{name},0,0,{size},{size},{marks},{expression},0.0,0.0")
            (lists / csv_name).write_text("\n".join(rows) + "\n")
    elif kind == "fer2013":
        code = _own_code(FER2013_TO_AFFWILD2)
        faces = _faces(SEVEN, per_class, size, seed)
        rows = ["emotion,pixels,Usage"]
        for usage, n, start in (("Training", 2 * per_class, 0), ("PublicTest", per_class, 2 * per_class),
                                ("PrivateTest", per_class, 3 * per_class)):
            for c in SEVEN:
                for i in range(start, start + n):
                    rows.append(f'{code[c]},"{" ".join(map(str, _grey(faces[c][i]).ravel()))}",{usage}')
        root.mkdir(parents=True, exist_ok=True)
        (root / "fer2013.csv").write_text("\n".join(rows) + "\n")
    elif kind == "fer2013_folders":
        code = _own_code(FER2013_TO_AFFWILD2)
        faces = _faces(SEVEN, per_class, size, seed)
        for split, n in counts.items():
            for c in SEVEN:
                for i in range(n):
                    face = _grey(faces[c][i + (2 * per_class if split == "test" else 0)])
                    _save(face, root / split / FER2013_CLASSES[code[c]].lower() / f"{i:04d}.png")   # angry, ...
    elif kind == "expw":
        # whole photos with the face somewhere in them: the label line carries its box
        code = _own_code(EXPW_TO_AFFWILD2)
        faces = _faces(SEVEN, per_class, size, seed)
        rng = np.random.default_rng(seed)
        lines = []
        for c in SEVEN:
            for i in range(3 * per_class):
                photo = np.full((2 * size, 2 * size, 3), rng.integers(60, 200), np.uint8)
                top, left = (int(v) for v in rng.integers(0, size, 2))
                photo[top:top + size, left:left + size] = faces[c][i]
                name = f"photo_{c}_{i:03d}.jpg"
                _save(photo, root / "image" / "origin" / name)
                lines.append(f"{name} 0 {top} {left} {left + size} {top + size} 90.0 {code[c]}")
        (root / "label").mkdir(parents=True, exist_ok=True)
        (root / "label" / "label.lst").write_text("\n".join(lines) + "\n")
    else:                                                                   # folders: all 8 classes, no splits
        faces = _faces(range(8), per_class, size, seed)
        for c in range(8):
            for i in range(3 * per_class):
                _save(faces[c][i], root / EXPR_CLASSES[c].lower() / f"{i:04d}.jpg")
    return root
