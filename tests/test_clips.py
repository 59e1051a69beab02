"""Paper B's clips: sequential chunks per video, padding that counts nowhere, and clip runs in the loop."""
import json

import numpy as np
import pytest
import torch

from fer_kit import train
from fer_kit.config import ClipConfig, TrainConfig
from fer_kit.data.clips import ClipDataset, clip_indices


def test_clip_indices_chunk_each_video_in_order_and_pad_its_tail():
    videos = np.array(["a"] * 5 + ["b"] * 2 + ["c"] * 4)
    idx = clip_indices(videos, 4)
    assert idx.tolist() == [[0, 1, 2, 3], [4, -1, -1, -1], [5, 6, -1, -1], [7, 8, 9, 10]]
    assert clip_indices(videos, 1).ravel().tolist() == list(range(11))
    with pytest.raises(ValueError, match="clip_length"):
        clip_indices(videos, 0)


def test_clip_indices_never_mix_videos_even_when_interleaved():
    videos = np.array(["a", "b", "a", "b", "a"])
    idx = clip_indices(videos, 2)
    for clip in idx:
        real = clip[clip >= 0]
        assert len(set(videos[real])) == 1
    assert sorted(idx[idx >= 0].tolist()) == list(range(5))     # every frame exactly once


@pytest.fixture(scope="module")
def tiny_data(tiny_synthetic):
    return train.load_expr_data(TrainConfig(n_frames=600, seed=3, image_size=32, progress=False))


def test_clip_dataset_repeats_the_last_frame_with_label_minus_one(tiny_data):
    clips = ClipDataset(tiny_data.val, 8)
    i = next(k for k, row in enumerate(clips.index) if (row < 0).any())
    x, y = clips[i]
    row = clips.index[i]
    last = row[row >= 0][-1]
    assert x.shape == (8, 3, 32, 32) and y.shape == (8,)
    assert (y[torch.from_numpy(row < 0)] == -1).all()
    assert (y[torch.from_numpy(row >= 0)] == tiny_data.val.labels[row[row >= 0]]).all()
    assert torch.equal(x[-1], tiny_data.val[last][0])          # eval transform: deterministic
    assert clips.padding == int((clips.index < 0).sum())


def test_a_clip_gets_one_augmentation_draw_for_all_its_frames(tiny_data):
    """Each frame drawn on its own came out mirrored F,T,F,T,...: a clip must flip (crop, jitter) as one."""
    from fer_kit.data.transforms import train_transform

    frames = tiny_data.val
    aug = type(frames).__new__(type(frames))
    aug.__dict__.update(frames.__dict__)
    aug.transform = train_transform("paper_c", 32)                 # a face flip with p = 0.5, then colour jitter
    plain = frames.transform
    clips = ClipDataset(aug, 8)
    i = next(k for k, row in enumerate(clips.index) if (row >= 0).all())
    row = clips.index[i]
    torch.manual_seed(0)
    flips = set()
    for _ in range(12):
        x, _ = clips[i]
        # frame by frame: closer to its mirror image than to itself means this draw flipped it
        d = [(float((x[t] - plain(frames.image(j))).abs().mean()), float((x[t] - plain(frames.image(j)).flip(-1)).abs().mean()))
             for t, j in enumerate(row)]
        per_frame = {a > b for a, b in d}
        assert len(per_frame) == 1, f"frames of one clip flipped differently: {[a > b for a, b in d]}"
        flips |= per_frame
    assert flips == {True, False}                                   # both draws happen over 12 tries


def test_predict_on_clips_gives_every_frame_once_in_table_order(tiny_data):
    """A model that answers each frame's own label proves the frames come back where they belong."""
    class Oracle(torch.nn.Module):
        def forward(self, x):                                     # label hidden in the mean pixel value
            return torch.nn.functional.one_hot(x.float().mean(dim=(-1, -2, -3)).round().long().clamp(0, 7), 8).float()

    ds = ClipDataset(tiny_data.val, 8)
    frames = ds.frames
    coded = type(frames).__new__(type(frames))
    coded.__dict__.update(frames.__dict__)
    coded.transform = None
    coded.images = frames.labels.view(-1, 1, 1, 1).expand(-1, 3, 2, 2).to(torch.uint8).clone()
    logits, labels = train.predict(Oracle(), ClipDataset(coded, 8), batch_size=32)
    assert len(labels) == len(frames)
    assert (labels == frames.labels.numpy()).all()                 # table order, padding dropped
    assert (logits.argmax(1) == labels).all()


def test_clip_run_trains_per_frame_logits_and_scores_every_frame(tmp_path, tiny_data):
    cfg = TrainConfig(model="regnet_transformer", preset="laptop_b", n_frames=600, seed=3, image_size=32,
                      clip_length=4, batch_size=2, epochs=1, max_batches=3, progress=False, out_dir=str(tmp_path / "c"))
    result = train.fit(cfg, train.as_clips(tiny_data, 4))
    m = json.loads((tmp_path / "c" / "metrics.json").read_text())
    assert sum(map(sum, m["best"]["confusion"])) == len(tiny_data.val)    # each real frame once
    assert m["config"]["clip_length"] == 4 and m["config"]["variant"] == "combine"
    assert result.model.att is not None and result.model.trans is not None


def test_clip_model_starts_from_the_per_frame_trunk(tmp_path, tiny_data):
    base = dict(model="regnet_transformer", preset="laptop_b", n_frames=600, seed=3, image_size=32, batch_size=8,
                epochs=1, max_batches=2, progress=False)
    frame = train.fit(TrainConfig(**base, variant="no_att_trans", clip_length=1, out_dir=str(tmp_path / "f")), tiny_data)
    model = train.build_model(TrainConfig(**base, variant="combine", clip_length=4))
    counts = train.init_weights(model, tmp_path / "f" / "best.pt")
    assert counts["loaded"] > 0 and counts["kept_init"] > 0          # trunk copied, temporal layers new
    for name, p in frame.model.backbone.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[name], p), name
    assert all(why.startswith(name) and "checkpoint" in why for name, why in counts["reinitialised"].items())   # named, with why
    with pytest.raises(ValueError, match=r"checkpoint of 'regnet_transformer'.*only 0 of the 2 tensors of this 'Linear'"):
        train.init_weights(torch.nn.Linear(3, 3), tmp_path / "f" / "best.pt")


def test_clip_config_names_its_runs_and_rejects_bad_values():
    cfg = ClipConfig()
    assert cfg.frame_config().clip_length == 1 and cfg.frame_config().batch_size == cfg.batch_size * cfg.clip_length
    c = cfg.clip_config("combine")
    assert c.init_from == "runs/05_per_frame/best.pt" and c.out_dir == "runs/05_combine" and c.freeze_epochs == 1
    with pytest.raises(ValueError, match="did you mean 'combine'"):
        ClipConfig(variants="combin")
    with pytest.raises(ValueError, match="regnet_transformer"):
        TrainConfig(clip_length=16)                                 # DAN classifies single frames


def test_busiest_video_is_the_one_whose_label_changes_most():
    from fer_kit.data.clips import busiest_video

    videos = np.array(["a"] * 4 + ["b"] * 4)
    labels = np.array([0, 0, 0, 1, 2, 3, 2, 3])
    name, mask = busiest_video(videos, labels)
    assert name == "b" and mask.tolist() == [False] * 4 + [True] * 4
