"""The loss toys of notebook 03 show what they claim, with the kit's real losses."""
import math

import numpy as np
import pytest

from fer_kit import toys


def test_affinity_gathers_features_and_spreads_centres():
    toy = toys.affinity_toy(steps=100)
    assert toy.ratio_after < 0.1 * toy.ratio_before
    spread = lambda c: c.var(axis=0, ddof=1).sum()
    assert spread(toy.centres_after) > spread(toy.centres_before)
    assert toy.loss[-1] < 0.1 * toy.loss[0]


def test_partition_lets_heads_divide_the_channels():
    toy = toys.partition_toy(steps=100)
    assert toy.probs_before.max(axis=0).mean() < 0.35                  # every head near 1/4 of every channel
    assert toy.probs_after.max(axis=0).mean() > 0.7                    # one head leads each channel
    assert len(set(toy.probs_after.argmax(axis=0))) >= 3               # and the channels are shared out
    np.testing.assert_allclose(toy.probs_after.sum(axis=0), 1, atol=1e-5)


def test_ccc_punishes_the_mean_that_mse_rewards():
    table, traces = toys.ccc_vs_mse()
    t = table.set_index("prediction")
    const, offset = t.loc["constant at the mean"], t.loc["right swings, offset +0.4"]
    assert const["CCC"] == pytest.approx(0.0, abs=1e-9)
    assert const["MSE"] < offset["MSE"] and offset["CCC"] > 0.5
    truth, timid = traces["truth"], traces["timid: 0.3 x the swings"]
    expected = 2 * 0.3 * truth.var() / (0.09 * truth.var() + truth.var())   # CCC of m + a (t - m), by hand
    assert t.loc["timid: 0.3 x the swings", "CCC"] == pytest.approx(expected, rel=1e-4)
    assert np.corrcoef(timid, truth)[0, 1] == pytest.approx(1.0)


def test_attention_loss_pushes_heads_apart():
    toy = toys.attention_diversity_toy(steps=100)
    gap = lambda m: float(((m[0] - m[1]) ** 2).mean())
    assert gap(toy.maps_after) > 100 * gap(toy.maps_before)
    assert toy.loss[-1] < 0.01 * toy.loss[0]
    c = toy.curve
    np.testing.assert_allclose(c["loss"], 1 / c["mean squared difference"], rtol=1e-4)   # 1 pair / MSE


def test_focal_curves():
    c = toys.focal_curves(gammas=(0.0, 2.0))
    p = c["p(true class)"]
    np.testing.assert_allclose(c["gamma = 0"], -np.log(p), rtol=1e-5)
    np.testing.assert_allclose(c["gamma = 2"], -(1 - p) ** 2 * np.log(p), rtol=1e-4)


def test_focal_gradient_ratio_is_one_for_cross_entropy_and_matches_the_formula():
    for p in (0.1, 0.5, 0.9):
        assert toys.focal_gradient_ratio(p, gamma=0) == pytest.approx(1.0)
        for gamma in (1.0, 2.0):
            formula = (1 - p) ** gamma - gamma * p * (1 - p) ** (gamma - 1) * math.log(p)
            assert toys.focal_gradient_ratio(p, gamma) == pytest.approx(formula, rel=1e-6)
    assert toys.focal_gradient_ratio(0.9) < 0.05 and toys.focal_gradient_ratio(0.1) > 1
