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
