"""The non-ABAW readers on tiny fixtures written in each dataset's own format."""
import warnings

import numpy as np
import pytest
from PIL import Image

from fer_kit.data.affectnet import read_affectnet
from fer_kit.data.dataset import FrameDataset
from fer_kit.data.expw import read_expw
from fer_kit.data.fer2013 import read_fer2013_csv, read_fer2013_folders
from fer_kit.data.folders import read_class_folders
from fer_kit.data.lsd import read_lsd
from fer_kit.data.rafdb import read_rafdb
from fer_kit.data.readers import READERS, read_dataset
from fer_kit.labels import EXPR_CLASSES, LSD_CLASSES

E = {name: i for i, name in enumerate(EXPR_CLASSES)}


def write_image(path, value=128, size=(8, 8)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, value, value)).save(path)
    return path


def loads(table):
    ds = FrameDataset(table, 112, progress=False)
    assert tuple(ds.images.shape) == (len(table), 3, 112, 112)
    return ds


# ---------------------------------------------------------------------------------------------- LSD

def make_lsd(root):
    for folder, n in (("ANGERE", 2), ("DISGUST", 1), ("HAPPINESS", 3), ("SURPRISE", 1), ("CONTEMPT", 2)):
        for i in range(n):
            write_image(root / "LSD" / "training_set_synthetic_images" / folder / f"{i}.jpg")
    (root / "LSD" / "training_set_synthetic_images" / "HAPPINESS" / "notes.txt").write_text("x")
    write_image(root / "LSD" / "validation_set_real_images" / "FEAR" / "a.jpg")
    return root


def test_lsd_reads_classes_accepts_angere_and_counts_unknown_folders(tmp_path):
    make_lsd(tmp_path)
    with pytest.warns(UserWarning, match="ANGERE"):
        table = read_lsd(tmp_path)                                  # finds LSD/ below root
    assert table.classes == LSD_CLASSES
    assert table.class_counts().tolist() == [2, 1, 0, 3, 0, 1]
    assert table.report.lines == 9 and table.report.kept == 7
    assert table.report.dropped == {"in unknown folder CONTEMPT": 2, "not an image": 1}
    assert "ANGERE read as ANGER" in table.report.source
    assert len(set(table.videos)) == 7                              # one group per image, stems repeat
    with pytest.warns(UserWarning):
        mapped = read_lsd(tmp_path / "LSD", to_affwild2=True)
    assert mapped.classes == EXPR_CLASSES
    assert (mapped.labels == table.labels + 1).all()
    assert mapped.labels[0] == E["Anger"]
    val = read_lsd(tmp_path, "val", to_affwild2=True)
    assert val.labels.tolist() == [E["Fear"]]
    loads(table)


def test_lsd_missing_root_says_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match="training_set_synthetic_images/<ANGER"):
        read_lsd(tmp_path / "nowhere")


# ---------------------------------------------------------------------------------------- AffectNet

AFFECTNET_HEADER = "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal"


def affectnet_row(name, expr, va=(0.5, -0.25), box=(1, 2, 4, 5)):
    marks = ";".join(str(float(i)) for i in range(136))
    return f"{name},{box[0]},{box[1]},{box[2]},{box[3]},{marks},{expr},{va[0]},{va[1]}"


def make_affectnet(root, rows, header=True):
    images = root / "Manually_Annotated_Images"
    for name in ("1/a.jpg", "1/b.jpg", "2/c.jpg", "2/d.jpg", "3/e.jpg", "3/f.jpg", "3/g.jpg"):
        write_image(images / name)
    lists = root / "Manually_Annotated_file_lists"
    lists.mkdir(parents=True, exist_ok=True)
    csv = lists / "training.csv"
    csv.write_text("\n".join(([AFFECTNET_HEADER] if header else []) + rows) + "\n")
    return csv


def test_affectnet_maps_labels_drops_non_expressions_and_keeps_va_boxes(tmp_path):
    csv = make_affectnet(tmp_path, [
        affectnet_row("1/a.jpg", 6),                     # Anger -> 1
        affectnet_row("1/b.jpg", 0, va=(-2, -2)),        # Neutral, VA invalid
        affectnet_row("2/c.jpg", 1),                     # Happy -> Happiness
        affectnet_row("2/d.jpg", 7),                     # Contempt: dropped by default
        affectnet_row("3/e.jpg", 8),                     # None
        affectnet_row("3/f.jpg", 9),                     # Uncertain
        affectnet_row("3/g.jpg", 10),                    # No-Face
        affectnet_row("9/missing.jpg", 2),               # Sad, but no image
        "1/a.jpg,1,2,3",                                 # short line
    ])
    with pytest.warns(UserWarning, match="malformed line; the first at .*line 10"):
        table = read_affectnet(csv)
    assert table.labels.tolist() == [E["Anger"], E["Neutral"], E["Happiness"]]
    assert table.report.lines == 9 and table.report.kept == 3
    assert table.report.dropped == {"Contempt: no Aff-Wild2 class": 1, "labelled None": 1, "labelled Uncertain": 1,
                                    "labelled No-Face": 1, "without an image": 1, "malformed line": 1}
    np.testing.assert_allclose(table.va[0], [0.5, -0.25])
    assert np.isnan(table.va[1]).all()
    np.testing.assert_allclose(table.boxes[0], [1, 2, 5, 7])    # x, y, x + w, y + h
    assert table.landmarks is None
    loads(table)

    with pytest.warns(UserWarning):
        other = read_affectnet(tmp_path, split="train", contempt_as_other=True, landmarks=True)
    assert other.labels.tolist() == [E["Anger"], E["Neutral"], E["Happiness"], E["Other"]]
    assert other.landmarks.shape == (4, 68, 2) and other.landmarks[0, 1].tolist() == [2.0, 3.0]


def test_affectnet_without_header_and_bad_label(tmp_path):
    csv = make_affectnet(tmp_path, [affectnet_row("1/a.jpg", 3)], header=False)   # validation.csv has no header
    assert read_affectnet(csv).labels.tolist() == [E["Surprise"]]
    csv = make_affectnet(tmp_path, [affectnet_row("1/a.jpg", 3), affectnet_row("1/b.jpg", 11)])
    with pytest.raises(ValueError, match=r"line 3: expression 11 is outside 0..10"):
        read_affectnet(csv)


# ------------------------------------------------------------------------------------------- RAF-DB

def make_rafdb(root, lines):
    for name in ("train_00001", "train_00002", "train_00003", "test_0001"):
        write_image(root / "basic" / "Image" / "aligned" / f"{name}_aligned.jpg")
        write_image(root / "basic" / "Image" / "original" / f"{name}.jpg", size=(10, 12))
    (root / "basic" / "EmoLabel").mkdir(parents=True, exist_ok=True)
    (root / "basic" / "EmoLabel" / "list_patition_label.txt").write_text("\n".join(lines) + "\n")


def test_rafdb_maps_labels_and_splits_by_prefix(tmp_path):
    make_rafdb(tmp_path, ["train_00001.jpg 7", "train_00002.jpg 6", "train_00003.jpg 1", "train_00004.jpg 4",
                          "train_00005.jpg", "test_0001.jpg 5"])
    with pytest.warns(UserWarning, match="malformed line; the first at .*line 5"):
        train = read_rafdb(tmp_path)
    assert train.labels.tolist() == [E["Neutral"], E["Anger"], E["Surprise"]]
    assert train.report.lines == 5
    assert train.report.dropped == {"without an image": 1, "malformed line": 1}
    assert train.paths[0].name == "train_00001_aligned.jpg"
    test = read_rafdb(tmp_path / "basic", "test", aligned=False)
    assert test.labels.tolist() == [E["Sadness"]] and test.paths[0].name == "test_0001.jpg"
    loads(test)


def test_rafdb_label_out_of_range(tmp_path):
    make_rafdb(tmp_path, ["train_00001.jpg 7", "train_00002.jpg 8"])
    with pytest.raises(ValueError, match="line 2: label 8 is outside 1..7"):
        read_rafdb(tmp_path)
    with pytest.raises(FileNotFoundError, match="list_patition_label.txt"):
        read_rafdb(tmp_path / "basic" / "Image")


# ------------------------------------------------------------------------------------------ FER2013

def pixels(seed, n=48 * 48):
    return " ".join(str(v) for v in np.random.default_rng(seed).integers(0, 256, n))


def test_fer2013_csv_decodes_pixels_and_maps_labels(tmp_path):
    csv = tmp_path / "fer2013.csv"
    csv.write_text("\n".join([
        "emotion,pixels,Usage",
        f'0,"{pixels(0)}",Training',            # Angry
        f'6,"{pixels(1)}",Training',            # Neutral
        f'3,"{pixels(2, 100)}",Training',       # too few values
        f'4,"{pixels(3)}",PublicTest',          # Sad, other usage
        f'1,"{pixels(4)}",PrivateTest',
    ]) + "\n")
    with pytest.warns(UserWarning, match="pixel string not 2304 values.*line 4"):
        table = read_fer2013_csv(csv)
    assert table.labels.tolist() == [E["Anger"], E["Neutral"]]
    assert table.report.lines == 3 and table.report.dropped == {"pixel string not 2304 values in 0..255": 1}
    assert table.images.shape == (2, 48, 48, 3) and table.images.dtype == np.uint8
    expected = np.array(pixels(1).split(), np.uint8).reshape(48, 48)
    for c in range(3):
        assert (table.images[1, :, :, c] == expected).all()
    assert str(table.paths[1]) == "fer2013.csv:line 3"
    ds = loads(table)
    assert abs(ds.images[0].float().mean().item() - float(table.images[0].mean())) < 3

    val = read_fer2013_csv(csv, "val")
    assert val.labels.tolist() == [E["Sadness"]]
    with pytest.warns(UserWarning, match="line 4"):
        assert len(read_fer2013_csv(csv, None)) == 4
    csv.write_text(f'emotion,pixels,Usage\n7,"{pixels(0)}",Training\n')
    with pytest.raises(ValueError, match="line 2: emotion 7 is outside 0..6"):
        read_fer2013_csv(csv)


def test_fer2013_folders(tmp_path):
    for name in ("angry", "happy", "neutral", "surprise"):
        write_image(tmp_path / "train" / name / "0.png")
    table = read_fer2013_folders(tmp_path)
    assert sorted(table.labels.tolist()) == sorted([E["Anger"], E["Happiness"], E["Neutral"], E["Surprise"]])
    with pytest.raises(FileNotFoundError, match="test/"):
        read_fer2013_folders(tmp_path, "test")


# --------------------------------------------------------------------------------------------- ExpW

def test_expw_boxes_groups_and_malformed_lines(tmp_path):
    write_image(tmp_path / "image" / "origin" / "a.jpg", size=(40, 30))
    write_image(tmp_path / "image" / "origin" / "b.jpg", size=(40, 30))
    (tmp_path / "label").mkdir()
    (tmp_path / "label" / "label.lst").write_text("\n".join([
        "a.jpg 0 2 3 13 12 55.5 0",      # angry
        "a.jpg 1 5 20 30 25 40.1 6",     # neutral, same image
        "b.jpg 0 1 1 9 9 12.0 3",        # happy
        "b.jpg 1 1 1",                   # short
        "c.jpg 0 1 1 9 9 80.0 4",        # no image
    ]) + "\n")
    with pytest.warns(UserWarning, match="malformed line; the first at .*line 4"):
        table = read_expw(tmp_path)
    assert table.labels.tolist() == [E["Anger"], E["Neutral"], E["Happiness"]]
    assert table.report.lines == 5 and table.report.dropped == {"malformed line": 1, "without an image": 1}
    np.testing.assert_allclose(table.boxes[0], [3, 2, 13, 12])     # left, top, right, bottom
    assert table.videos.tolist() == ["a.jpg", "a.jpg", "b.jpg"]
    loads(table)
    with pytest.warns(UserWarning):
        assert len(read_expw(tmp_path, min_confidence=30)) == 2
    (tmp_path / "label" / "label.lst").write_text("a.jpg 0 2 3 13 12 55.5 7\n")
    with pytest.raises(ValueError, match="line 1: expression 7 is outside 0..6"):
        read_expw(tmp_path)


# ------------------------------------------------------------------------------------ class folders

def test_class_folders_synonyms_contempt_and_unknown(tmp_path):
    for name in ("Angry", "happy", "SAD", "surprised", "fearful", "disgusted", "neutral", "contempt"):
        write_image(tmp_path / name / "0.jpg")
    (tmp_path / "happy" / "readme.md").write_text("x")
    table = read_class_folders(tmp_path)
    by_video = dict(zip(table.videos, table.labels.tolist()))
    assert by_video == {"Angry/0": E["Anger"], "happy/0": E["Happiness"], "SAD/0": E["Sadness"],
                        "surprised/0": E["Surprise"], "fearful/0": E["Fear"], "disgusted/0": E["Disgust"],
                        "neutral/0": E["Neutral"]}
    assert table.report.dropped == {"Contempt: no Aff-Wild2 class": 1, "not an image": 1}
    assert read_class_folders(tmp_path, mapping={"Contempt": "Other"}).class_counts()[E["Other"]] == 1
    loads(table)

    write_image(tmp_path / "7" / "0.jpg")          # an unknown folder: left out, counted, named (as LSD's reader)
    with pytest.warns(UserWarning, match=r"\['7'\].*mapping="):
        table = read_class_folders(tmp_path)
    assert len(table) == 7 and table.report.dropped["in unknown folder 7"] == 1
    assert len(read_class_folders(tmp_path, mapping={"7": None})) == 7


def test_read_dataset_dispatch(tmp_path):
    assert set(READERS) == {"abaw", "lsd", "affectnet", "rafdb", "fer2013", "fer2013_folders", "expw", "folders"}
    write_image(tmp_path / "happy" / "0.jpg")
    assert read_dataset("folders", tmp_path).labels.tolist() == [E["Happiness"]]
    with pytest.raises(ValueError, match="known: abaw, lsd"):
        read_dataset("ckplus", tmp_path)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        read_dataset("folders", tmp_path / "nowhere")


def test_abaw_reader_registered(tiny_synthetic):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        table = read_dataset("abaw", tiny_synthetic, "Train_Set")
    assert table.classes == EXPR_CLASSES and len(table) > 0


def test_boxed_faces_are_cropped_around_their_box(tmp_path):
    """A whole photo with a face box (ExpW, AffectNet) reaches the model as the face, not the photo."""
    photo = np.zeros((60, 80, 3), np.uint8)
    photo[20:40, 50:70] = (250, 20, 20)                  # the "face": a red square at x 50..69, y 20..39
    (tmp_path / "image" / "origin").mkdir(parents=True)
    Image.fromarray(photo).save(tmp_path / "image" / "origin" / "a.png")
    (tmp_path / "label").mkdir()
    (tmp_path / "label" / "label.lst").write_text("a.png 0 20 50 70 40 90.0 3\n")   # top left right bottom
    table = read_expw(tmp_path)
    x = FrameDataset(table, 32, progress=False, box_margin=0.0).image(0)
    assert x.shape == (3, 32, 32)
    assert x[0].float().mean() > 200 and x[1].float().mean() < 60     # all face, no background
