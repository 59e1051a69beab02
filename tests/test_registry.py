"""The registry carries what training needs of a model: a new model trains after touching its own file
and the registry only; test configurations are created by name but never listed."""
from typing import NamedTuple

import pytest
import torch
from torch import nn

from fer_kit import train
from fer_kit.config import TrainConfig
from fer_kit.losses import CrossEntropy
from fer_kit.models import config_fields, create_model, list_models, model_entry, register_model
from fer_kit.models import registry


class TinyOutput(NamedTuple):
    logits: torch.Tensor


class TinyNet(nn.Module):
    def __init__(self, num_classes: int = 8, width: int = 4):
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3, stride=4)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x):
        return TinyOutput(self.fc(self.conv(x).mean(dim=(2, 3))))


@pytest.fixture
def tiny_net_registered():
    @register_model(model_cls=TinyNet, config_args=config_fields("num_classes"),
                    loss=lambda cfg, class_counts=None: CrossEntropy())
    def tiny_net(**kwargs):
        return TinyNet(**kwargs)
    yield "tiny_net"
    registry._MODELS.pop("tiny_net")


def test_a_model_registered_with_its_loss_trains_through_fit(tmp_path, tiny_net_registered, tiny_synthetic):
    cfg = TrainConfig(model=tiny_net_registered, n_frames=600, seed=3, image_size=32, batch_size=16, epochs=1,
                      max_batches=3, progress=False, out_dir=str(tmp_path / "run"), weighted_sampling=False)
    result = train.fit(cfg)
    assert isinstance(result.model, TinyNet) and result.model.fc.out_features == 8
    assert torch.isfinite(torch.tensor(result.history["train_loss"].to_numpy())).all()
    assert (tmp_path / "run" / "best.pt").exists()


def test_a_model_without_a_loss_says_how_to_register_one(tiny_net_registered):
    @register_model(model_cls=TinyNet)
    def lossless_net(**kwargs):
        return TinyNet(**kwargs)
    try:
        with pytest.raises(ValueError, match="'lossless_net' is registered without a loss"):
            train.build_criterion(TrainConfig(model="lossless_net"))
    finally:
        registry._MODELS.pop("lossless_net")


def test_test_configurations_are_created_by_name_but_not_listed():
    listed, every = set(list_models()), set(list_models(include_test=True))
    assert {"test_dan", "test_dan_landmarks", "test_resnet_classifier"} <= every - listed
    assert not any(name.startswith("test_") for name in listed)
    assert create_model("test_dan", num_classes=8).num_heads == 2
    with pytest.raises(ValueError, match="dann") as error:
        create_model("dann")
    assert "'dan'" in str(error.value) and "test_" not in str(error.value)     # offers the public names only


@pytest.mark.parametrize("name", list_models(include_test=True))
def test_every_registered_model_names_its_loss_and_config_fields(name):
    entry = model_entry(name)
    assert entry.loss is not None and entry.config_args is not None and entry.model_cls is not None
    assert entry.targets in ("task", "landmarks") and "expr" in entry.tasks
    assert hasattr(entry.loss(TrainConfig(model="dan"), [10] * 8), "from_output")


def test_the_config_asks_the_registry_which_tasks_and_clips_a_model_takes(tiny_net_registered):
    with pytest.raises(ValueError, match="task='mtl' needs a model with VA, EXPR and AU heads"):
        TrainConfig(model=tiny_net_registered, task="mtl")
    with pytest.raises(ValueError, match="clip_length=4 needs a model over time"):
        TrainConfig(model=tiny_net_registered, clip_length=4)
    assert TrainConfig(model="ddamfn", task="mtl").task == "mtl"
    assert TrainConfig(model="regnet_transformer", clip_length=4).clip_length == 4
