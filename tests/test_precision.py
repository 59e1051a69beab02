"""The precision policy: what auto picks on which hardware, and that runs record and honour it."""
import json

import pytest
import torch
from torch import nn

from fer_kit import ensemble, train
from fer_kit.train import precision
from fer_kit.config import TrainConfig
from fer_kit.losses import CrossEntropy
from fer_kit.models.baseline import ClassifierOutput
from fer_kit.models.ddamfn import DDAMFN


@pytest.fixture
def flags(monkeypatch):
    """Pretend the CPU has these feature flags."""
    def set_flags(*names):
        monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset(names))
    return set_flags


def test_auto_on_a_cpu_follows_its_flags_not_onednn(flags):
    flags("avx2", "avx512f")                     # Skylake / Cascade Lake: AVX-512 but bf16 only emulated
    assert precision.resolve("auto", "cpu").name == "fp32"
    flags("avx512f", "avx512_bf16")              # Cooper Lake, Zen 4
    assert precision.resolve("auto", "cpu").name == "bf16"
    flags("amx_bf16", "amx_tile")                # Sapphire Rapids
    assert precision.resolve("auto", "cpu").name == "bf16"


def test_auto_keeps_a_model_measured_slower_in_bf16_in_fp32(flags):
    flags("avx512_bf16")
    ddamfn = nn.Sequential(DDAMFN(image_size=64))              # found inside wrappers too
    chosen = precision.resolve("auto", "cpu", ddamfn)
    assert chosen.name == "fp32" and "DDAMFN" in chosen.why
    assert precision.resolve("bf16", "cpu", ddamfn).name == "bf16"   # asked for: kept


def test_auto_on_a_gpu_without_native_bf16_is_fp16_with_a_scaler(monkeypatch):
    """A T4 or V100: `is_bf16_supported()` says yes (it counts emulation), the native check says no."""
    monkeypatch.setattr(precision, "cuda_has_native_bf16", lambda: False)
    chosen = precision.resolve("auto", "cuda")
    assert chosen.name == "fp16" and "gradient scaling" in chosen.why
    monkeypatch.setattr(precision, "cuda_has_native_bf16", lambda: True)       # Ampere and newer
    assert precision.resolve("auto", "cuda").name == "bf16" and precision.resolve("auto", "cuda").scaler() is None


def test_explicit_choices_and_bad_ones():
    assert precision.resolve("fp32", "cpu").autocast() is not None
    assert precision.resolve("bf16", "cpu").scaler() is None
    with pytest.raises(ValueError, match="fp16' needs a GPU"):
        precision.resolve("fp16", "cpu")
    with pytest.raises(ValueError, match=r"unknown precision 'bf61' \(did you mean 'bf16'\?\)"):
        TrainConfig(precision="bf61")


def test_a_run_prints_and_records_its_precision(tiny_synthetic, tmp_path, capsys):
    cfg = TrainConfig(n_frames=600, seed=3, model="test_dan", image_size=32, batch_size=16, epochs=1, max_batches=2,
                      precision="fp32", progress=False, out_dir=str(tmp_path / "run"))
    train.fit(cfg)
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["precision"] == {"used": "fp32", "why": "asked for"}
    assert "precision fp32 (asked for) on cpu" in capsys.readouterr().out


def test_evaluation_and_ensembles_use_each_member_s_precision(tiny_synthetic):
    cfg = TrainConfig(n_frames=600, seed=3, model="test_dan", image_size=32, progress=False)
    data = train.load_expr_data(cfg)
    torch.manual_seed(0)
    model = train.build_model(cfg).eval()
    fp32 = train.predict(model, data.val, precision="fp32")[0]
    bf16 = train.predict(model, data.val, precision="bf16")[0]
    assert not (fp32 == bf16).all() and abs(fp32 - bf16).max() < 0.25         # bf16 rounding, same answers
    members = [ensemble.Member(p, model, cfg.replace(precision=p)) for p in ("fp32", "bf16")]
    pred = ensemble.predict_members(members, data.val, batch_size=128)
    assert (pred.logits[0] == fp32).all() and abs(pred.logits[1] - bf16).max() < 0.05


def test_a_gradient_scaler_trains_and_skips_an_overflowing_step():
    """The fp16 path (on GPUs) through the loop: scaled backward, unscaled clipping, a skipped step and a
    lowered scale on an infinite gradient instead of an error (CPU scaler, fp32 here)."""
    class Linear(nn.Linear):
        def forward(self, x):
            logits = super().forward(x.flatten(1))
            return ClassifierOutput(logits, logits)

    torch.manual_seed(0)
    model = Linear(12, 8)
    cfg = TrainConfig(n_frames=600, image_size=32, progress=False)
    opt = torch.optim.SGD(model.parameters(), 0.1)
    x, y = torch.randn(4, 3, 2, 2), torch.tensor([0, 1, 2, 3])
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 8)
    before = [p.detach().clone() for p in model.parameters()]
    train.train_one_epoch(model, CrossEntropy(), [(x, y)], opt, torch.device("cpu"), cfg, 1,
                          policy=precision.resolve("fp32"), scaler=scaler)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))   # a step was taken
    stepped = [p.detach().clone() for p in model.parameters()]
    scaler.update(new_scale=2.0 ** 127)          # scaled gradients overflow (inputs ~100), the loss is finite
    train.train_one_epoch(model, CrossEntropy(), [(x * 100, y)], opt, torch.device("cpu"), cfg, 2,
                          policy=precision.resolve("fp32"), scaler=scaler)
    assert all(torch.equal(a, b) for a, b in zip(stepped, model.parameters())) and scaler.get_scale() < 2.0 ** 127
