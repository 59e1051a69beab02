"""The helpers behind the exercises of notebooks 07 (AU thresholds, hardest AU) and 08 (landmark regions,
a shift measured on other frames)."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from fer_kit import baselines, compare, metrics
from fer_kit.labels import AU_NAMES


def _au_split(rng, n_videos=6, frames=20):
    truth = (rng.random((n_videos * frames, len(AU_NAMES))) < 0.3).astype(np.int64)
    prob = 0.25 * truth + 0.4 * rng.random(truth.shape)     # positives score higher, few of them reach 0.5
    return truth, prob, np.repeat([f"v{k}" for k in range(n_videos)], frames)


def test_au_threshold_gain_is_the_difference_of_the_two_au_f1s_with_a_paired_interval():
    truth, prob, videos = _au_split(np.random.default_rng(0))
    tuned = metrics.tune_au_thresholds(truth, prob)
    gain = metrics.au_threshold_gain(truth, prob, videos, tuned, 0.5, n_boot=200)
    assert gain["gain"] == pytest.approx(metrics.au_f1(truth, prob, tuned)[1] - metrics.au_f1(truth, prob, 0.5)[1])
    assert gain["low"] <= gain["gain"] <= gain["high"] and gain["verdict"] == "better"   # tuned and scored on the same frames
    same = metrics.au_threshold_gain(truth, prob, videos, 0.5, 0.5, n_boot=50)
    assert (same["gain"], same["low"], same["high"], same["verdict"]) == (0, 0, 0, "within the noise")


def test_au_threshold_gain_ignores_invalid_au_labels():
    truth, prob, videos = _au_split(np.random.default_rng(1))
    truth[:10, 0] = -1
    gain = metrics.au_threshold_gain(truth, prob, videos, 0.3, 0.5, n_boot=20)
    assert gain["gain"] == pytest.approx(metrics.au_f1(truth, prob, 0.3)[1] - metrics.au_f1(truth, prob, 0.5)[1])


def test_au_floors_reads_base_rates_and_hardest_first():
    truth, prob, _ = _au_split(np.random.default_rng(2))
    truth[:, 3] = 0
    truth[:5, 3] = 1                                            # AU6: rare, and scored below the others
    prob[:, 3] = 0.1
    report = metrics.au_report(truth, prob)
    floors = baselines.au_floors(report)
    assert floors.index[0] == "AU6" and list(floors["F1"]) == sorted(floors["F1"])
    p = 5 / len(truth)
    assert floors.loc["AU6", "base rate"] == pytest.approx(p)
    assert floors.loc["AU6", "always-active F1"] == pytest.approx(2 * p / (1 + p))
    # the every-AU-active predictor scores exactly that floor
    always = metrics.au_report(truth, np.ones_like(prob))
    assert floors["always-active F1"].to_dict() == pytest.approx(always["per_au_f1"])
    sentence = baselines.hardest_au_sentence(floors)
    assert sentence.startswith("hardest: AU6, F1 0.000") and "the rarest is AU6" in sentence and "of 12 AUs beat" in sentence


def test_hardest_au_sentence_when_every_f1_is_the_same():
    truth, prob, _ = _au_split(np.random.default_rng(3))
    floors = baselines.au_floors(metrics.au_report(truth, np.zeros_like(prob)))    # never active: every F1 is 0
    sentence = baselines.hardest_au_sentence(floors)
    assert "F1 (or the base rate) does not vary across the AUs" in sentence and "0 of 12 AUs beat" in sentence
    assert sentence.startswith("hardest: 12 AUs tie (")
    # answering "active" everywhere ties with the always-active floor: no AU beats it
    assert "0 of 12 AUs beat" in baselines.hardest_au_sentence(baselines.au_floors(metrics.au_report(truth, np.ones_like(prob))))


def test_landmark_region_errors_finds_the_displaced_region_and_point():
    rng = np.random.default_rng(4)
    true = rng.uniform(-0.6, 0.6, (10, 68, 2))
    true[:, 36], true[:, 45] = (-0.4, 0.0), (0.4, 0.0)          # outer eye corners 0.8 apart
    pred = true.copy()
    pred[:, 48:68, 1] += 0.08                                     # the whole mouth 0.1 inter-ocular low
    pred[:, 57, 1] += 0.08                                        # its lower lip's middle even more
    errors = metrics.landmark_region_errors(pred, true)
    assert errors["regions"]["jaw"] == 0 and errors["regions"]["mouth"] == pytest.approx((19 * 0.1 + 0.2) / 20)
    assert (errors["worst_point"], errors["worst_point_region"]) == (57, "mouth")
    assert errors["worst_point_nme"] == pytest.approx(0.2)
    # the regions' NME, weighted by their points, is landmark_errors' NME
    overall = metrics.landmark_errors(pred, true)["landmark_nme"]
    sizes = {name: b - a for name, (a, b) in metrics.LANDMARK_REGIONS.items()}
    assert sum(errors["regions"][r] * sizes[r] for r in sizes) / 68 == pytest.approx(overall)


def test_landmark_region_errors_skips_unlabelled_faces_and_refuses_none():
    true = np.random.default_rng(5).uniform(-0.6, 0.6, (4, 68, 2))
    pred = true + 0.01
    true[0] = np.nan
    assert metrics.landmark_region_errors(pred, true)["regions"] == metrics.landmark_region_errors(pred[1:], true[1:])["regions"]
    with pytest.raises(ValueError, match="at least one labelled face"):
        metrics.landmark_region_errors(pred, np.full_like(true, np.nan))


def test_mean_shape_landmarks_is_the_mean_shape_baselines_prediction():
    landmarks = torch.from_numpy(np.random.default_rng(6).uniform(-0.6, 0.6, (8, 68, 2)))
    train = SimpleNamespace(landmarks=landmarks[:5])
    mean = baselines.mean_shape_landmarks(train, 3)
    assert mean.shape == (3, 68, 2) and np.allclose(mean[2], landmarks[:5].numpy().mean(0))
    val = SimpleNamespace(landmarks=landmarks[5:])
    assert baselines.mean_shape(train, val) == metrics.landmark_errors(mean, landmarks[5:].numpy())


def test_unpaired_sentence_reads_overlap_of_the_intervals():
    a = {"lsd_mean_f1": 0.20, "interval": (0.15, 0.25)}
    assert "a difference of -0.100; the intervals do not overlap: dim is lower beyond the noise" in compare.unpaired_sentence(
        "dim", a, "photo", {"lsd_mean_f1": 0.30, "interval": (0.26, 0.35)}, "lsd_mean_f1")
    assert compare.unpaired_sentence("dim", a, "photo", {"lsd_mean_f1": 0.24, "interval": (0.19, 0.30)},
                                     "lsd_mean_f1").endswith("the intervals overlap: this run cannot tell the two apart")
    assert compare.unpaired_sentence("dim", a, "photo", {"lsd_mean_f1": 0.10, "interval": (0.05, 0.15)},
                                     "lsd_mean_f1").endswith("the intervals overlap: this run cannot tell the two apart")
