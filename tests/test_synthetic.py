import hashlib
import json

import numpy as np
import pytest

from fer_kit.data.abaw import read_abaw, read_expr, read_landmarks, read_mtl, read_task
from fer_kit.data.face_render import render_video
from fer_kit.data.synthetic import (PROTOTYPES, SyntheticConfig, _frames_of, _video_rng, class_proportions,
                                    ensure_synthetic, expression_aus, plan_videos, read_conditions, render_faces,
                                    render_frames, write_dataset)
from fer_kit.labels import AFFWILD2_EXPR_COUNTS, AU_NAMES, EXPR_CLASSES, LSD_FOLDERS


def test_per_task_files_follow_the_abaw_layout(tiny_synthetic):
    ann = tiny_synthetic / "annotations"
    expr = sorted((ann / "EXPR_Classification_Challenge" / "Train_Set").glob("*.txt"))
    assert expr and json.loads((tiny_synthetic / "config.json").read_text())["n_frames"] == 600
    au_lines, va_lines = [], []
    for f in expr:
        e = f.read_text().splitlines()
        a = (ann / "AU_Detection_Challenge" / "Train_Set" / f.name).read_text().splitlines()
        v = (ann / "VA_Estimation_Challenge" / "Train_Set" / f.name).read_text().splitlines()
        assert e[0] == ",".join(EXPR_CLASSES) and a[0] == ",".join(AU_NAMES) and v[0] == "valence,arousal"
        assert len(e) == len(a) == len(v)                     # one line per frame in every task
        assert all(int(x) in range(-1, 8) for x in e[1:])
        au_lines += a[1:]
        va_lines += v[1:]
    au = np.array([[int(x) for x in line.split(",")] for line in au_lines])
    va = np.array([[float(x) for x in line.split(",")] for line in va_lines])
    invalid_au, invalid_va = (au == -1).all(1), (va == -5).all(1)
    assert invalid_au.any() and invalid_va.any()              # some invalid entries in each task
    assert np.isin(au[~invalid_au], (0, 1)).all() and ((au == -1).any(1) == invalid_au).all()
    assert (np.abs(va[~invalid_va]) <= 1).all()


def test_every_class_in_every_split_and_counted_drops(tiny_synthetic):
    for split in ("Train_Set", "Validation_Set", "Test_Set"):
        assert (read_expr(tiny_synthetic, split).class_counts() > 0).all(), split
    train = read_expr(tiny_synthetic, "Train_Set")
    assert train.report.dropped["labelled -1"] > 0 and train.report.dropped["without an image"] > 0
    assert read_task(tiny_synthetic, "AU").report.dropped["AU labelled -1"] > 0
    assert read_task(tiny_synthetic, "VA").report.dropped["VA labelled -5"] > 0


def test_mtl_csv_agrees_with_the_per_task_files(tiny_synthetic):
    header = (tiny_synthetic / "annotations" / "MTL_Challenge" / "training_set_annotations.txt").read_text().splitlines()[0]
    assert header == "image,valence,arousal,expression," + ",".join(AU_NAMES)     # 16 columns
    mtl = read_mtl(tiny_synthetic, "Train_Set")
    expr = read_expr(tiny_synthetic, "Train_Set")
    by_path = dict(zip(mtl.paths, mtl.labels))
    assert all(by_path[p] == y for p, y in zip(expr.paths, expr.labels))   # same EXPR labels, frame by frame
    merged = read_abaw(tiny_synthetic, "Train_Set")
    assert len(merged) == len(mtl) and set(merged.tasks) == {"EXPR", "AU", "VA"}


def test_videos_are_disjoint_between_splits(tiny_synthetic):
    train, val, test = (set(read_expr(tiny_synthetic, s).videos) for s in ("Train_Set", "Validation_Set", "Test_Set"))
    assert not train & val and not train & test and not val & test


def test_each_papers_generator_option_changes_only_what_it_names(tmp_path):
    """Hidden frames (paper B), covered regions (paper C) and EXPR labels on part of the training videos
    (paper D): every other frame and label is the same as without the option."""
    base = dict(n_frames=300, seed=4, image_size=48, invalid_fraction=0.0, missing_fraction=0.0)
    plain = ensure_synthetic(SyntheticConfig(**base), cache_dir=tmp_path, progress=False)
    hard = ensure_synthetic(SyntheticConfig(**base, hidden_fraction=0.3, occlusion_fraction=0.3,
                                            expr_label_fraction=0.5), cache_dir=tmp_path, progress=False)
    for split in ("Validation_Set", "Test_Set"):          # held-out splits keep every label
        t0, t1 = read_expr(plain, split), read_expr(hard, split)
        assert [p.name for p in t0.paths] == [p.name for p in t1.paths] and np.array_equal(t0.labels, t1.labels)
        c = read_conditions(t1)
        assert 0.15 < c["hidden"].mean() < 0.45 and 0.15 < (c["patch"] != "").mean() < 0.45
        assert set(c["patch"]) <= {"", "left eye", "right eye", "mouth", "nose"}
        same = np.array([p0.read_bytes() == p1.read_bytes() for p0, p1 in zip(t0.paths, t1.paths)])
        clean = ~c["hidden"] & (c["patch"] == "")
        assert same[clean].all() and not same[~clean].any()       # only the frames named are drawn otherwise
        assert not read_conditions(t0)["hidden"].any()            # no conditions/ folder: nothing hidden
    full, part = read_expr(plain, "Train_Set"), read_expr(hard, "Train_Set")
    assert 0.2 < len(set(part.videos)) / len(set(full.videos)) < 0.8   # EXPR files for part of the videos
    mtl = read_mtl(hard, "Train_Set")
    assert len(mtl) == len(read_mtl(plain, "Train_Set"))             # AU and VA still label every frame
    assert ((mtl.labels >= 0).sum() == len(part))


def test_lsd_tree_holds_the_six_basic_classes(tiny_synthetic):
    lsd = tiny_synthetic / "LSD" / "training_set_synthetic_images"
    assert sorted(p.name for p in lsd.iterdir()) == sorted(LSD_FOLDERS)
    counts = read_expr(tiny_synthetic, "Train_Set").class_counts()
    for folder, n in zip(LSD_FOLDERS, counts[1:7]):
        assert len(list((lsd / folder).glob("*.jpg"))) == n, folder


def test_landmark_files_pair_with_frames(tiny_synthetic):
    table = read_landmarks(tiny_synthetic, read_expr(tiny_synthetic, "Validation_Set"))
    assert table.landmarks.shape == (len(table), 68, 2)
    assert ((table.landmarks > 0) & (table.landmarks < 112)).mean() > 0.98


def test_landmarks_sit_on_the_drawn_face():
    plan = plan_videos(SyntheticConfig(n_frames=300, seed=4, occluders=False))
    errors = []
    for v, fr in enumerate(plan["frames"][:6]):
        keep = np.arange(len(fr["label"]))
        _, pts, alpha = render_video(fr["ident"], _frames_of(fr, keep), 112, _video_rng(4, v), with_alpha=True)
        inner = pts[:, 17:]                         # brows, nose, eyes, mouth: strictly inside the face
        ix = np.clip(np.round(inner).astype(int), 0, 111)
        cover = alpha[np.arange(len(pts))[:, None], ix[..., 1], ix[..., 0]]
        errors.append((cover < 0.9).mean())
        jaw = np.clip(np.round(pts[:, :17]).astype(int), 0, 111)       # the jaw line: on the face's edge
        edge = alpha[np.arange(len(pts))[:, None], jaw[..., 1], jaw[..., 0]]
        assert (edge > 0.05).mean() > 0.9
    assert np.mean(errors) < 0.02


def test_va_and_aus_follow_the_expression(tiny_synthetic):
    faces = render_faces(400, seed=2)
    lab, va, au = faces["labels"], faces["va"], faces["au"]
    idx = {n: i for i, n in enumerate(EXPR_CLASSES)}
    assert va[lab == idx["Happiness"], 0].mean() > 0.3
    for neg in ("Anger", "Disgust", "Fear", "Sadness"):
        assert va[lab == idx[neg], 0].mean() < -0.2, neg
    assert va[lab == idx["Surprise"], 1].mean() > 0.4 and va[lab == idx["Sadness"], 1].mean() < 0
    assert abs(va[lab == idx["Neutral"]].mean()) < 0.15
    au12 = au[:, AU_NAMES.index("AU12")] >= 0.5
    assert au12[lab == idx["Happiness"]].mean() > 0.9 and au12[lab == idx["Sadness"]].mean() < 0.2


def _digest(root):
    h = hashlib.sha1()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode() + p.read_bytes())
    return h.hexdigest()


def test_same_files_with_one_or_two_workers(tmp_path):
    cfg = SyntheticConfig(n_frames=200, seed=9)
    write_dataset(cfg, tmp_path / "one", progress=False, workers=1)
    write_dataset(cfg, tmp_path / "two", progress=False, workers=2)
    assert _digest(tmp_path / "one") == _digest(tmp_path / "two")


def test_deterministic_per_seed():
    a, la = render_frames(12, seed=5)
    b, lb = render_frames(12, seed=5)
    c, _ = render_frames(12, seed=6)
    assert np.array_equal(a, b) and np.array_equal(la, lb)
    assert not np.array_equal(a, c)


def test_styles_shift_the_rendering_domain():
    photo = render_faces(24, seed=1)["images"].astype(float)
    low = render_faces(24, seed=1, style="lowlight")["images"].astype(float)
    cartoon = render_faces(24, seed=1, style="cartoon")["images"]
    assert low.mean() < 0.75 * photo.mean()
    levels = [len(np.unique(im.reshape(-1, 3), axis=0)) for im in cartoon]
    photo_levels = [len(np.unique(im.reshape(-1, 3), axis=0)) for im in photo.astype(np.uint8)]
    assert np.median(levels) < 0.25 * np.median(photo_levels)     # flat, posterised colours


def test_occluders_switch_off_without_changing_anything_else():
    on = plan_videos(SyntheticConfig(n_frames=600, seed=1))
    off = plan_videos(SyntheticConfig(n_frames=600, seed=1, occluders=False))
    assert any(f["ident"]["occluders"] for f in on["frames"])
    assert not any(f["ident"]["occluders"] for f in off["frames"])
    for a, b in zip(on["frames"], off["frames"]):
        assert np.array_equal(a["label"], b["label"]) and np.array_equal(a["au"], b["au"])


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


@pytest.mark.parametrize("bad", [dict(balance="log"), dict(n_frames=10), dict(val_fraction=1.5), dict(style="anime")])
def test_bad_config_is_rejected(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        SyntheticConfig(**bad)


def test_workers_do_not_hang_after_the_parent_used_opencv(tmp_path):
    """A fresh interpreter that has used cv2's thread pool (as a notebook cropping faces has) then renders
    with two forked workers: before the fix this waited forever inside the first worker."""
    import subprocess
    import sys

    script = (
        "import cv2, numpy as np\n"
        "from fer_kit.data.synthetic import SyntheticConfig, ensure_synthetic\n"
        "img = np.zeros((224, 224, 3), np.uint8)\n"
        "for _ in range(10): cv2.resize(img, (500, 500)); cv2.warpAffine(img, np.eye(2, 3), (112, 112))\n"
        f"ensure_synthetic(SyntheticConfig(n_frames=300, seed=1), cache_dir={str(tmp_path)!r}, progress=False, workers=2)\n"
        "print('rendered', cv2.getNumThreads())\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "rendered" in done.stdout, done.stderr[-2000:]
    assert int(done.stdout.split()[-1]) > 1 or (__import__("os").cpu_count() or 1) == 1   # the parent's pool is back
