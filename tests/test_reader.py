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
    with pytest.raises(ValueError, match="7 classes"):
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
