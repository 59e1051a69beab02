"""The helpers behind notebook 05's and 06's exercises: smoothing inside videos, which model a condition
hurts more, and paper C's branches voting alone."""
import numpy as np
import pytest
import torch

from fer_kit import compare
from fer_kit.models import create_model
from fer_kit.models.scan_cci import branch_logits
from fer_kit.video import smooth, smooth_by_video


def test_smoothing_by_video_never_averages_across_two_videos():
    probs = np.array([[1, 0], [1, 0], [1, 0], [0, 1], [0, 1], [0, 1]], float)
    videos = np.array(["a", "a", "a", "b", "b", "b"])
    out = smooth_by_video(probs, videos, window=3)
    assert np.array_equal(out, probs)                       # each video is constant: nothing to blur in
    assert not np.array_equal(smooth(probs, 3), probs)      # the plain moving average mixes a's end into b
    interleaved = np.array(["a", "b", "a", "b", "a", "b"])  # frames of one video need not be contiguous
    shuffled = probs[[0, 3, 1, 4, 2, 5]]
    assert np.array_equal(smooth_by_video(shuffled, interleaved, 3), shuffled)
    assert smooth_by_video(probs, videos, 1) is not probs   # the input is never changed in place


def test_drop_under_names_the_model_the_condition_hurts():
    rng = np.random.default_rng(0)
    videos = np.repeat([f"v{k}" for k in range(12)], 40)
    labels = rng.integers(0, 4, len(videos))
    covered = np.tile(np.arange(40) < 10, 12)
    covered[videos == "v11"] = False                          # a video without covered frames does not count
    fragile = np.where(covered, (labels + 1) % 4, labels)     # right on clean frames, wrong on covered ones
    robust = labels.copy()
    out = compare.drop_under(labels, {"fragile": fragile, "robust": robust}, videos, covered, 4,
                             score="accuracy", what="covered", n_boot=200)
    assert out["videos"] == 11 and out["frames"] == 11 * 40
    assert out["drop"] == {"fragile": pytest.approx(1.0), "robust": pytest.approx(0.0)}
    assert out["gap"]["verdict"] == "better" and "fragile loses more than robust" in out["sentence"]
    swapped = compare.drop_under(labels, {"robust": robust, "fragile": fragile}, videos, covered, 4, score="accuracy")
    assert swapped["gap"]["verdict"] == "worse" and "robust loses less" in swapped["sentence"]
    same = compare.drop_under(labels, {"a": robust, "b": robust}, videos, covered, 4, score="accuracy")
    assert same["gap"]["verdict"] == "within the noise"


def test_branch_logits_split_paper_c_s_vote_into_its_parts():
    torch.manual_seed(0)
    net = create_model("scan_cci_small", num_classes=7).eval()
    frames = [(torch.randn(3, 48, 48), 0) for _ in range(5)]
    parts = branch_logits(net, frames, batch_size=2)
    assert list(parts) == ["mean of 5 (paper C)", "SCAN alone", "CCI blocks alone"]
    assert all(z.shape == (5, 7) for z in parts.values())
    with torch.no_grad():
        whole = net(torch.stack([x for x, _ in frames])).logits.numpy()
    assert np.allclose(parts["mean of 5 (paper C)"], whole, atol=1e-5)
    assert np.allclose(parts["mean of 5 (paper C)"], (parts["SCAN alone"] + 4 * parts["CCI blocks alone"]) / 5, atol=1e-5)
