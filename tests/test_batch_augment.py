"""Batched augmentation is the per-image recipe, drawn and applied a batch at a time.

Two halves make the claim: each batched step draws its parameters from the same distributions as
torchvision's `make_params` (two-sample tests on thousands of draws), and given torchvision's own
parameters it makes the same image and moves landmarks the same way. End to end, the per-image and
batched recipes give the same distribution of augmented faces, and training runs through either.
"""
import numpy as np
import pytest
import torch
from scipy import stats
from torchvision.transforms import v2

from fer_kit import train
from fer_kit.train import loop
from fer_kit.train.data import augment_batch
from fer_kit.config import TrainConfig
from fer_kit.data import batch_augment as ba
from fer_kit.data.transforms import (RECIPES, RandomErasingFace, RandomHorizontalFlipFace,
                                     from_keypoints, to_keypoints, train_transform)

SIZE = 48

STEPS = {
    "flip": RandomHorizontalFlipFace(p=0.5),
    "affine": v2.RandomAffine(degrees=20, translate=(0.2, 0.2), scale=(0.8, 1.0)),
    "rotation": v2.RandomRotation(20),
    "padded_crop": v2.RandomCrop([SIZE, SIZE], padding=7),
    "jitter": v2.ColorJitter(0.5, 0.5, 0.5, 0.5),
    "jitter_no_hue": v2.ColorJitter(0.4, 0.3, 0.25),
    "erase": RandomErasingFace(scale=(0.02, 0.33)),
    "erase_large": RandomErasingFace(p=1.0, scale=(0.5, 0.9)),     # often no fit in ten tries
}


def tv_draws(t, n: int, image: torch.Tensor) -> list[dict]:
    """n draws of torchvision's own parameters, with its apply-probability folded in as `on`."""
    out = []
    for _ in range(n):
        if isinstance(t, (v2.RandomHorizontalFlip, v2.RandomErasing)):
            on = bool(torch.rand(1) < t.p)            # _RandomApplyTransform.forward draws this first
            out.append({"on": on, **(t.make_params([image]) if on else {})})
        else:
            out.append(t.make_params([image]))
    return out


def as_twin(t, draws: list[dict]) -> dict:
    """torchvision's per-image parameters in the batched twin's layout."""
    col = lambda k, f=float: torch.tensor([f(d[k]) for d in draws])
    if isinstance(t, v2.RandomHorizontalFlip):
        return {"flip": torch.tensor([d["on"] for d in draws])}
    if isinstance(t, v2.RandomAffine):
        return {"angle": col("angle"), "tx": torch.tensor([float(d["translate"][0]) for d in draws]),
                "ty": torch.tensor([float(d["translate"][1]) for d in draws]), "scale": col("scale")}
    if isinstance(t, v2.RandomRotation):
        n = len(draws)
        return {"angle": col("angle"), "tx": torch.zeros(n), "ty": torch.zeros(n), "scale": torch.ones(n)}
    if isinstance(t, v2.RandomCrop):
        return {"top": col("top", int), "left": col("left", int)}
    if isinstance(t, v2.ColorJitter):
        f = lambda v: float("nan") if v is None else v
        return {"order": torch.stack([d["fn_idx"] for d in draws]),
                "factors": torch.tensor([[f(d["brightness_factor"]), f(d["contrast_factor"]),
                                          f(d["saturation_factor"]), f(d["hue_factor"])] for d in draws])}
    if isinstance(t, v2.RandomErasing):
        erased = [d["on"] and d["v"] is not None for d in draws]
        get = lambda k: torch.tensor([d[k] if e else 0 for d, e in zip(draws, erased)])
        return {"on": torch.tensor(erased), "i": get("i"), "j": get("j"), "h": get("h"), "w": get("w")}
    raise AssertionError(type(t))


@pytest.mark.parametrize("name", sorted(STEPS))
def test_each_batched_step_draws_from_torchvision_s_distributions(name):
    t, n = STEPS[name], 3000
    torch.manual_seed(0)
    mine = ba.batched_op(t).draw(n, SIZE, SIZE)
    theirs = as_twin(t, tv_draws(t, n, torch.zeros(3, SIZE, SIZE)))
    assert set(mine) == set(theirs)
    for key in theirs:
        a, b = mine[key], theirs[key]
        if key == "order":       # one of 24 permutations per image: compare the counts of each
            code = lambda o: (o * torch.tensor([64, 16, 4, 1])).sum(1).numpy()
            values = np.union1d(code(a), code(b))
            counts = [[(code(x) == v).sum() for v in values] for x in (a, b)]
            assert len(values) == 24 and stats.chi2_contingency(counts).pvalue > 1e-3
            continue
        if key in ("i", "j", "h", "w"):   # where a rectangle is erased: compare among the erased
            a, b = a[mine["on"]], b[theirs["on"]]
        for column in range(a.shape[1] if a.ndim == 2 else 1):
            x, y = (v[:, column] if v.ndim == 2 else v for v in (a, b))
            x, y = x[torch.isfinite(x.float())].float().numpy(), y[torch.isfinite(y.float())].float().numpy()
            if len(y) == 0:
                assert len(x) == 0, key
                continue
            assert stats.ks_2samp(x, y, method="asymp").pvalue > 1e-3, (name, key, column, x.mean(), y.mean())
            whole = lambda v: bool((v == np.round(v)).all())         # e.g. shifts rounded to whole pixels
            assert whole(x) == whole(y), (name, key, column)


@pytest.mark.parametrize("name", sorted(STEPS))
def test_each_batched_step_makes_torchvision_s_image_from_the_same_parameters(name):
    t, n = STEPS[name], 12
    torch.manual_seed(1)
    x = torch.rand(n, 3, SIZE, SIZE)                     # float in [0, 1]: torchvision's float kernels, no rounding
    pts = torch.rand(n, 68, 2) * (SIZE - 8) + 4
    draws = tv_draws(t, n, x[0])
    if isinstance(t, v2.RandomHorizontalFlip):
        draws = [{"on": True} for _ in range(n // 2)] + [{"on": False} for _ in range(n - n // 2)]
    mine, moved = ba.batched_op(t).apply(x, pts.clone(), as_twin(t, draws))
    geometric = not isinstance(t, (v2.ColorJitter, v2.RandomErasing))
    for k, d in enumerate(draws):
        if "on" in d and not d["on"]:
            ref, ref_pts = x[k], pts[k]
        elif isinstance(t, v2.RandomHorizontalFlip):
            ref, kp = t.transform(x[k], {}), t.transform(to_keypoints(pts[k], (SIZE, SIZE)), {})
            ref_pts = from_keypoints(kp)
        else:
            d = {key: v for key, v in d.items() if key != "on"}
            ref = t.transform(x[k], d)
            ref_pts = from_keypoints(t.transform(to_keypoints(pts[k], (SIZE, SIZE)), d)) if geometric else pts[k]
        # warps sample the nearest pixel: the very same source pixels, so the same values
        assert torch.allclose(mine[k], ref, atol=2e-6), (name, k, (mine[k] - ref).abs().max())
        assert torch.allclose(moved[k], ref_pts, atol=1e-4), (name, k)


def recipe_outputs(recipe: str, path: str, n: int = 240):
    torch.manual_seed(2)
    faces = (torch.rand(8, 3, 1, 1) * 200 + torch.rand(8, 3, SIZE, SIZE) * 55).byte()   # 8 flat-ish faces
    x = faces[torch.arange(n) % 8]
    t = train_transform(recipe, SIZE)
    if path == "image":
        return torch.stack([t(img) for img in x])
    return ba.BatchAugment(t)(x)[0]


@pytest.mark.parametrize("recipe", ["paper_e", "dan", "dan_laptop"])
def test_per_image_and_batched_recipes_give_the_same_distribution_of_faces(recipe):
    """The wiring as well as the steps: order of steps, normalising before erasing, the apply-probabilities.
    Summaries of each augmented face (brightness, spread, share of erased or empty pixels) compared."""
    a, b = recipe_outputs(recipe, "image"), recipe_outputs(recipe, "batch")
    assert a.shape == b.shape == (240, 3, SIZE, SIZE) and a.dtype == b.dtype == torch.float32
    summaries = {"mean": lambda v: v.mean((1, 2, 3)), "std": lambda v: v.std((1, 2, 3)),
                 "flat": lambda v: (v.std(1) < 1e-6).float().mean((1, 2)),
                 "left-right": lambda v: v[..., : SIZE // 2].mean((1, 2, 3)) - v[..., SIZE // 2:].mean((1, 2, 3))}
    for name, f in summaries.items():
        assert stats.ks_2samp(f(a).numpy(), f(b).numpy()).pvalue > 1e-3, (recipe, name)


def test_batch_draws_do_not_depend_on_chunking_and_clips_get_one_draw(monkeypatch):
    aug = ba.BatchAugment(train_transform("paper_e", SIZE))
    x = torch.randint(0, 256, (7, 3, SIZE, SIZE), dtype=torch.uint8)
    pts = torch.rand(7, 68, 2) * 40 + 4
    torch.manual_seed(3)
    whole = aug(x, pts)
    monkeypatch.setattr(ba.BatchAugment, "_chunk", staticmethod(lambda frames: 3))
    torch.manual_seed(3)
    chunked = aug(x, pts)
    assert torch.allclose(whole[0], chunked[0], atol=1e-6) and torch.allclose(whole[1], chunked[1])
    clips = x[:2, None].expand(2, 5, 3, SIZE, SIZE)       # every frame of a clip the same face
    out, moved = aug(clips, pts[:2, None].expand(2, 5, 68, 2))
    assert out.shape == (2, 5, 3, SIZE, SIZE) and moved.shape == (2, 5, 68, 2)
    assert all(torch.allclose(out[c, 0], out[c, k], atol=1e-6) for c in range(2) for k in range(5))
    assert not torch.allclose(out[0, 0], out[1, 0])


def test_landmarks_follow_their_faces_through_a_batched_recipe():
    """Bright dots drawn at five landmarks stay under them after flips and affine warps; after a flip
    point 36 (image-left eye corner) sits on the dot that was point 45's."""
    compose = v2.Compose([RandomHorizontalFlipFace(),
                          v2.RandomApply([v2.RandomAffine(degrees=20, translate=(0.1, 0.1), scale=(0.85, 1.0))], p=1.0),
                          v2.ToDtype(torch.float32, scale=True)])
    n, idx = 32, [30, 36, 45, 48, 54]
    pts = torch.rand(n, 68, 2) * 10 + 19                   # near the middle, so warps keep them inside
    pts[:, 36, 0], pts[:, 45, 0] = 12.0, 35.0
    x = torch.zeros(n, 3, SIZE, SIZE, dtype=torch.uint8)
    for k in range(n):
        for colour, i in enumerate(idx):
            cx, cy = pts[k, i].round().long().tolist()
            x[k, colour % 3, cy - 1:cy + 2, cx - 1:cx + 2] = 255 if i != 45 else 128
    torch.manual_seed(4)
    out, moved = ba.BatchAugment(compose)(x, pts)
    out = out * torch.tensor(ba.IMAGENET_STD).view(1, 3, 1, 1) + torch.tensor(ba.IMAGENET_MEAN).view(1, 3, 1, 1)
    flipped = moved[:, 36, 0] > moved[:, 45, 0]           # 36 must stay image-left: never after a flip
    assert not flipped.any()
    for k in range(n):
        for i in idx:
            cx, cy = moved[k, i].round().long().tolist()
            assert out[k, :, cy, cx].max() > 0.4, (k, i)


def test_every_recipe_but_paper_a_has_a_batched_twin_and_paper_a_says_what_to_do():
    for recipe in RECIPES:
        if recipe == "paper_a":
            with pytest.raises(ValueError, match="augment_on='image'"):
                ba.BatchAugment(train_transform(recipe, SIZE))
            continue
        out, _ = ba.BatchAugment(train_transform(recipe, SIZE))(torch.zeros(2, 3, SIZE, SIZE, dtype=torch.uint8))
        assert out.shape == (2, 3, SIZE, SIZE) and torch.isfinite(out).all(), recipe
    with pytest.raises(ValueError, match="augment_on='image'"):
        TrainConfig(augment="paper_a", augment_on="batch")
    with pytest.raises(ValueError, match="augment_on"):
        TrainConfig(augment_on="gpu")
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        ba.BatchAugment(train_transform("dan_laptop", SIZE))(torch.zeros(3, SIZE, SIZE))


def test_training_with_batch_augmentation_runs_and_repeats(tmp_path, tiny_synthetic, monkeypatch):
    cfg = lambda name: TrainConfig(n_frames=600, seed=3, image_size=SIZE, batch_size=16, epochs=1, max_batches=3,
                                   progress=False, augment_on="batch", out_dir=str(tmp_path / name))
    data = train.load_expr_data(cfg("a"))
    loaded, augment = train.batch_augmentation(cfg("a"), data, torch.device("cpu"))
    assert augment is not None and loaded.train.transform is None and data.train.transform is not None
    assert loaded.train[0][0].dtype == torch.uint8
    assert augment.reuse_output and augment.channels_last
    a, b = train.fit(cfg("a"), data), train.fit(cfg("b"), data)
    assert a.history["train_loss"].tolist() == b.history["train_loss"].tolist()
    assert np.isfinite(a.history["train_loss"]).all()
    # each step writes its batch into the last one's memory: the same run as with a new batch every step
    fresh = lambda dataset, reuse_output, compile: on_device(dataset, False, compile)
    on_device = train.data.transform_on_device
    monkeypatch.setattr(train.data, "transform_on_device", fresh)
    assert not train.batch_augmentation(cfg("c"), data, torch.device("cpu"))[1].reuse_output
    c = train.fit(cfg("c"), data)
    assert c.history["train_loss"].tolist() == a.history["train_loss"].tolist()
    assert all(torch.equal(p, q) for p, q in zip(a.model.state_dict().values(), c.model.state_dict().values()))
    auto = TrainConfig(n_frames=600, image_size=SIZE)
    assert auto.augment_on == "auto" and train.batch_augmentation(auto, data, torch.device("cpu"))[1] is None


def test_a_flip_and_affine_folded_into_one_warp_match_the_steps_one_after_another():
    """Geometry folds paper E's flip and RandomApply(affine) into one matrix per face: the same pixels and
    landmarks as flipping, then warping, with the same draws; and uint8 faces (moved by a gather) come out
    as their float copies do."""
    steps = [RandomHorizontalFlipFace(), v2.RandomApply([v2.RandomAffine(20, (0.2, 0.2), (0.8, 1.0))], p=0.7)]
    ops = [ba.batched_op(t) for t in steps]
    (folded,) = ba.fold_geometry(ops)
    assert isinstance(folded, ba.Geometry)
    torch.manual_seed(5)
    x = torch.randint(0, 256, (16, 3, SIZE, SIZE), dtype=torch.uint8)
    pts = torch.rand(16, 68, 2) * 40 + 4
    draws = folded.draw(16, SIZE, SIZE)
    one, one_pts = folded.apply(x.float(), pts, draws)
    step, step_pts = x.float(), pts
    for op, d in zip(ops, draws["steps"]):
        step, step_pts = op.apply(step, step_pts, d)
    assert torch.equal(one, step) and torch.allclose(one_pts, step_pts, atol=1e-4)
    as_uint8, _ = folded.apply(x, pts, draws)
    assert as_uint8.dtype == torch.uint8 and torch.equal(as_uint8.float(), one)
    # uint8 and float faces make the same batch; colour jitter hands uint8 faces back as uint8, rounded once
    half_level = 0.5 / 255 / min(ba.IMAGENET_STD) + 1e-5
    for recipe, atol in (("dan_laptop", 1e-5), ("paper_e", half_level)):
        compose = train_transform(recipe, SIZE)
        torch.manual_seed(6)
        from_uint8 = ba.BatchAugment(compose)(x, pts)
        torch.manual_seed(6)
        from_float = ba.BatchAugment(compose)(x.float() / 255, pts)
        assert torch.allclose(from_uint8[0], from_float[0], atol=atol) and torch.equal(from_uint8[1], from_float[1])


def test_the_loop_moves_lsd_landmarks_in_their_own_coordinates_and_trains_clips(tmp_path, tiny_synthetic):
    from fer_kit.losses import normalize_landmarks

    aug = ba.BatchAugment(train_transform("paper_e", SIZE))
    x = torch.randint(0, 256, (6, 3, SIZE, SIZE), dtype=torch.uint8)
    pts = torch.rand(6, 68, 2) * 40 + 4
    torch.manual_seed(7)
    out, y = augment_batch(aug, x, {"expr": torch.zeros(6), "landmarks": normalize_landmarks(pts, SIZE)})
    torch.manual_seed(7)
    ref, ref_pts = aug(x, pts)
    assert torch.equal(out, ref) and torch.allclose(y["landmarks"], normalize_landmarks(ref_pts, SIZE), atol=1e-5)
    assert out.is_contiguous(memory_format=torch.channels_last)
    cfg = TrainConfig(model="regnet_transformer", preset="laptop_b", n_frames=600, seed=3, image_size=32, clip_length=4,
                      batch_size=2, epochs=1, max_batches=3, progress=False, augment_on="batch",
                      out_dir=str(tmp_path / "c"))
    data = train.load_expr_data(cfg)
    loaded, augment = train.batch_augmentation(cfg, data, torch.device("cpu"))
    assert augment is not None and loaded.train.frames.transform is None and loaded.train[0][0].shape == (4, 3, 32, 32)
    assert np.isfinite(train.fit(cfg, data).history["train_loss"]).all()


def test_a_reused_output_is_the_fresh_batch_written_in_place_channels_last():
    compose = train_transform("dan_laptop", SIZE)
    x = torch.randint(0, 256, (10, 3, SIZE, SIZE), dtype=torch.uint8)
    kept, fresh = ba.BatchAugment(compose, channels_last=True, reuse_output=True), ba.BatchAugment(compose)
    outputs = []
    for n in (10, 10, 7):                                   # a shorter last batch takes the first rows
        torch.manual_seed(n)
        out, _ = kept(x[:n])
        torch.manual_seed(n)
        ref, _ = fresh(x[:n])
        assert torch.equal(out, ref) and out.is_contiguous(memory_format=torch.channels_last)
        outputs.append(out)
    assert outputs[0].data_ptr() == outputs[1].data_ptr() == outputs[2].data_ptr()
    assert fresh._kept is None
    # channels-last uint8 input (what a loader may hand over) makes the same batch
    torch.manual_seed(1)
    a, _ = fresh(x)
    torch.manual_seed(1)
    b, _ = fresh(x.contiguous(memory_format=torch.channels_last))
    assert torch.equal(a, b)
    # [0, 1] float faces are normalised into a channels-last batch (its rows, one channel at a time) as into a plain one
    torch.manual_seed(2)
    c, _ = kept(x.float() / 255)
    torch.manual_seed(2)
    d, _ = fresh(x.float() / 255)
    assert torch.equal(c, d) and c.is_contiguous(memory_format=torch.channels_last)


def test_hue_wrap_is_mod_6_where_the_hue_lands_and_a_group_of_one_is_jittered_alone():
    v = torch.cat([torch.linspace(-6, 12, 10001)[:-1], torch.tensor([-6.0, -1e-7, 0.0, 5.9999995, 6.0, 11.999])])
    assert torch.equal(ba._wrap6(v), torch.remainder(v, 6.0))
    # 6.0 only where -1e-7 + 6 rounds up (as in torch.remainder); a hue of 6 is the hue of 0 in _hue
    assert ((ba._wrap6(v) >= 0) & (ba._wrap6(v) <= 6)).all()
    jitter = ba.batched_op(STEPS["jitter"])
    x = torch.randint(0, 256, (1, 3, SIZE, SIZE), dtype=torch.uint8)
    torch.manual_seed(8)
    p = jitter.draw(1, SIZE, SIZE)
    out, _ = jitter.apply(x, None, p)
    hue_at = int((p["order"][0] == 3).nonzero())
    assert out.dtype == torch.uint8
    assert torch.equal(out, ba._levels(ba._jitter(x, p["order"], p["factors"], hue_at)))
    compiled = ba.BatchAugment(train_transform("paper_e", SIZE), compile=True)
    (op,) = [o for o in compiled.before if isinstance(o, ba.Jitter)]
    assert op.kernel is ba._compiled(ba._jitter) and op.kernel is not ba._jitter
