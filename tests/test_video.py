"""fer_kit.video: frames of a file or a folder -> faces -> probabilities -> smoothing -> timeline and csv."""
import numpy as np
import pandas as pd
import pytest

from fer_kit import video


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """The test video of two segments, as an mp4 and as a folder of PNGs."""
    root = tmp_path_factory.mktemp("video")
    kw = dict(segments=("Neutral", "Happiness", "Surprise"), frames_per_segment=8, size=160)
    truth = video.render_test_video(root / "clip.mp4", **kw)
    video.render_test_video(root / "frames", **kw)
    return root, truth


def test_a_video_file_and_a_folder_of_frames_read_alike(clip):
    root, truth = clip
    frames, fps = video.read_frames(root / "clip.mp4")
    pngs, _ = video.read_frames(root / "frames")
    assert len(frames) == len(pngs) == len(truth) == 24 and fps == 10.0
    assert frames[0].shape == pngs[0].shape == (160, 160, 3)
    assert np.abs(frames[5].astype(int) - pngs[5].astype(int)).mean() < 6          # mp4 is lossy, not different
    assert truth["class"].tolist() == ["Neutral"] * 8 + ["Happiness"] * 8 + ["Surprise"] * 8
    assert len(video.read_frames(root / "frames", every=2)[0]) == 12


def test_every_frame_of_the_test_video_has_a_face_and_the_pipeline_writes_its_table(clip, tmp_path):
    import torch

    from fer_kit.models import create_model

    root, truth = clip
    frames, _ = video.read_frames(root / "clip.mp4")
    torch.manual_seed(0)
    table = video.analyse(frames, create_model("test_dan", num_classes=8).eval(), 48, progress=False)
    assert table["face"].all()                                          # OpenCV's detector finds the face
    p = table[[f"p_{c}" for c in video.EXPR_CLASSES]].to_numpy()
    assert np.allclose(p.sum(1), 1, atol=1e-5) and set(table["predicted"]) <= set(video.EXPR_CLASSES)
    assert 0.0 <= video.segment_accuracy(table, truth) <= 1.0
    video.timeline(table, truth=truth, path=tmp_path / "timeline.png")
    assert (tmp_path / "timeline.png").stat().st_size > 5000


def test_smoothing_bridges_frames_without_a_face():
    probs = np.array([[0.9, 0.1], [np.nan, np.nan], [0.7, 0.3], [0.1, 0.9], [0.2, 0.8]])
    s = video.smooth(probs, 3)
    assert np.isfinite(s).all() and s[1] == pytest.approx([0.8, 0.2])
    assert video.smooth(probs, 1) is probs


def test_segments_are_scored_by_their_most_frequent_prediction():
    truth = pd.DataFrame({"class": ["Neutral"] * 4 + ["Anger"] * 4 + ["Neutral"] * 2})
    table = pd.DataFrame({"smoothed": ["Neutral", "Anger", "Neutral", "Neutral", "Anger", "Anger", "Fear", "Anger",
                                       "Fear", "Fear"]})
    assert video.segment_accuracy(table, truth) == pytest.approx(2 / 3)      # the second Neutral run is missed


def test_bad_sources_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.mp4 does not exist"):
        video.read_frames(tmp_path / "nowhere.mp4")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no images"):
        video.read_frames(tmp_path / "empty")
    (tmp_path / "notes.mp4").write_text("not a video")
    with pytest.raises(ValueError, match="notes.mp4"):
        video.read_frames(tmp_path / "notes.mp4")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "0001.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="0001.png is not an image"):
        video.read_frames(tmp_path / "broken")


def test_smoothing_by_video_never_averages_across_two_videos():
    probs = np.array([[1, 0], [1, 0], [1, 0], [0, 1], [0, 1], [0, 1]], float)
    videos = np.array(["a", "a", "a", "b", "b", "b"])
    out = video.smooth_by_video(probs, videos, window=3)
    assert np.array_equal(out, probs)                       # each video is constant: nothing to blur in
    assert not np.array_equal(video.smooth(probs, 3), probs)      # the plain moving average mixes a's end into b
    interleaved = np.array(["a", "b", "a", "b", "a", "b"])  # frames of one video need not be contiguous
    shuffled = probs[[0, 3, 1, 4, 2, 5]]
    assert np.array_equal(video.smooth_by_video(shuffled, interleaved, 3), shuffled)
    assert video.smooth_by_video(probs, videos, 1) is not probs   # the input is never changed in place
