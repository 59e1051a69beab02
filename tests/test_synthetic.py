import json

import numpy as np
import pytest

from fer_kit.data.abaw import read_expr
from fer_kit.data.synthetic import (PROTOTYPES, SyntheticConfig, class_proportions, ensure_synthetic,
                                    expression_aus, render_frames)
from fer_kit.labels import AFFWILD2_EXPR_COUNTS, AU_NAMES, EXPR_CLASSES


def test_layout_matches_abaw(tiny_synthetic):
    ann = tiny_synthetic / "annotations" / "EXPR_Classification_Challenge"
    files = sorted((ann / "Train_Set").glob("*.txt")) + sorted((ann / "Validation_Set").glob("*.txt"))
    assert files
    lines = files[0].read_text().splitlines()
    assert lines[0] == ",".join(EXPR_CLASSES)
    assert all(int(x) in range(-1, 8) for x in lines[1:])
    frames = tiny_synthetic / "cropped_aligned" / files[0].stem
    assert (frames / "00001.jpg").exists() or "-1" in lines  # frame k <-> line k+1, 1-indexed
    assert json.loads((tiny_synthetic / "config.json").read_text())["n_frames"] == 600


def test_every_class_in_both_splits_and_some_invalid(tiny_synthetic):
    for split in ("Train_Set", "Validation_Set"):
        table = read_expr(tiny_synthetic, split)
        assert (table.class_counts() > 0).all(), split
    train = read_expr(tiny_synthetic, "Train_Set")
    assert train.report.dropped.get("labelled -1", 0) > 0
    assert train.report.dropped.get("without an image", 0) > 0


def test_videos_are_disjoint_between_splits(tiny_synthetic):
    train, val = read_expr(tiny_synthetic, "Train_Set"), read_expr(tiny_synthetic, "Validation_Set")
    assert not set(train.videos) & set(val.videos)


def test_deterministic_per_seed():
    a, la = render_frames(12, seed=5)
    b, lb = render_frames(12, seed=5)
    c, _ = render_frames(12, seed=6)
    assert np.array_equal(a, b) and np.array_equal(la, lb)
    assert not np.array_equal(a, c)


def test_cache_hit_returns_same_folder(tiny_synthetic, cache_dir):
    stamp = (tiny_synthetic / "config.json").stat().st_mtime_ns
    again = ensure_synthetic(SyntheticConfig(n_frames=600, seed=3), cache_dir=cache_dir, progress=False)
    assert again == tiny_synthetic and (again / "config.json").stat().st_mtime_ns == stamp


def test_class_proportions_follow_affwild2_order():
    exact = class_proportions("affwild2")
    assert np.allclose(exact, np.array(AFFWILD2_EXPR_COUNTS) / sum(AFFWILD2_EXPR_COUNTS))
    tempered = class_proportions("sqrt")
    assert np.array_equal(np.argsort(tempered), np.argsort(exact))   # same order of frequency
    assert tempered.min() > exact.min() * 2                          # minority classes lifted


def test_expressions_use_their_au_prototypes():
    rng = np.random.default_rng(0)
    for label, name in enumerate(EXPR_CLASSES[:7]):
        au = expression_aus(label, rng)
        for a in PROTOTYPES[name]:
            assert au[AU_NAMES.index(a)] >= 0.6, (name, a)
    other = expression_aus(EXPR_CLASSES.index("Other"), rng)
    assert other[AU_NAMES.index("AU12")] >= 0.6   # Other: a smile over another upper face


def test_faces_look_like_faces():
    images, labels = render_frames(16, seed=1)
    assert images.shape == (16, 112, 112, 3) and images.dtype == np.uint8
    centre = images[:, 40:72, 40:72].reshape(16, -1, 3).mean(1)
    assert (centre[:, 0] >= centre[:, 2] - 5).mean() > 0.8    # skin: red >= blue in the middle of the image


@pytest.mark.parametrize("bad", [dict(balance="log"), dict(n_frames=10), dict(val_fraction=1.5)])
def test_bad_config_is_rejected(bad):
    with pytest.raises(ValueError):
        SyntheticConfig(**bad)
