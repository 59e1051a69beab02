import pytest
import torch
import torch.nn.functional as F

from fer_kit.data.synthetic import render_frames
from fer_kit.losses import DANLoss
from fer_kit.models import create_model, list_models, logits_only
from fer_kit.models import backbones


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def test_parameter_counts_match_published_figures():
    assert n_params(create_model("dan", num_classes=8)) == 19_724_248   # DAN-R18, 8 classes (19.72M)
    assert n_params(create_model("dan", num_classes=7)) == 19_723_733


@pytest.mark.parametrize("size,grid", [(112, 4), (224, 7)])
@pytest.mark.parametrize("heads", [1, 4])
def test_output_shapes(size, grid, heads):
    m = create_model("dan", num_classes=8, num_heads=heads).eval()
    with torch.no_grad():
        out = m(torch.randn(2, 3, size, size))
    assert out.logits.shape == (2, 8)
    assert out.features.shape == (2, 512, grid, grid)
    assert out.heads.shape == (2, heads, 512)
    assert out.attention.shape == (2, heads, grid, grid)
    if heads > 1:   # log-softmax across heads: per channel the heads' probabilities sum to 1
        assert torch.allclose(out.heads.exp().sum(1), torch.ones(2, 512), atol=1e-5)
    else:
        assert (out.heads > 0).any()        # raw vector, no log-softmax


def test_resnet50_variant_reduces_to_512():
    m = create_model("dan_r50", num_classes=8).eval()
    with torch.no_grad():
        out = m(torch.randn(2, 3, 112, 112))
    assert out.features.shape == (2, 512, 4, 4)


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    m, crit = create_model("dan", num_classes=8), DANLoss(8)
    out = m(torch.randn(4, 3, 64, 64))
    crit(out.logits, out.features, out.heads, torch.tensor([0, 1, 2, 3]))["loss"].backward()
    missing = [n for n, p in m.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.isfinite().all())]
    assert not missing
    assert crit.affinity.centers.grad is not None


def test_overfits_one_batch_of_synthetic_faces():
    torch.manual_seed(0)
    images, labels = render_frames(32, seed=0)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255)
    x = F.interpolate(x, size=64, mode="area")
    y = torch.as_tensor(labels)
    m = create_model("dan", num_classes=8)
    opt = torch.optim.Adam(m.parameters(), 3e-3)   # the BatchNorm on the logits needs its scale to grow
    losses = []
    for _ in range(80):
        loss = F.cross_entropy(m(x).logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if losses[-1] < 0.1 * losses[0]:            # seen here: step 35 of 80
            break
    assert losses[-1] < 0.1 * losses[0], losses[::5]


def test_clear_errors():
    m = create_model("test_dan")
    with pytest.raises(ValueError, match=r"got \(3, 112, 112\)"):
        m(torch.randn(3, 112, 112))
    with pytest.raises(ValueError, match="did you mean 'dan'"):
        create_model("dann")
    with pytest.raises(TypeError, match=r"'num_clases' \(did you mean 'num_classes'\?\)"):
        create_model("dan", num_clases=8)
    with pytest.raises(ValueError, match="num_heads"):
        create_model("dan", num_heads=0)
    assert {"dan", "dan_r50"} <= set(list_models())


def test_pretrained_offline_message(monkeypatch):
    real = backbones.timm.create_model

    def offline(name, pretrained=False, **kw):
        if pretrained:
            raise OSError("Network is unreachable")
        return real(name, pretrained=False, **kw)

    monkeypatch.setattr(backbones.timm, "create_model", offline)
    with pytest.raises(RuntimeError, match="offline.*checkpoint_path"):
        create_model("dan", pretrained=True)


def test_local_checkpoint_with_prefixes(tmp_path):
    src = backbones.timm.create_model("resnet18", num_classes=8)
    state = {f"module.{k}": v for k, v in src.state_dict().items()}
    torch.save({"state_dict": state}, tmp_path / "ms_celeb.pth")
    m = create_model("dan", checkpoint_path=str(tmp_path / "ms_celeb.pth"))
    assert torch.equal(m.features.conv1.weight, src.conv1.weight)
    with pytest.raises(FileNotFoundError, match="nothing.pth"):
        create_model("dan", checkpoint_path=str(tmp_path / "nothing.pth"))
    torch.save({"x.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="matched"):
        create_model("dan", checkpoint_path=str(tmp_path / "other.pth"))


def test_logits_only_returns_a_tensor():
    m = logits_only(create_model("test_dan")).eval()
    with torch.no_grad():
        assert m(torch.randn(2, 3, 64, 64)).shape == (2, 8)


@pytest.mark.parametrize("log_softmax_heads", [True, False])
def test_log_softmax_across_heads_is_blind_to_what_all_heads_share(log_softmax_heads):
    """DAN's fusion (log-softmax across heads, then sum) gives the same logits when every head's vector
    moves by the same amount; summing the raw vectors (log_softmax_heads=False) does not."""
    torch.manual_seed(0)
    net = create_model("test_dan", log_softmax_heads=log_softmax_heads).eval()
    x = torch.randn(4, 3, 64, 64)
    f, heads, attention = net.attend(x)
    shift = torch.randn(4, 1, heads.shape[2]) * 3.0              # the same for every head of a face
    outs = []
    for h in (heads, heads + shift):
        net.attend = lambda _x, h=h: (f, h, attention)
        with torch.no_grad():
            outs.append(net(x).logits)
    assert torch.allclose(outs[0], outs[1], atol=1e-4) == log_softmax_heads


def test_agreement_share_measures_what_the_heads_share():
    from fer_kit.models.dan import agreement_share

    torch.manual_seed(0)
    faces = torch.randn(32, 1, 16)
    assert agreement_share(faces.expand(32, 4, 16)) == pytest.approx(1.0)      # identical heads
    apart = torch.randn(32, 4, 16)
    apart = apart - apart.mean(dim=1, keepdim=True)                           # the heads' mean: 0 on every face
    assert agreement_share(apart) == pytest.approx(0.0, abs=1e-6)
    assert 0.2 < agreement_share(faces + 0.5 * torch.randn(32, 4, 16)) < 1.0
    with pytest.raises(ValueError, match=r"\(B, k, C\)"):
        agreement_share(torch.randn(8, 1, 16))


def test_under_bf16_autocast_the_heads_and_fusion_keep_the_logits_near_fp32():
    """The fusion reads a small difference of large numbers (the log-softmax across heads, then BatchNorm
    scaling the face-to-face variation up): with the heads' products and the fusion in bf16 the train-mode
    logits moved 0.12 rms (sd 1); with them in fp32 and the convolutions in bf16, 0.03."""
    torch.manual_seed(0)
    m = create_model("dan").train()
    x = torch.randn(32, 3, 112, 112)
    with torch.no_grad():
        ref = m(x).logits
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = m(x)
    assert out.features.dtype == torch.bfloat16          # the trunk did run in bf16
    assert out.logits.dtype == out.heads.dtype == out.attention.dtype == torch.float32
    assert (out.logits - ref).pow(2).mean().sqrt() < 0.06 * ref.std()
