import math
import pickle
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import timm
import torch.nn.functional as F

from fer_kit.data.synthetic import render_faces
from fer_kit.losses import SCANCCILoss
from fer_kit.models import create_model
from fer_kit.models import scan_cci
from fer_kit.models.scan_cci import (CODE_PATCH_ORDER, SCANCCI, SCANCCIOutput, load_vggface2_weights,
                                     mask_net_parameters, patch_bounds)


def n_params(m):
    return sum(p.numel() for p in m.parameters())


@pytest.fixture(scope="module")
def full_model():
    torch.manual_seed(0)
    return create_model("scan_cci", num_classes=8)


def test_parameter_counts(full_model):
    mask = mask_net_parameters(512)
    assert mask == 9 * 512 * 512 + 512 + 2 * 512 == 2_360_832
    m = full_model
    assert n_params(m.trunk) == 8_543_296                      # ResNet-50 stem..layer3 (paper_code_notes 4.1)
    mask_total = sum(n_params(s) for s in m.scan.local_scan) + n_params(m.scan.global_scan)
    assert mask_total == 26 * mask == 61_381_632               # the "~61M in mask nets"
    assert n_params(m) == 70_990_957                           # separate region heads (paper)
    assert n_params(create_model("scan_cci_code", num_classes=8)) == 70_197_589   # shared head (code, ~70.2M)
    assert n_params(create_model("scan_cci_code", num_classes=8).cci) == 264_461  # notes 4.3
    small = create_model("scan_cci_small", num_classes=8)
    assert sum(n_params(s) for s in small.scan.local_scan) + n_params(small.scan.global_scan) == 2 * mask
    assert n_params(small) == 14_330_989 == 70_990_957 - 24 * mask
    assert n_params(SCANCCI(8, shared_mask_net=True, shared_region_classifier=True)) == 13_537_621


@pytest.mark.parametrize("size,f2,f3", [(224, 28, 14), (112, 14, 7)])
def test_output_shapes(full_model, size, f2, f3):
    m = full_model.eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        fu, fl = m.trunk(x)
        out = m(x)
    assert fu.shape == (2, 512, f2, f2) and fl.shape == (2, 1024, f3, f3)
    assert isinstance(out, SCANCCIOutput)
    assert out.logits.shape == (2, 8) and out.attention_logits.shape == (2, 8)
    assert out.region_logits.shape == (2, 4, 8)
    mean5 = (out.attention_logits + out.region_logits.sum(1)) / 5
    assert torch.allclose(out.logits, mean5, atol=1e-6)


def test_patch_partition():
    assert patch_bounds(28, 5) == [0, 6, 12, 18, 24, 28]      # the published code's cuts at 224 px
    assert patch_bounds(14, 5) == [0, 3, 6, 9, 12, 14]        # 112 px
    assert patch_bounds(8, 5) == [0, 1, 3, 4, 6, 8]           # 64 px: even split, no empty patch
    assert patch_bounds(14, 2) == [0, 7, 14] and patch_bounds(7, 2) == [0, 4, 7]
    for size in range(5, 60):
        b = patch_bounds(size, 5)
        assert b[0] == 0 and b[-1] == size and all(y > x for x, y in zip(b, b[1:]))
    with pytest.raises(ValueError, match="larger input"):
        patch_bounds(4, 5)
    # the code's patch k (16 inner, right strip, bottom strip, corner) in the kit's row-major order
    assert sorted(CODE_PATCH_ORDER) == list(range(25))
    assert CODE_PATCH_ORDER[16:] == (4, 9, 14, 19, 20, 21, 22, 23, 24)


def test_each_patch_uses_its_own_mask_net():
    torch.manual_seed(0)
    branch = scan_cci.LocalGlobalAttentionBranch(8, num_classes=3, l2_normalize=False).eval()
    x = torch.randn(2, 8, 28, 28)
    with torch.no_grad():
        v = torch.stack([branch.local_scan[r * 5 + c](x[:, :, a:b, e:f]).mean((2, 3))
                         for r, (a, b) in enumerate(zip([0, 6, 12, 18, 24], [6, 12, 18, 24, 28]))
                         for c, (e, f) in enumerate(zip([0, 6, 12, 18, 24], [6, 12, 18, 24, 28]))], 1).amax(1)
        g = (x * branch.global_scan.mask(x)).mean((2, 3))
        assert torch.allclose(branch(x), branch.fc(torch.cat([v, g], 1)), atol=1e-6)


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    m, crit = SCANCCI(num_classes=8), SCANCCILoss()    # 25 per-patch mask nets: each must get a gradient
    crit(m(torch.randn(3, 3, 48, 48)), torch.tensor([0, 1, 2]))["loss"].backward()   # layer2 6 x 6, layer3 3 x 3
    missing = [n for n, p in m.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.isfinite().all())]
    assert not missing
    # timm zero-initialises each residual block's last BN scale, so inside the trunk some gradients are 0 at
    # init; the SCAN and CCI branches must all receive non-zero gradients (every patch wins the max somewhere)
    zero = [n for n, p in m.named_parameters() if not n.startswith("trunk.") and p.grad.abs().sum() == 0]
    assert not zero


def test_overfits_a_batch_of_synthetic_faces():
    torch.manual_seed(0)
    torch.set_num_threads(2)
    f = render_faces(16, seed=0)       # 16 faces reach the bar in 12 steps (29 s), 32 in 17 (68 s)
    x = torch.from_numpy(f["images"]).permute(0, 3, 1, 2).float().div(255).sub(0.5).div(0.5)   # Normalize(0.5, 0.5)
    x = F.interpolate(x, size=64, mode="area")
    y = torch.as_tensor(f["labels"]).long()
    m, crit = create_model("scan_cci_small", num_classes=8), SCANCCILoss()
    opt = torch.optim.Adam(m.parameters(), 1e-3)
    losses = []
    for _ in range(40):
        loss = crit(m(x), y)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if loss.item() < 0.1 * losses[0]:
            break
    assert losses[-1] < 0.1 * losses[0], losses[::4]


def _out(att, reg):
    return SimpleNamespace(attention_logits=torch.tensor(att, dtype=torch.float32),
                           region_logits=torch.tensor(reg, dtype=torch.float32))


def test_loss_by_hand():
    ln2, ln3 = math.log(2), math.log(3)
    # one sample, 3 classes, label 1, two blocks
    out = _out([[0.0, 0.0, 0.0]], [[[0.0, ln3, 0.0], [ln2, 0.0, ln2]]])
    parts = SCANCCILoss()(out, torch.tensor([1]))
    l_u = math.log(3)                          # uniform softmax
    l_1 = -math.log(3 / 5)                     # p_y = 3 / (1 + 3 + 1)
    l_2 = -math.log(1 / 5)                     # p_y = 1 / (2 + 1 + 2)
    assert parts["attention"].item() == pytest.approx(l_u, rel=1e-6)
    assert parts["regions"].item() == pytest.approx(l_1 + l_2, rel=1e-6)            # Eq. 4: a sum
    assert parts["loss"].item() == pytest.approx(0.2 * l_u + 0.8 * (l_1 + l_2), rel=1e-6)   # Eq. 5
    # two samples: every term averaged over the batch; lambda = 0.5
    out = _out([[0.0, 0.0, 0.0], [ln2, 0.0, 0.0]], [[[0.0, 0.0, 0.0]], [[0.0, 0.0, ln2]]])
    parts = SCANCCILoss(lam=0.5)(out, torch.tensor([2, 0]))
    l_u = (math.log(3) - math.log(2 / 4)) / 2
    l_l = (math.log(3) - math.log(1 / 4)) / 2
    assert parts["loss"].item() == pytest.approx(0.5 * l_u + 0.5 * l_l, rel=1e-6)
    # matches plain cross-entropy on random logits
    torch.manual_seed(0)
    att, reg, y = torch.randn(5, 8), torch.randn(5, 4, 8), torch.randint(0, 8, (5,))
    ref = 0.2 * F.cross_entropy(att, y) + 0.8 * sum(F.cross_entropy(reg[:, i], y) for i in range(4))
    assert torch.allclose(SCANCCILoss()(SCANCCIOutput(att.mean(1), att, reg), y)["loss"], ref)


def test_loss_errors():
    out = _out([[0.0, 0.0, 0.0]], [[[0.0, 0.0, 0.0]]])
    with pytest.raises(ValueError, match=r"\[-1\].*-1"):
        SCANCCILoss()(out, torch.tensor([-1]))
    with pytest.raises(ValueError, match="integer"):
        SCANCCILoss()(out, torch.tensor([1.0]))
    with pytest.raises(ValueError, match="lam"):
        SCANCCILoss(lam=1.5)
    with pytest.raises(TypeError, match="region_logits"):
        SCANCCILoss()(torch.zeros(1, 3), torch.tensor([0]))


def test_model_errors():
    m = SCANCCI(num_classes=8, shared_mask_net=True)
    with pytest.raises(ValueError, match=r"got \(3, 64, 64\)"):
        m(torch.randn(3, 64, 64))
    with pytest.raises(ValueError, match="larger input"):
        m(torch.randn(1, 3, 32, 32))                          # layer2 map 4 x 4 < 5 patches per side
    with pytest.raises(TypeError, match="shared_mask_net"):
        create_model("scan_cci", shared_masknet=True)


def test_pretrained_offline_message(monkeypatch):
    real = timm.create_model

    def offline(name, pretrained=False, **kw):
        if pretrained:
            raise OSError("Network is unreachable")
        return real(name, pretrained=False, **kw)

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(RuntimeError, match="offline.*checkpoint_path"):
        create_model("scan_cci_small", pretrained=True)


def test_vggface2_checkpoint(tmp_path):
    src = timm.create_model("resnet50", num_classes=8631)   # VGGFace2 has 8631 identities
    # the Caffe-converted file: a Python 2 pickle of numpy arrays incl. layer4 and fc, no num_batches_tracked
    state = {k: v.numpy() for k, v in src.state_dict().items() if "num_batches_tracked" not in k}
    with open(tmp_path / "resnet50_ft_weight.pkl", "wb") as fh:
        pickle.dump(state, fh, protocol=2)
    m = SCANCCI(num_classes=7, shared_mask_net=True, checkpoint_path=str(tmp_path / "resnet50_ft_weight.pkl"))
    assert torch.equal(m.trunk.layer3[5].conv3.weight, src.layer3[5].conv3.weight)
    assert torch.equal(m.trunk.bn1.running_var, src.bn1.running_var)
    # a torch state dict with DataParallel prefixes, as the code saved
    torch.save({"state_dict": {f"module.{k}": v for k, v in src.state_dict().items()}}, tmp_path / "r50.pth")
    assert load_vggface2_weights(m.trunk, tmp_path / "r50.pth") == []
    with pytest.raises(FileNotFoundError, match="nothing.pkl"):
        load_vggface2_weights(m.trunk, tmp_path / "nothing.pkl")
    torch.save({"x.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="matched"):
        load_vggface2_weights(m.trunk, tmp_path / "other.pth")
    with open(tmp_path / "evil.pkl", "wb") as fh:   # a pickle that would call a function is refused
        pickle.dump({"conv1.weight": np.zeros(1), "f": print}, fh)
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        load_vggface2_weights(m.trunk, tmp_path / "evil.pkl")


def test_parameter_groups():
    m = SCANCCI(num_classes=8, shared_mask_net=True)
    groups = m.parameter_groups()
    assert [g["lr"] for g in groups] == [1e-4, 1e-3]
    assert sum(len(g["params"]) for g in groups) == len(list(m.parameters()))


def test_branch_logits_split_paper_c_s_vote_into_its_parts():
    torch.manual_seed(0)
    net = create_model("scan_cci_small", num_classes=7).eval()
    frames = [(torch.randn(3, 48, 48), 0) for _ in range(5)]
    parts = scan_cci.branch_logits(net, frames, batch_size=2)
    assert list(parts) == ["mean of 5 (paper C)", "SCAN alone", "CCI blocks alone"]
    assert all(z.shape == (5, 7) for z in parts.values())
    with torch.no_grad():
        whole = net(torch.stack([x for x, _ in frames])).logits.numpy()
    assert np.allclose(parts["mean of 5 (paper C)"], whole, atol=1e-5)
    assert np.allclose(parts["mean of 5 (paper C)"], (parts["SCAN alone"] + 4 * parts["CCI blocks alone"]) / 5, atol=1e-5)
