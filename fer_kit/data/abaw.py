"""Readers for the Aff-Wild2 (ABAW) annotation files: per-task txt (EXPR, AU, VA) and the MTL csv.

Per-task layout (paper_code_notes §7.1): one `<video>.txt` per video under `<task>/Train_Set` and
`<task>/Validation_Set`; line 1 is a header, line k+1 labels frame k, whose face is
`cropped_aligned/<video>/%05d.jpg` (1-indexed). Invalid labels are EXPR -1, AU -1 and VA -5, and some
frames have no image because the face detector failed. The MTL csv (§7.2) lists images with 16 fields
`image,valence,arousal,expression,AU1..AU26` and the same invalid markers, per task. Everything a reader
leaves out is counted by reason, so a user always sees how much of the annotation survived.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from ..labels import AU_INVALID, AU_NAMES, EXPR_CLASSES, EXPR_INVALID, VA_INVALID
from .table import DropReport, FrameTable

TASK_DIRS = {"EXPR": "EXPR_Classification_Challenge", "AU": "AU_Detection_Challenge", "VA": "VA_Estimation_Challenge"}
# Aff-Wild2 publishes labels for Train_Set and Validation_Set; Test_Set is the kit's synthetic held-out split
# (other people), read the same way when a root has it
SPLITS = ("Train_Set", "Validation_Set", "Test_Set")


def find_task_dir(root: str | Path, task: str = "EXPR") -> Path:
    """Locate `<task>_..._Challenge` under root (ABAW releases nest it one or two folders deep)."""
    root = Path(root)
    if task not in TASK_DIRS:
        raise ValueError(f"unknown ABAW task {task!r}; expected one of {sorted(TASK_DIRS)}")
    if not root.is_dir():
        raise FileNotFoundError(f"data_root {root} does not exist or is not a folder")
    name = TASK_DIRS[task]
    for pattern in (name, f"*/{name}", f"*/*/{name}"):
        hits = sorted(p for p in root.glob(pattern) if p.is_dir())
        if hits:
            return hits[0]
    raise FileNotFoundError(f"no {name}/ folder found under {root} (looked up to two levels deep); "
                            f"expected the ABAW layout <root>/annotations/{name}/Train_Set/<video>.txt")


def find_image_root(root: str | Path) -> Path:
    root = Path(root)
    for cand in (root / "cropped_aligned", *sorted(root.glob("*/cropped_aligned"))):
        if cand.is_dir():
            return cand
    raise FileNotFoundError(f"no cropped_aligned/ folder found under {root}; expected <root>/cropped_aligned/<video>/00001.jpg")


def _header(txt: Path, lines: list[str], expected: list[str] | None, hint: str = "") -> None:
    if not lines:
        raise ValueError(f"{txt}: empty annotation file (expected a header line, then one label per frame)")
    first = [h.strip() for h in lines[0].split(",")]
    if first[0].lstrip("-").replace(".", "", 1).isdigit():
        raise ValueError(f"{txt}: line 1 should be a header such as {','.join(expected or [])!r}, got {lines[0]!r}")
    if expected is not None and len(first) != len(expected):
        raise ValueError(f"{txt}: header names {len(first)} columns, expected {len(expected)} ({','.join(expected)}){hint}")


def _whole(text: str) -> int:
    """An integer label as written ("2", "-1", "2.0"); "2.7", "nan" or "x" raise ValueError instead of
    being truncated to a class silently."""
    value = float(text)
    if not np.isfinite(value) or value != int(value):
        raise ValueError(text)
    return int(value)


def _parse_expr(text: str, where: str, num_classes: int) -> int | None:
    try:
        label = _whole(text)
    except ValueError:
        raise ValueError(f"{where}: expected an integer label 0..{num_classes - 1} or -1, got {text!r}; "
                         "fix or remove that line") from None
    if label == EXPR_INVALID:
        return None
    if not 0 <= label < num_classes:
        raise ValueError(f"{where}: label {label} is outside 0..{num_classes - 1} (-1 marks an unusable frame)")
    return label


def _parse_au(text: str, where: str) -> np.ndarray | None:
    parts = text.split(",")
    if len(parts) != len(AU_NAMES):
        raise ValueError(f"{where}: expected {len(AU_NAMES)} AU values ({','.join(AU_NAMES)}), got {len(parts)}: {text!r}")
    try:
        values = np.array([_whole(p) for p in parts], np.float32)
    except ValueError:
        raise ValueError(f"{where}: AU values must be 0, 1 or -1, got {text!r}") from None
    if (values == AU_INVALID).any():
        return None
    if not np.isin(values, (0, 1)).all():
        raise ValueError(f"{where}: AU values must be 0, 1 or -1, got {text!r}")
    return values


def _parse_va(text: str, where: str) -> np.ndarray | None:
    parts = text.split(",")
    if len(parts) != 2:
        raise ValueError(f"{where}: expected 'valence,arousal', got {text!r}")
    try:
        values = np.array([float(p) for p in parts], np.float32)
    except ValueError:
        raise ValueError(f"{where}: valence and arousal must be numbers, got {text!r}") from None
    if (values == VA_INVALID).any():
        return None
    if not (np.abs(values) <= 1).all():                 # NaN fails this too
        raise ValueError(f"{where}: valence/arousal must be in [-1, 1] (-5 marks an invalid frame), got {text!r}")
    return values


_INVALID = {"EXPR": "labelled -1", "AU": "AU labelled -1", "VA": "VA labelled -5"}


def read_task(root: str | Path, task: str = "EXPR", split: str = "Train_Set", num_classes: int = 8) -> FrameTable:
    """Read one ABAW task (EXPR, AU or VA) for one split, dropping invalid labels and missing images."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}; got {split!r}")
    task_dir = find_task_dir(root, task) / split
    image_root = find_image_root(root)
    files = sorted(task_dir.glob("*.txt"))
    if not files:
        raise FileNotFoundError(f"no <video>.txt annotation files in {task_dir}")
    expected = {"EXPR": list(EXPR_CLASSES[:num_classes]), "AU": list(AU_NAMES), "VA": ["valence", "arousal"]}[task]
    parse = {"EXPR": lambda t, w: _parse_expr(t, w, num_classes), "AU": _parse_au, "VA": _parse_va}[task]
    report = DropReport(source=f"{task} {split}")
    paths, values, videos = [], [], []
    for txt in files:
        lines = txt.read_text().splitlines()
        _header(txt, lines, expected, " (ABAW 2020/2021 EXPR files have 7 classes, ABAW3+ have 8: "
                "set num_classes)" if task == "EXPR" else "")
        image_dir = image_root / txt.stem
        report.videos += 1
        for k, line in enumerate(lines[1:], start=1):
            text = line.strip()
            if not text:
                report.drop("blank lines")
                continue
            value = parse(text, f"{txt}, line {k + 1}")
            report.lines += 1
            if value is None:
                report.drop(_INVALID[task])
                continue
            img = image_dir / f"{k:05d}.jpg"
            if not img.exists():
                report.drop("without an image")
                continue
            paths.append(img)
            values.append(value)
            videos.append(txt.stem)
    report.kept = len(paths)
    n = len(paths)
    labels = np.asarray(values, np.int64) if task == "EXPR" else np.full(n, -1, np.int64)
    extra = {}
    if task == "AU":
        extra["au"] = np.asarray(values, np.float32).reshape(n, len(AU_NAMES))
    if task == "VA":
        extra["va"] = np.asarray(values, np.float32).reshape(n, 2)
    classes = EXPR_CLASSES[:num_classes]
    return FrameTable(paths, labels, np.asarray(videos, dtype=str), classes, report, **extra)


def read_expr(root: str | Path, split: str = "Train_Set", num_classes: int = 8) -> FrameTable:
    """Read the EXPR annotations of one split under an ABAW-style root, dropping unusable frames."""
    return read_task(root, "EXPR", split, num_classes)


# ----------------------------------------------------------------------------------------------------
# MTL csv (s-Aff-Wild2)
# ----------------------------------------------------------------------------------------------------

MTL_NAMES = {
    "Train_Set": ("training_set_annotations.txt", "training_set_annotations_22.txt", "train_set.txt"),
    "Validation_Set": ("validation_set_annotations.txt", "validation_set_annotations_22.txt", "validation_set.txt"),
    "Test_Set": ("test_set_annotations.txt",),
}


def has_split(root: str | Path, split: str) -> bool:
    """Whether a root holds labels for a split: the synthetic faces hold Test_Set, Aff-Wild2 does not
    (its test labels are not public, so runs on it select and report on validation, as the papers did)."""
    try:
        find_mtl_file(root, split)
        return True
    except FileNotFoundError:
        pass
    return any(has_task(root, t) and any((find_task_dir(root, t) / split).glob("*.txt")) for t in TASK_DIRS)


def find_mtl_file(root: str | Path, split: str = "Train_Set") -> Path:
    """The MTL annotation csv of a split (names differ between ABAW editions), up to two levels deep."""
    root = Path(root)
    if root.is_file():
        return root
    if not root.is_dir():
        raise FileNotFoundError(f"data_root {root} does not exist")
    for name in MTL_NAMES[split]:
        for pattern in (name, f"*/{name}", f"*/*/{name}"):
            hits = sorted(root.glob(pattern))
            if hits:
                return hits[0]
    raise FileNotFoundError(f"no MTL annotation file for {split} under {root}; looked for {', '.join(MTL_NAMES[split])}")


def _inside(image_root: Path, name: str, where: str) -> Path:
    """image_root / name, refusing a name that leads out of the image folder (`../../etc/passwd`, an
    absolute path): an annotation file must not make the kit read files elsewhere."""
    path = image_root / name
    if Path(name).is_absolute() or not path.resolve().is_relative_to(image_root.resolve()):
        raise ValueError(f"{where}: image path {name!r} leads outside {image_root}; annotation paths must be "
                         "relative to cropped_aligned/, e.g. 'video1/00001.jpg'")
    return path


def read_mtl(root: str | Path, split: str = "Train_Set", drop_any_invalid: bool = False) -> FrameTable:
    """Read the MTL csv: every task's label per image, with per-task validity (table.task_masks()).

    A row is kept while at least one of its tasks is valid, so a frame with an invalid VA still trains
    EXPR (DMACS-2022's rule). `drop_any_invalid=True` is paper D's rule instead: a row goes as soon as
    any task is invalid (it left 52,154 training and 15,440 validation frames). Fields are read by
    position (16 of them); the header's wording varies between releases.
    """
    csv = find_mtl_file(root, split)
    image_root = find_image_root(csv.parent if Path(root).is_file() else root)
    lines = csv.read_text().splitlines()
    if not lines:
        raise ValueError(f"{csv}: empty file (expected a header, then image,valence,arousal,expression,12 AUs)")
    if lines[0].split(",")[0].strip().lower() not in ("image", "image_location", "name", "path"):
        raise ValueError(f"{csv}: line 1 should be a header 'image,valence,arousal,expression,AU1,...', got {lines[0][:80]!r}")
    report = DropReport(source=f"MTL {split}")
    paths, videos, labels, vas, aus = [], [], [], [], []
    for k, line in enumerate(lines[1:], start=2):
        text = line.strip()
        if not text:
            report.drop("blank lines")
            continue
        fields = [f.strip() for f in text.split(",")]
        where = f"{csv}, line {k}"
        if len(fields) != 16:
            raise ValueError(f"{where}: expected 16 fields (image, valence, arousal, expression, 12 AUs), got {len(fields)}")
        report.lines += 1
        va = _parse_va(",".join(fields[1:3]), where)
        expr = _parse_expr(fields[3], where, len(EXPR_CLASSES))
        au = _parse_au(",".join(fields[4:]), where)
        valid = (expr is not None, au is not None, va is not None)
        if not any(valid):
            report.drop("every task invalid")
            continue
        if drop_any_invalid and not all(valid):
            report.drop("some task invalid (paper D's rule)")
            continue
        img = _inside(image_root, fields[0], where)
        if not img.exists():
            report.drop("without an image")
            continue
        paths.append(img)
        videos.append(Path(fields[0]).parent.as_posix() or fields[0])
        labels.append(-1 if expr is None else expr)
        vas.append(np.full(2, np.nan, np.float32) if va is None else va)
        aus.append(np.full(len(AU_NAMES), -1, np.float32) if au is None else au)
    report.kept = len(paths)
    report.videos = len(set(videos))
    n = len(paths)
    return FrameTable(paths, np.asarray(labels, np.int64), np.asarray(videos, dtype=str), EXPR_CLASSES, report,
                      va=np.asarray(vas, np.float32).reshape(n, 2), au=np.asarray(aus, np.float32).reshape(n, len(AU_NAMES)))


def has_task(root: str | Path, task: str) -> bool:
    try:
        find_task_dir(root, task)
        return True
    except FileNotFoundError:
        return False


def read_abaw(root: str | Path, split: str = "Train_Set", num_classes: int = 8, drop_any_invalid: bool = False) -> FrameTable:
    """Every label an ABAW root holds for one split, in one multi-task table.

    Uses the MTL csv when the root has one; otherwise reads whichever per-task folders exist (EXPR, AU,
    VA) and joins them by image, a frame keeping the labels of every task that annotates it. Use
    `table.subset(table.task_masks()["EXPR"])` and the like for a single task.
    """
    try:
        find_mtl_file(root, split)
    except FileNotFoundError:
        pass
    else:
        if num_classes != 8:
            raise ValueError("the MTL csv uses the 8 ABAW3+ classes; num_classes must be 8")
        return read_mtl(root, split, drop_any_invalid)
    tasks = [t for t in TASK_DIRS if has_task(root, t)]
    if not tasks:
        raise FileNotFoundError(f"no ABAW annotations under {root}: expected an MTL csv "
                                f"({', '.join(MTL_NAMES[split])}) or folders {', '.join(TASK_DIRS.values())}")
    tables = {t: read_task(root, t, split, num_classes) for t in tasks}
    paths = sorted({p for t in tables.values() for p in t.paths})
    row = {p: i for i, p in enumerate(paths)}
    n = len(paths)
    labels, va, au = np.full(n, -1, np.int64), np.full((n, 2), np.nan, np.float32), np.full((n, 12), -1, np.float32)
    videos = np.empty(n, dtype=object)
    for task, t in tables.items():
        idx = np.array([row[p] for p in t.paths], np.int64)
        videos[idx] = t.videos
        if task == "EXPR":
            labels[idx] = t.labels
        elif task == "AU":
            au[idx] = t.au
        else:
            va[idx] = t.va
    if drop_any_invalid:
        keep = np.ones(n, bool)
        keep &= labels >= 0 if "EXPR" in tables else keep
        keep &= (au >= 0).all(axis=1) if "AU" in tables else keep
        keep &= np.isfinite(va).all(axis=1) if "VA" in tables else keep
    else:
        keep = np.ones(n, bool)
    report = DropReport(source=f"ABAW {split} ({' + '.join(tasks)})", videos=len(set(videos[keep])))
    for t in tables.values():
        report.lines += t.report.lines
        for why, k in t.report.dropped.items():
            report.drop(f"{why} ({t.report.source.split()[0]})", k)
    report.drop("some task invalid (paper D's rule)", int((~keep).sum()))
    report.kept = int(keep.sum())
    table = FrameTable(paths, labels, videos.astype(str), EXPR_CLASSES[:num_classes], report,
                       va=va if "VA" in tables else None, au=au if "AU" in tables else None)
    return table.subset(keep)


def _expr_file_classes(root: str | Path, split: str) -> int:
    """Classes the root's EXPR labels use: the header width of the per-task files, 8 for the MTL csv."""
    if not has_task(root, "EXPR"):
        return 8
    files = sorted((find_task_dir(root, "EXPR") / split).glob("*.txt"))
    if not files:
        return 8
    with open(files[0]) as f:
        return len(f.readline().split(","))


def drop_other(table: FrameTable) -> FrameTable:
    """The 7-class ABAW 2020 view of an 8-class (ABAW3+) table: frames labelled Other are dropped (and
    counted in the report); labels 0..6 keep their meaning, as the two sets share that order."""
    out = table.keep(table.labels != 7, "labelled Other (not in the 7-class ABAW 2020 set)",
                     source=f"{table.report.source}, 7 classes")
    return replace(out, classes=EXPR_CLASSES[:7])


def read_expr_any(root: str | Path, split: str = "Train_Set", num_classes: int = 8) -> FrameTable:
    """EXPR frames from the per-task files if the root has them, else from the MTL csv.

    num_classes=7 (ABAW 2020/2021, paper C) on 8-class files (ABAW3+ or the synthetic faces) reads all
    8 classes and drops the frames labelled Other (`drop_other`); 7-class files are read as they are.
    """
    if num_classes == 7 and _expr_file_classes(root, split) == 8:
        return drop_other(read_expr_any(root, split, 8))
    if has_task(root, "EXPR"):
        return read_expr(root, split, num_classes)
    table = read_abaw(root, split, num_classes)
    return table.keep(table.labels >= 0, "without a valid expression", source=f"EXPR from {table.report.source}")


def read_landmarks(root: str | Path, table: FrameTable) -> FrameTable:
    """Attach 68-point landmarks from `<root>/landmarks/<video>.txt` (the synthetic data writes them;
    lines `00001.jpg,x0,y0,...`); frames without an entry get NaN. Returns a new table."""
    folder = Path(root) / "landmarks"
    if not folder.is_dir():
        raise FileNotFoundError(f"no landmarks/ folder under {root}")
    out = np.full((len(table), 68, 2), np.nan, np.float32)
    cache: dict[str, dict[str, np.ndarray]] = {}
    for i, (path, video) in enumerate(zip(table.paths, table.videos)):
        if video not in cache:
            cache[video] = {}
            file = folder / f"{video}.txt"
            if file.exists():
                for n, line in enumerate(file.read_text().splitlines()[1:], start=2):
                    parts = line.split(",")
                    if len(parts) != 137:
                        raise ValueError(f"{file}, line {n}: expected an image name and 136 coordinates, got {len(parts)} fields")
                    cache[video][parts[0]] = np.asarray(parts[1:], np.float32).reshape(68, 2)
        pts = cache[video].get(Path(path).name)
        if pts is not None:
            out[i] = pts
    return replace(table, landmarks=out)


def split_by_video(table: FrameTable, val_fraction: float = 0.2, seed: int = 0) -> tuple[FrameTable, FrameTable]:
    """Split frames into two tables with no video in both (frames of one video are near-duplicates)."""
    names = np.unique(table.videos)
    if len(names) < 2:
        raise ValueError("need at least two videos to split by video")
    rng = np.random.default_rng(seed)
    n_val = min(max(1, int(round(val_fraction * len(names)))), len(names) - 1)
    val_names = set(rng.choice(names, size=n_val, replace=False))
    is_val = np.array([v in val_names for v in table.videos])
    return table.subset(~is_val), table.subset(is_val)
