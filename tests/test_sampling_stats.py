import math

import numpy as np
import pytest
import torch

from fer_kit.data import sampling
from fer_kit.data.sampling import bagging_subsets, cap_per_class, class_weights, subset_overlap, weighted_sampler
from fer_kit.data.stats import au_cooccurrence, au_prevalence, class_table, frames_per_video, imbalance, va_histogram
from fer_kit.data.table import DropReport, FrameTable, concat_tables
from fer_kit.labels import AU_NAMES, EXPR_CLASSES


def table(labels, videos=None, va=None, au=None):
    n = len(labels)
    return FrameTable([f"f{i}.jpg" for i in range(n)], np.array(labels), np.array(videos or ["v"] * n),
                      EXPR_CLASSES, DropReport("test", kept=n), va=va, au=au)


def test_weighted_sampler_balances_classes_and_skips_invalid():
    labels = np.array([0] * 90 + [1] * 10 + [-1] * 5)
    w = class_weights(labels, 8)
    assert w[0] == pytest.approx(1 / 90) and w[95] == pytest.approx(1 / 10) and (w[100:] == 0).all()
    draws = np.array(list(weighted_sampler(labels, 8, num_samples=4000, generator=torch.Generator().manual_seed(0))))
    drawn = labels[draws]
    assert (drawn >= 0).all() and 0.45 < (drawn == 1).mean() < 0.55


def test_cap_per_class_trims_only_large_classes():
    labels = np.array([0] * 50 + [3] * 4 + [7] * 20)
    idx = cap_per_class(labels, 10, seed=1)
    assert np.bincount(labels[idx], minlength=8)[[0, 3, 7]].tolist() == [10, 4, 10]
    assert np.array_equal(idx, cap_per_class(labels, 10, seed=1))          # seeded
    with pytest.raises(ValueError):
        cap_per_class(labels, 0)


def test_bagging_subsets_fraction_bootstrap_and_whole_videos():
    subs = bagging_subsets(100, 3, fraction=0.2, seed=0)
    assert [len(s) for s in subs] == [20, 20, 20] and all(len(set(s)) == 20 for s in subs)
    assert not np.array_equal(subs[0], subs[1])
    boot = bagging_subsets(100, 2, bootstrap=True, seed=0)
    assert len(boot[0]) == 100 and len(set(boot[0].tolist())) < 100      # drawn with replacement
    videos = np.repeat(np.arange(10), 5)
    for s in bagging_subsets(50, 4, fraction=0.3, seed=2, groups=videos):
        chosen = set(videos[s])
        assert len(s) == 5 * len(chosen) == 15                              # whole videos only
    ov = subset_overlap(subs)
    assert ov.shape == (3, 3) and np.allclose(np.diag(ov), 1) and (ov[0, 1] < 0.5)


def test_class_table_and_imbalance():
    t = table([0, 0, 0, 1, 2, 3, 4, 5, 6, 7, -1])
    df = class_table({"mine": t})
    assert df.loc["mine", "Neutral"] == 3 and df.loc["mine", "total"] == 10      # -1 is not counted
    assert df.index[0].startswith("Aff-Wild2") and df.iloc[0]["Neutral"] == 177_498
    assert imbalance(df).loc["mine", "largest / smallest"] == 3.0


def test_frames_per_video_au_and_va_statistics():
    au = np.zeros((4, 12), np.float32)
    au[0, [3, 6]] = 1          # AU6 + AU12
    au[1, 6] = 1               # AU12 alone
    au[3] = -1                 # invalid row: ignored
    va = np.array([[0.5, 0.5], [np.nan, np.nan], [-0.9, 0.1], [0.0, 0.0]], np.float32)
    t = table([4, 4, 0, 0], videos=["a", "a", "a", "b"], va=va, au=au)
    assert frames_per_video(t).to_dict() == {"a": 3, "b": 1}
    prev = au_prevalence(t)
    assert prev["AU12"] == pytest.approx(2 / 3) and prev["AU6"] == pytest.approx(1 / 3)
    co = au_cooccurrence(t)
    assert co.loc["AU6", "AU12"] == 1.0 and co.loc["AU12", "AU6"] == 0.5 and co.loc["AU1", "AU2"] == 0
    hist, edges = va_histogram(t, bins=4)
    assert hist.sum() == 3 and len(edges) == 5
    with pytest.raises(ValueError, match="no AU labels"):
        au_prevalence(table([0]))


def test_table_subset_and_concat_keep_arrays_aligned():
    va = np.arange(8, dtype=np.float32).reshape(4, 2)
    t = table([0, 1, 2, 3], va=va)
    s = t.subset(np.array([False, True, False, True]))
    assert s.labels.tolist() == [1, 3] and s.va.tolist() == [[2, 3], [6, 7]] and s.paths == ["f1.jpg", "f3.jpg"]
    both = concat_tables([s, t.subset([0])])
    assert len(both) == 3 and both.va.shape == (3, 2)
    with pytest.raises(ValueError, match="rows"):
        FrameTable(["a"], np.array([0, 1]), np.array(["v"]), EXPR_CLASSES, DropReport("x"))
    with pytest.raises(ValueError, match="labels must be in -1..7"):
        table([9])
    # the ABAW csv columns are read by position: the order is the challenge's
    assert AU_NAMES == ("AU1", "AU2", "AU4", "AU6", "AU7", "AU10", "AU12", "AU15", "AU23", "AU24", "AU25", "AU26")


def test_always_answering_one_class_scores_its_share_in_accuracy_and_little_in_p_expr():
    from fer_kit.data.stats import always_one_class
    from fer_kit.labels import AFFWILD2_EXPR_COUNTS
    from fer_kit.metrics import expr_report

    counts = [30, 5, 10, 5]
    y = np.repeat(np.arange(4), counts)
    report = expr_report(y, np.zeros_like(y), num_classes=4)                 # the metric code agrees
    got = always_one_class(counts)
    assert got["class"] == 0 and got["accuracy"] == pytest.approx(report["accuracy"])
    assert got["p_expr"] == pytest.approx(report["p_expr"])
    affwild2 = always_one_class(AFFWILD2_EXPR_COUNTS)                          # paper A Table 1: Neutral
    assert affwild2["class"] == 0 and 0.30 < affwild2["accuracy"] < 0.31 and affwild2["p_expr"] < 0.06


def test_the_strongest_au_pair_is_found_off_the_diagonal():
    import pandas as pd

    from fer_kit.data.stats import strongest_pair

    c = pd.DataFrame([[1.0, 0.2, 0.9], [0.1, 1.0, 0.3], [0.4, 0.95, 1.0]], index=list("abc"), columns=list("abc"))
    assert strongest_pair(c) == ("c", "b", 0.95)


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
