import numpy as np
import pytest
from PIL import Image

from fer_kit.data.abaw import read_expr, split_by_video
from fer_kit.data.dataset import FrameDataset, load_image
from fer_kit.labels import EXPR_CLASSES

HEADER = ",".join(EXPR_CLASSES)


def write_video(root, name, labels, missing=(), split="Train_Set", header=HEADER):
    ann = root / "annotations" / "EXPR_Classification_Challenge" / split
    ann.mkdir(parents=True, exist_ok=True)
    (ann / f"{name}.txt").write_text("\n".join([header] + [str(x) for x in labels]) + "\n")
    frames = root / "cropped_aligned" / name
    frames.mkdir(parents=True, exist_ok=True)
    for k in range(1, len(labels) + 1):
        if k not in missing:
            Image.fromarray(np.full((112, 112, 3), 10 * k, np.uint8)).save(frames / f"{k:05d}.jpg")


def test_drops_invalid_and_missing_frames_and_counts_them(tmp_path):
    write_video(tmp_path, "v1", [0, -1, 4, 4, -1, 7], missing=(4,))
    write_video(tmp_path, "v2", [1, 2, 3])
    table = read_expr(tmp_path, "Train_Set")
    assert table.labels.tolist() == [0, 4, 7, 1, 2, 3]
    assert [p.name for p in table.paths[:3]] == ["00001.jpg", "00003.jpg", "00006.jpg"]
    assert table.report.dropped == {"labelled -1": 2, "without an image": 1}
    assert table.report.kept == 6 and table.report.lines == 9
    assert "dropped 2 labelled -1, 1 without an image" in str(table.report)


def test_label_out_of_range_names_file_and_line(tmp_path):
    write_video(tmp_path, "bad", [0, 9])
    with pytest.raises(ValueError, match=r"bad\.txt, line 3: label 9"):
        read_expr(tmp_path, "Train_Set")


def test_missing_header_and_garbage_are_clear_errors(tmp_path):
    write_video(tmp_path, "nohead", [0, 1], header="0")
    with pytest.raises(ValueError, match="header"):
        read_expr(tmp_path, "Train_Set")
    write_video(tmp_path / "g", "garbage", ["x"])
    with pytest.raises(ValueError, match="expected an integer label"):
        read_expr(tmp_path / "g", "Train_Set")


def test_missing_folders_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_expr(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="EXPR_Classification_Challenge"):
        read_expr(tmp_path / "empty")


def test_seven_class_files_need_num_classes_7(tmp_path):
    write_video(tmp_path, "old", [0, 6], header=",".join(EXPR_CLASSES[:7]))
    with pytest.raises(ValueError, match=r"7 classes, ABAW3\+ have 8"):
        read_expr(tmp_path, "Train_Set")
    assert read_expr(tmp_path, "Train_Set", num_classes=7).labels.tolist() == [0, 6]


def test_split_by_video_keeps_videos_whole(tmp_path):
    for v in range(6):
        write_video(tmp_path, f"v{v}", [v % 8] * 4)
    table = read_expr(tmp_path, "Train_Set")
    train, val = split_by_video(table, 0.34, seed=0)
    assert len(train) + len(val) == len(table)
    assert not set(train.videos) & set(val.videos) and len(set(val.videos)) == 2


def test_corrupt_image_names_the_file(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match="broken.jpg"):
        load_image(bad)


def test_dataset_decodes_and_resizes(tmp_path):
    write_video(tmp_path, "v", [0, 1, 2])
    ds = FrameDataset(read_expr(tmp_path, "Train_Set"), image_size=64, progress=False)
    x, y = ds[1]
    assert x.shape == (3, 64, 64) and x.dtype.is_floating_point is False and int(y) == 1


# ---- AU, VA and the MTL csv ----------------------------------------------------------------------

from fer_kit.data.abaw import read_landmarks, read_mtl, read_task  # noqa: E402
from fer_kit.labels import AU_NAMES  # noqa: E402


def write_task(root, task, name, lines, header, frames=0, split="Train_Set"):
    folder = {"AU": "AU_Detection_Challenge", "VA": "VA_Estimation_Challenge"}[task]
    ann = root / "annotations" / folder / split
    ann.mkdir(parents=True, exist_ok=True)
    (ann / f"{name}.txt").write_text("\n".join([header] + lines) + "\n")
    img = root / "cropped_aligned" / name
    img.mkdir(parents=True, exist_ok=True)
    for k in range(1, frames + 1):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(img / f"{k:05d}.jpg")


def test_au_reader_drops_invalid_rows_and_checks_values(tmp_path):
    ones, zeros, bad = ",".join(["1"] * 12), ",".join(["0"] * 12), ",".join(["-1"] * 12)
    write_task(tmp_path, "AU", "v", [ones, bad, zeros, ones], ",".join(AU_NAMES), frames=3)   # frame 4 has no image
    table = read_task(tmp_path, "AU")
    assert table.au.shape == (2, 12) and table.au[:, 0].tolist() == [1, 0]
    assert table.report.dropped == {"AU labelled -1": 1, "without an image": 1}
    assert (table.labels == -1).all() and table.task_masks()["AU"].all()
    write_task(tmp_path / "short", "AU", "v", ["1,0,1"], ",".join(AU_NAMES), frames=1)
    with pytest.raises(ValueError, match=r"v\.txt, line 2: expected 12 AU values"):
        read_task(tmp_path / "short", "AU")
    write_task(tmp_path / "two", "AU", "v", [",".join(["2"] * 12)], ",".join(AU_NAMES), frames=1)
    with pytest.raises(ValueError, match="must be 0, 1 or -1"):
        read_task(tmp_path / "two", "AU")


def test_va_reader_drops_minus_five_and_rejects_out_of_range(tmp_path):
    write_task(tmp_path, "VA", "v", ["0.5,-0.25", "-5,-5", "-0.1,0.9"], "valence,arousal", frames=3)
    table = read_task(tmp_path, "VA")
    assert np.allclose(table.va, [[0.5, -0.25], [-0.1, 0.9]])
    assert table.report.dropped == {"VA labelled -5": 1}
    write_task(tmp_path / "big", "VA", "v", ["1.5,0"], "valence,arousal", frames=1)
    with pytest.raises(ValueError, match=r"line 2: valence/arousal must be in \[-1, 1\]"):
        read_task(tmp_path / "big", "VA")


def write_mtl(root, rows, frames=("v/00001.jpg", "v/00002.jpg", "v/00003.jpg", "w/00001.jpg")):
    ann = root / "annotations" / "MTL_Challenge"
    ann.mkdir(parents=True, exist_ok=True)
    (ann / "training_set_annotations.txt").write_text("image,valence,arousal,expression,aus\n" + "\n".join(rows) + "\n")
    for f in frames:
        (root / "cropped_aligned" / f).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "cropped_aligned" / f)


def test_mtl_reader_keeps_per_task_masks(tmp_path):
    au1, au_bad = ",".join(["1"] + ["0"] * 11), ",".join(["-1"] * 12)
    write_mtl(tmp_path, [
        f"v/00001.jpg,0.2,0.3,4,{au1}",          # all valid
        f"v/00002.jpg,-5.0,-5.0,1,{au1}",        # VA invalid: still trains EXPR and AU
        f"v/00003.jpg,-5.0,-5.0,-1,{au_bad}",    # every task invalid: dropped
        f"w/00001.jpg,0.1,0.1,-1,{au1}",         # EXPR invalid
        f"w/00009.jpg,0.1,0.1,2,{au1}",          # no image
    ])
    table = read_mtl(tmp_path)
    assert len(table) == 3 and table.labels.tolist() == [4, 1, -1]
    masks = table.task_masks()
    assert masks["EXPR"].tolist() == [True, True, False] and masks["VA"].tolist() == [True, False, True]
    assert masks["AU"].all() and np.isnan(table.va[1]).all()
    assert table.report.dropped == {"every task invalid": 1, "without an image": 1}
    strict = read_mtl(tmp_path, drop_any_invalid=True)           # paper D's rule
    assert len(strict) == 1 and strict.report.dropped["some task invalid (paper D's rule)"] == 2
    assert table.class_counts().sum() == 2                       # -1 is not a class


def test_mtl_reader_names_bad_lines(tmp_path):
    write_mtl(tmp_path / "a", ["v/00001.jpg,0.2,0.3,4,1,0"])
    with pytest.raises(ValueError, match=r"line 2: expected 16 fields"):
        read_mtl(tmp_path / "a")
    write_mtl(tmp_path / "b", [f"v/00001.jpg,0.2,0.3,9,{','.join(['0'] * 12)}"])
    with pytest.raises(ValueError, match=r"line 2: label 9 is outside 0..7"):
        read_mtl(tmp_path / "b")
    with pytest.raises(FileNotFoundError, match="validation_set_annotations.txt"):
        read_mtl(tmp_path / "b", "Validation_Set")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_mtl(tmp_path / "nowhere")


def test_landmarks_attach_by_image_name(tmp_path):
    write_video(tmp_path, "v", [0, 1])
    (tmp_path / "landmarks").mkdir()
    pts = np.arange(136, dtype=np.float32)
    (tmp_path / "landmarks" / "v.txt").write_text("image,...\n00002.jpg," + ",".join(map(str, pts)) + "\n")
    table = read_landmarks(tmp_path, read_expr(tmp_path))
    assert np.isnan(table.landmarks[0]).all() and np.array_equal(table.landmarks[1].reshape(-1), pts)
