"""Helpers behind the exercises of notebooks 00, 02 and 03: hand cases and what a simulation measures."""
import math

import numpy as np
import pytest

from fer_kit import explain, toys
from fer_kit.data import sampling


def test_epoch_coverage_shows_rare_frames_more_often_and_matches_its_expectation():
    labels = np.repeat([0, 1, 2], [3000, 600, 200])
    labels = np.concatenate([labels, [-1] * 50])                        # no expression: never drawn
    cover = sampling.epoch_coverage(labels, num_classes=4, seed=0)
    assert list(cover.index) == [0, 1, 2]                                  # class 3 has no frame: no row
    assert cover["draws"].sum() == len(labels)
    assert cover["share seen"].is_monotonic_increasing                    # the rarer, the more of it is seen
    # q = (1/n_c) / (number of classes): 1 - (1 - q)^N with N = 3850 draws
    n = len(labels)
    assert cover.loc[0, "expected share"] == pytest.approx(1 - (1 - 1 / 9000) ** n)
    assert np.allclose(cover["share seen"], cover["expected share"], atol=0.03)


def test_member_share_predicts_the_overlap_and_the_unseen_videos_of_bagging_subsets():
    assert sampling.member_share(50, 0.2) == 0.2
    assert sampling.member_share(7, 0.2) == 1 / 7                          # round(1.4) = 1 video
    assert sampling.member_share(1000, bootstrap=True) == pytest.approx(1 - math.exp(-1), abs=1e-3)
    videos = np.repeat(np.arange(200), 5)                                  # 200 videos of 5 frames
    for boot in (False, True):
        s = sampling.member_share(200, 0.2, bootstrap=boot)
        bags = sampling.bagging_subsets(len(videos), 40, 0.2, bootstrap=boot, seed=1, groups=videos)
        overlap = sampling.subset_overlap(bags)[np.triu_indices(40, 1)].mean()
        assert overlap == pytest.approx(s / (2 - s), abs=0.02), boot
        unseen = [1 - len(np.unique(np.concatenate(bags[i:i + 5]))) / len(videos) for i in range(0, 40, 5)]
        assert np.mean(unseen) == pytest.approx((1 - s) ** 5, abs=0.03), boot


def test_cap_report_counts_what_each_cap_throws_away():
    labels = np.repeat([0, 1, 2], [10, 4, 2])
    report = sampling.cap_report(labels, [5, 2], ["A", "B", "C", "D"])    # D: no frame, left out of the ratios
    assert report.loc[5, "kept"] == 11 and report.loc[5, "thrown away"] == 5
    assert report.loc[5, "classes trimmed"] == ["A"]
    assert report.loc[5, "imbalance before"] == 5 and report.loc[5, "imbalance after"] == 2.5
    assert report.loc[2, "kept"] == 6 and report.loc[2, "imbalance after"] == 1
    assert report.loc[2, "share thrown away"] == pytest.approx(10 / 16)


def test_focal_gradient_ratio_is_one_for_cross_entropy_and_matches_the_formula():
    for p in (0.1, 0.5, 0.9):
        assert toys.focal_gradient_ratio(p, gamma=0) == pytest.approx(1.0)
        for gamma in (1.0, 2.0):
            formula = (1 - p) ** gamma - gamma * p * (1 - p) ** (gamma - 1) * math.log(p)
            assert toys.focal_gradient_ratio(p, gamma) == pytest.approx(formula, rel=1e-6)
    assert toys.focal_gradient_ratio(0.9) < 0.05 and toys.focal_gradient_ratio(0.1) > 1


def test_confidence_by_outcome_compares_right_and_wrong_frames_over_videos():
    labels = np.array([0, 0, 1, 1] * 5)
    videos = np.repeat(np.arange(5), 4)
    sure, unsure = [0.9, 0.1], [0.4, 0.6]
    probs = np.array([sure, unsure, sure[::-1], unsure] * 5)   # per video: frames 0, 2, 3 right; frame 1 wrong at 0.6
    out = explain.confidence_by_outcome(probs, labels, videos, n_boot=200)
    assert out["n_right"] == 15 and out["n_wrong"] == 5
    assert out["right"] == pytest.approx((0.9 + 0.9 + 0.6) / 3) and out["wrong"] == pytest.approx(0.6)
    assert out["accuracy"] == 0.75 and out["confidence"] == pytest.approx(0.75)
    assert out["gap"]["verdict"] == "higher" and "surer when it is right" in out["sentence"]
    every = explain.confidence_by_outcome(probs[labels == 0][::2], labels[labels == 0][::2], videos[labels == 0][::2])
    assert every["gap"] is None and "nothing to compare" in every["sentence"]


def test_video_bootstrap_can_leave_out_resamples_where_the_score_is_undefined():
    from fer_kit import metrics

    videos = np.arange(6).repeat(2)
    # undefined when a resample draws fewer than 3 distinct videos (about 2%): those resamples are left out
    rarely = lambda i: np.nan if len(np.unique(videos[i])) < 3 else float((i < 2).mean())
    assert np.isnan(metrics.video_bootstrap(rarely, videos, n_boot=2000)).all()
    lo, hi = metrics.video_bootstrap(rarely, videos, n_boot=2000, skip_nan=True)
    assert 0 <= lo <= hi < 1
    # undefined whenever video 0 is missing (a third of the resamples): too small a group to bound
    often = lambda i: np.nan if not (i < 2).any() else float((i < 2).mean())
    assert np.isnan(metrics.video_bootstrap(often, videos, n_boot=200, skip_nan=True)).all()
