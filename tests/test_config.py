import pytest

from fer_kit.config import PRESETS, NotebookParams, TrainConfig


def test_preset_fills_only_unset_fields():
    cfg = TrainConfig(preset="paper")
    assert (cfg.batch_size, cfg.image_size, cfg.lr) == (1024, 224, 1e-4)   # paper A Table 2
    cfg = TrainConfig(preset="laptop", batch_size=16)
    assert cfg.batch_size == 16 and cfg.image_size == PRESETS["laptop"]["image_size"]


def test_misspelt_parameter_is_named_with_a_suggestion():
    with pytest.raises(ValueError, match=r"unknown parameter 'epoch' \(did you mean 'epochs'\?\)"):
        TrainConfig.from_params({"epoch": 8})


@pytest.mark.parametrize("bad", [dict(preset="gpu"), dict(epochs=0), dict(batch_size=1), dict(num_classes=6)])
def test_invalid_values_are_rejected(bad):
    with pytest.raises(ValueError):
        TrainConfig(**bad)


def test_notebook_params_collects_injected_names():
    ns = {"np": object(), "_hidden": 1}
    params = NotebookParams(ns)
    ns.update(epochs=2, seed=1, _3="cell output")        # the parameters cell, and IPython's own names
    assert params.config().epochs == 2
    ns["epoch"] = 8                                      # what `papermill -p epoch 8` injects
    with pytest.raises(ValueError, match="'epoch'"):
        params.config()


@pytest.mark.parametrize("preset, model, augment, mixup", [
    ("laptop", "dan", "dan_laptop", 0.0), ("paper", "dan", "paper_a", 0.0),
    ("paper_b", "regnet_transformer", "paper_b", 0.0), ("paper_c", "scan_cci", "paper_c", 0.0),
    ("paper_d", "ddamfn", "dan_affectnet", 0.0), ("paper_e", "dan_landmarks", "paper_e", 0.1),
    ("paper_e", "dan", "paper_e", 0.0), ("laptop_b", "regnet_transformer", "dan_laptop", 0.0),
    ("laptop_c", "scan_cci_small", "dan_laptop", 0.0), ("laptop_d", "ddamfn", "dan_laptop", 0.0),
    ("laptop_e", "dan_landmarks", "dan_laptop", 0.0)])
def test_each_paper_preset_trains_with_its_paper_augmentation(preset, model, augment, mixup):
    classes = 6 if model == "dan_landmarks" else 8
    cfg = TrainConfig(preset=preset, model=model, num_classes=classes)
    assert (cfg.augment, cfg.mixup_alpha) == (augment, mixup)
    assert TrainConfig(preset=preset, model=model, num_classes=classes, augment="none").augment == "none"


def test_augmentation_names_and_mixup_are_checked():
    with pytest.raises(ValueError, match="unknown augment recipe 'paper_z'"):
        TrainConfig(augment="paper_z")
    with pytest.raises(ValueError, match="needs an LSD model"):
        TrainConfig(model="dan", mixup_alpha=0.2)
    with pytest.raises(ValueError, match="mixup_alpha must be >= 0"):
        TrainConfig(model="dan_landmarks", num_classes=6, mixup_alpha=-1.0)


def test_log_softmax_heads_reaches_dan_and_is_refused_elsewhere():
    from fer_kit.config import DanConfig
    from fer_kit.train import build_model

    summed = DanConfig().ablations()["four heads summed"]
    assert summed.log_softmax_heads is False and summed.out_dir.endswith("_summed_heads")
    assert build_model(summed.replace(model="test_dan")).log_softmax_heads is False
    assert build_model(TrainConfig(model="test_dan")).log_softmax_heads is True          # DAN's own
    assert build_model(TrainConfig(model="test_dan_landmarks", num_classes=6)).log_softmax_heads is False  # paper E's code
    with pytest.raises(ValueError, match="log_softmax_heads is an option of DAN's heads"):
        TrainConfig(model="scan_cci", log_softmax_heads=False)


def test_dan_pretraining_starts_every_run_of_notebook_04_from_its_own_pretraining(tmp_path):
    """-p pretrain_epochs N: the main run and each ablation start from a pretraining run on other people's
    faces (paper A's DAN started from AffectNet weights), each pretrained as it is then trained."""
    from fer_kit.config import DanConfig

    assert DanConfig().train_config().init_from is None and DanConfig().pretrain_for(TrainConfig()) is None
    cfg = DanConfig(pretrain_epochs=2, minutes=5.0, out_dir=str(tmp_path / "dan"))
    main = cfg.train_config()
    pre = cfg.pretrain_for(main)
    assert (pre.epochs, pre.minutes, pre.steps, pre.seed, pre.style, pre.init_from) == (2, 0.0, 0, 100, "photo", None)
    assert main.init_from == f"{pre.out_dir}/best.pt" and pre.n_frames == cfg.n_frames
    for arm in cfg.ablations(steps=123).values():
        start = cfg.pretrain_for(arm)
        assert arm.init_from == f"{start.out_dir}/best.pt" and start.out_dir.startswith(arm.out_dir)
        assert (start.num_heads, start.affinity_weight, start.log_softmax_heads) == \
               (arm.num_heads, arm.affinity_weight, arm.log_softmax_heads)      # the idea off in both stages
    assert len({a.init_from for a in cfg.ablations().values()} | {main.init_from}) == 4
    with pytest.raises(ValueError, match="pretrain_style"):
        DanConfig(pretrain_epochs=1, pretrain_style="sketch")
    with pytest.raises(ValueError, match="set one"):
        DanConfig(pretrain_epochs=1, init_from="runs/x/best.pt")


def test_position_bias_reaches_paper_b_s_clip_models_and_is_refused_elsewhere():
    from fer_kit.config import ClipConfig
    from fer_kit.train import build_model

    cfg = ClipConfig(position_bias=8, backbone="regnety_002")
    assert build_model(cfg.clip_config("combine")).att.rel_bias.shape == (2, 17)
    assert build_model(ClipConfig(backbone="regnety_002").clip_config("combine")).att.rel_bias is None   # the paper's
    with pytest.raises(ValueError, match="position_bias is an option of paper B's attention"):
        TrainConfig(model="dan", position_bias=4)
    with pytest.raises(ValueError, match="number of frames"):
        ClipConfig(position_bias=-2)
