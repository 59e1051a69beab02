"""Paper E in the loop: 6 LSD classes, landmark targets that follow the augmentation, a style shift."""
import json

import numpy as np
import pytest
import torch
from torchvision.transforms import v2

from fer_kit import baselines, metrics, train
from fer_kit.config import SyntheticShiftConfig, TrainConfig
from fer_kit.data.dataset import FrameDataset
from fer_kit.data.sources import lsd_tables, to_lsd
from fer_kit.data.table import DropReport, FrameTable
from fer_kit.data.transforms import RandomHorizontalFlipFace, eval_transform
from fer_kit.labels import EXPR_CLASSES, LSD_CLASSES
from fer_kit.losses import DANLandmarkLoss


def test_to_lsd_drops_neutral_and_other_and_shifts_labels():
    t = FrameTable([f"{i}.jpg" for i in range(8)], np.arange(8), np.array(["v"] * 8), EXPR_CLASSES,
                   DropReport(source="x", lines=8, kept=8))
    out = to_lsd(t)
    assert out.classes == LSD_CLASSES and out.labels.tolist() == [0, 1, 2, 3, 4, 5]
    assert out.report.total_dropped == 2 and "not LSD classes" in str(out.report)


@pytest.fixture(scope="module")
def shifted(tiny_synthetic, cache_dir):
    return lsd_tables(None, n_frames=600, seed=3, style="cartoon", val_style="photo", progress=False)


def test_lsd_tables_render_the_two_splits_in_two_styles(shifted):
    train_t, val_t, test_t, source = shifted
    assert "cartoon" in train_t.report.source and "photo" in val_t.report.source and "cartoon" in source
    assert "photo" in test_t.report.source and not set(test_t.videos) & (set(val_t.videos) | set(train_t.videos))
    assert train_t.classes == LSD_CLASSES and set(np.unique(train_t.labels)) <= set(range(6))
    assert np.isfinite(train_t.landmarks).all(axis=(1, 2)).mean() > 0.95
    assert not set(train_t.videos) & set(val_t.videos)                       # other people


def test_landmark_targets_are_normalised_and_follow_a_flip(shifted):
    table = shifted[0].subset(np.arange(4))
    plain = FrameDataset(table, 64, eval_transform(), targets="landmarks", progress=False)
    flip = FrameDataset(table, 64, v2.Compose([RandomHorizontalFlipFace(p=1.0), eval_transform()]),
                        targets="landmarks", progress=False)
    x, y = plain[0]
    xf, yf = flip[0]
    assert set(y) == {"expr", "landmarks"} and y["landmarks"].shape == (68, 2)
    assert y["landmarks"].abs().max() < 1                                   # the face is inside the image
    assert torch.allclose(xf, x.flip(-1), atol=1e-6)
    # mirrored x, same y; left and right iBUG points swap (outer eye corners 36 <-> 45)
    assert yf["landmarks"][36, 0] == pytest.approx(-y["landmarks"][45, 0].item(), abs=1e-4)
    assert yf["landmarks"][36, 1] == pytest.approx(y["landmarks"][45, 1].item(), abs=1e-4)


def test_mean_shape_baseline_is_the_error_of_the_training_mean(shifted):
    train_t, val_t = shifted[0].subset(np.arange(12)), shifted[1].subset(np.arange(6))
    tr, va = (FrameDataset(t, 64, eval_transform(), targets="landmarks", progress=False) for t in (train_t, val_t))
    r = baselines.mean_shape(tr, va, size=64)
    mean = np.nanmean(tr.landmarks.numpy(), axis=0)
    by_hand = metrics.landmark_errors(np.stack([mean] * len(va)), va.landmarks.numpy(), 64)
    assert r == pytest.approx(by_hand) and 0 < r["landmark_nme"] < 1
    # a prediction of the truth itself scores 0, the mean shape does not
    assert metrics.landmark_errors(va.landmarks.numpy(), va.landmarks.numpy(), 64)["landmark_nme"] == 0


def test_landmark_loss_skips_frames_without_landmarks():
    loss = DANLandmarkLoss(num_classes=6)
    pred = torch.zeros(3, 68, 2, requires_grad=True)
    target = torch.full((3, 68, 2), 0.5)
    target[1] = float("nan")
    assert loss.landmark_mse(pred, target).item() == pytest.approx(0.25)
    none = loss.landmark_mse(pred, torch.full((3, 68, 2), float("nan")))
    none.backward()
    assert none.item() == 0 and pred.grad is not None


def test_landmark_errors_by_hand():
    true = np.zeros((2, 68, 2), np.float32)
    true[:, 36], true[:, 45] = (-0.5, 0.0), (0.5, 0.0)                      # 56 px apart in a 112 px crop
    pred = true.copy()
    pred[..., 0] += 0.02                                                    # 1.12 px to the right everywhere
    true[1, 0, 0] = np.nan                                                  # the second frame has no target
    e = metrics.landmark_errors(pred, true)
    assert e["landmark_frames"] == 1
    assert e["landmark_error_px"] == pytest.approx(1.12, rel=1e-5)
    assert e["landmark_nme"] == pytest.approx(1.12 / 56, rel=1e-5)


def test_lsd_configs_check_their_classes():
    with pytest.raises(ValueError, match="num_classes must be 6"):
        TrainConfig(model="dan_landmarks")
    with pytest.raises(ValueError, match="6 only for dan_landmarks"):
        TrainConfig(num_classes=6)
    cfg = SyntheticShiftConfig()
    assert cfg.train_config().landmark_backbone == "resnet18" and cfg.num_classes == 6


def test_lsd_run_scores_mean_f1_over_6_and_landmark_error(tmp_path, shifted):
    cfg = TrainConfig(model="test_dan_landmarks", preset="laptop_e", num_classes=6, n_frames=600, seed=3,
                      style="cartoon", val_style="photo", image_size=48, batch_size=16, epochs=1, max_batches=3,
                      progress=False, out_dir=str(tmp_path / "e"))
    data = train.load_expr_data(cfg)
    result = train.fit(cfg, data)
    m = json.loads((tmp_path / "e" / "metrics.json").read_text())
    best = m["best"]
    assert best["score"] == best["lsd_mean_f1"] == best["p_expr"] and len(best["per_class_f1"]) == 6
    # the recorded landmark error is the model's on the validation faces (one epoch: best = final weights)
    _, _, pred, true = train.predict_landmarks(result.model, data.val)
    by_hand = metrics.landmark_errors(pred, true)
    assert best["landmark_frames"] == by_hand["landmark_frames"] == len(data.val)
    assert best["landmark_nme"] == pytest.approx(by_hand["landmark_nme"], rel=1e-5)
    assert {"train_ce", "train_landmark", "train_affinity", "train_partition"} <= set(result.history)


def test_paper_e_preset_mixes_the_emotion_input_and_keeps_the_landmark_input(tmp_path, shifted, monkeypatch):
    """paper_e's mixup: the emotion branch sees mixed faces and soft targets, the landmark branch the
    unmixed faces (paper E's code feeds the two branches separately)."""
    from fer_kit.models.multitask import DANLandmarks

    seen = []
    original = DANLandmarks.forward

    def spy(self, x, x_landmarks=None):
        if self.training:
            seen.append(x_landmarks is not None and not torch.equal(x, x_landmarks))
        return original(self, x, x_landmarks)

    monkeypatch.setattr(DANLandmarks, "forward", spy)
    cfg = TrainConfig(model="test_dan_landmarks", preset="paper_e", num_classes=6, n_frames=600, seed=3,
                      style="cartoon", val_style="photo", image_size=48, batch_size=16, epochs=1, max_batches=2,
                      progress=False, out_dir=str(tmp_path / "m"))
    assert cfg.augment == "paper_e" and cfg.mixup_alpha == 0.1
    result = train.fit(cfg)
    assert seen and all(seen)
    assert np.isfinite(result.history["train_loss"]).all()
