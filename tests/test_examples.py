"""The example layouts are what the readers read, and every face comes back under the class it was drawn as."""
from pathlib import Path

import numpy as np
import pytest

from fer_kit.data import examples
from fer_kit.data.dataset import FrameDataset
from fer_kit.data.splits import KINDS, SEVEN_CLASSES, read_splits, split_summary


def grey(images):
    """(N, H, W, 3) or (N, 3, H, W) uint8 -> (N, H*W) floats: FER2013's examples are grey."""
    x = np.asarray(images, np.float32)
    x = x if x.shape[-1] == 3 else x.transpose(0, 2, 3, 1)
    return (x @ np.array([0.299, 0.587, 0.114], np.float32)).reshape(len(x), -1)


@pytest.mark.parametrize("kind", sorted(examples.LAYOUTS))
def test_every_face_reads_back_under_the_class_it_was_drawn_as(kind, tmp_path):
    """Each frame read back is nearest (in pixels) to a face rendered as the class its label names: a
    wrong code in the writer, or in a reader's mapping to the Aff-Wild2 order, would swap classes while
    keeping every count right."""
    size, per_class = 48, 2
    root = examples.write_example(kind, tmp_path / kind, per_class=per_class, size=size, seed=5)
    num_classes = 7 if kind in SEVEN_CLASSES else 8
    splits = read_splits(kind, root, num_classes, seed=0)[:3]
    # the writer's faces, class by class, drawn again from the same seeds
    rendered = {c: examples.class_faces(c, per_class, size, seed=5) for c in range(num_classes)}
    bank = grey(np.concatenate(list(rendered.values())))
    bank_class = np.concatenate([np.full(len(v), c) for c, v in rendered.items()])
    drawn = []
    for table in splits:
        faces = FrameDataset(table, size, progress=False, box_margin=0.0).images.numpy()
        nearest = ((grey(faces)[:, None, :] - bank[None]) ** 2).mean(-1).argmin(1)
        assert (bank_class[nearest] == table.labels).all(), (kind, table.report.source)
        drawn.append(set(nearest))
    assert not (drawn[0] & drawn[2]) and not (drawn[1] & drawn[2]), kind    # no face is in train and test
    assert sum(len(t) for t in splits) >= 3 * per_class * num_classes                 # nothing lost


def test_every_kind_has_a_layout_and_a_parameter_line():
    assert set(examples.LAYOUTS) == set(KINDS) - {"abaw", "lsd"}
    assert set(examples.PARAMETERS) == set(KINDS)
    with pytest.raises(ValueError, match="no example layout for dataset 'abaw'"):
        examples.write_example("abaw", "unused")
    with pytest.raises(FileExistsError, match="is not empty"):
        examples.write_example("rafdb", Path(__file__).parent)


def test_the_summary_counts_splits_and_drops(tmp_path):
    root = examples.write_example("affectnet", tmp_path / "a", per_class=1, size=32)
    row = split_summary("affectnet", root)
    assert (row["classes"], row["train"] + row["validation"], row["test"]) == (8, 16, 8)   # 8 classes x (2, 1)
    assert "1 labelled None" in row["dropped from train"] and "held out as the validation split" in row["dropped from train"]
    assert row["validation from"].startswith("validation split carved from AffectNet training.csv")
    assert split_summary("fer2013", examples.write_example("fer2013", tmp_path / "f", per_class=1))["test from"] == \
        "FER2013 fer2013.csv PrivateTest, 7 classes"
