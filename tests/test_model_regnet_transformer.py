"""Paper B's model (RegNetY-1.6GF + attention + transformer over time) and its losses."""
import math

import pytest
import torch
import torch.nn.functional as F

import fer_kit.models.regnet_transformer as rt   # registers regnet_transformer
from fer_kit.data.synthetic import render_faces
from fer_kit.losses import CEFocalLossCode, SequenceFocalLoss
from fer_kit.models import create_model

VARIANTS = ["combine", "only_att", "only_trans"]


def n_params(m):
    return 0 if m is None else sum(p.numel() for p in m.parameters())


@pytest.fixture(autouse=True)
def _two_threads():
    old = torch.get_num_threads()
    torch.set_num_threads(min(2, old))
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return {v: create_model("regnet_transformer", variant=v).eval() for v in VARIANTS}


# --------------------------------------------------------------------------------------------- shapes

@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("size,t", [(112, 1), (112, 4), (224, 2)])
def test_clip_output_shapes(models, variant, size, t):
    m = models[variant]
    with torch.no_grad():
        out = m(torch.randn(2, t, 3, size, size))
    width = {"combine": 3, "only_att": 2, "only_trans": 2}[variant] * 888
    assert out.logits.shape == (2, t, 8)           # per-frame logits
    assert out.features.shape == (2, t, width)     # 2664 for combine, 1776 for the others
    assert torch.isfinite(out.logits).all()


def test_single_frames_are_clips_of_one(models):
    m = models["combine"]
    x = torch.randn(3, 3, 112, 112)
    with torch.no_grad():
        frames, clips = m(x), m(x[:, None])
    assert frames.logits.shape == (3, 8) and frames.features.shape == (3, 2664)
    assert torch.allclose(frames.logits, clips.logits[:, 0], atol=1e-5)


def test_attention_mixes_frames_but_backbone_alone_does_not():
    torch.manual_seed(0)
    x = torch.randn(1, 3, 3, 64, 64)
    y = x.clone()
    y[:, 0] += 1.0                                   # change frame 0 only
    for variant, mixes in [("combine", True), ("no_att_trans", False)]:
        m = create_model("regnet_transformer", variant=variant).eval()
        with torch.no_grad():
            a, b = m(x).logits, m(y).logits
        assert not torch.allclose(a[:, 0], b[:, 0])                      # frame 0 itself changes
        assert torch.allclose(a[:, 1:], b[:, 1:], atol=1e-6) != mixes    # frames 1-2 change only via time


def test_attention_matches_scaled_dot_product():
    torch.manual_seed(0)
    att = rt.MultiHeadAttention(dim=888, heads=2, dim_head=64)
    x = torch.randn(2, 5, 888)
    q, k, v = att.to_qkv(x).view(2, 5, 3, 2, 64).permute(2, 0, 3, 1, 4)
    ref = att.to_out(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(2, 5, 128))
    assert torch.allclose(att(x), ref, atol=1e-5)


def test_position_bias_starts_as_the_paper_and_can_make_attention_local():
    """position_bias (a kit diagnostic) adds one learned logit per head and frame distance: at zero it is
    paper B's attention exactly; a large bias at distance 0 makes each frame attend to itself only."""
    torch.manual_seed(0)
    paper, timed = rt.MultiHeadAttention(888, 2, 64), rt.MultiHeadAttention(888, 2, 64, position_bias=3)
    timed.load_state_dict(paper.state_dict(), strict=False)
    assert timed.rel_bias.shape == (2, 7) and sum(p.numel() for p in timed.parameters()) == 455_544 + 14
    x = torch.randn(2, 10, 888)                        # clips longer than 2 * 3 + 1: distances beyond 3 share a bias
    assert torch.allclose(timed(x), paper(x), atol=1e-6)
    with torch.no_grad():
        timed.rel_bias[:, 3] = 1e4                     # distance 0
    own = timed.to_out(timed.to_qkv(x).view(2, 10, 3, 2, 64)[:, :, 2].reshape(2, 10, 128))   # each frame's own v
    assert torch.allclose(timed(x), own, atol=1e-5)
    m = create_model("regnet_transformer", backbone="regnety_002", position_bias=4)
    assert m.att.rel_bias.shape == m.trans.layers[0][0].fn.rel_bias.shape == (2, 9)
    assert m(torch.randn(1, 12, 3, 64, 64)).logits.shape == (1, 12, 8)
    with torch.no_grad():
        m.att.rel_bias[0, 4 + 1] = 1.0                 # head 0, one frame later: half of distance 1 for one head of 2
    learned = m.position_bias_by_distance()
    assert learned["attention"] == [0.0, 0.25, 0.0, 0.0, 0.0] and learned["encoder"] == [0.0] * 5
    assert create_model("regnet_transformer", backbone="regnety_002").position_bias_by_distance() == {}
    deeper = create_model("regnet_transformer", backbone="regnety_002", position_bias=2, depth=2)
    with torch.no_grad():
        deeper.trans.layers[1][0].fn.rel_bias[:, 2] = 0.5            # distance 0 in the second layer only
    assert deeper.position_bias_by_distance() == {"attention": [0.0] * 3, "encoder layer 1": [0.0] * 3,
                                                  "encoder layer 2": [0.5, 0.0, 0.0]}
    with pytest.raises(ValueError, match="position_bias"):
        create_model("regnet_transformer", position_bias=-1)


def test_bad_inputs_and_arguments():
    m = create_model("regnet_transformer", variant="only_att")
    with pytest.raises(ValueError, match=r"\(B, T, 3, H, W\)"):
        m(torch.randn(2, 1, 112, 112))
    with pytest.raises(ValueError, match="variant"):
        create_model("regnet_transformer", variant="both")
    with pytest.raises(TypeError):
        create_model("regnet_transformer", num_head=2)


# ----------------------------------------------------------------------------------- parameter counts

def test_parameter_counts():
    trunk = 10_313_430                    # RegNetY-1.6GF without fc (timm == torchvision, notes §3.2)
    att = 888 * 3 * 128 + (128 * 888 + 888)                               # to_qkv (no bias) + to_out
    ff = (888 * 512 + 512) + (512 * 888 + 888)
    trans = 2 * 2 * 888 + att + ff                                        # two LayerNorms + attn + FF
    assert (att, trans) == (455_544, 1_369_808)                           # the notes' figures
    expected = {"combine": trunk + att + trans + 2664 * 8 + 8,
                "only_att": trunk + att + 1776 * 8 + 8,
                "only_trans": trunk + trans + 1776 * 8 + 8,
                "no_att_trans": trunk + 888 * 8 + 8}
    assert expected["combine"] == 12_160_102                              # notes §3.2, "total ≈ 12,160,102"
    for variant, total in expected.items():
        m = create_model("regnet_transformer", variant=variant)
        print(f"regnet_transformer[{variant}]: {n_params(m):,} parameters (trunk {n_params(m.backbone):,}, "
              f"attention {n_params(m.att):,}, transformer {n_params(m.trans):,}, fc {n_params(m.fc):,})")
        assert n_params(m.backbone) == trunk
        assert n_params(m) == total


def test_freeze_early_reproduces_the_code():
    m = create_model("regnet_transformer", freeze_early=True)
    frozen = sum(p.numel() for p in m.parameters() if not p.requires_grad)
    assert frozen == 34_356                                               # stem + block 1 (notes §3.2)


# -------------------------------------------------------------------------------------------- training

@pytest.mark.parametrize("variant", VARIANTS)
def test_gradients_reach_every_trainable_parameter(variant):
    torch.manual_seed(0)
    m = create_model("regnet_transformer", variant=variant).train()
    # timm zero-initialises the last BN of every residual block (pretrained weights replace this), which
    # blocks the gradient to the block's convolutions at step 0; give those BNs non-zero scales
    for mod in m.backbone.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            torch.nn.init.ones_(mod.weight)
    out = m(torch.randn(2, 3, 3, 64, 64))
    labels = torch.tensor([[0, 1, -1], [2, 3, 4]])
    SequenceFocalLoss()(out.logits, labels).backward()
    missing = [n for n, p in m.named_parameters()
               if p.requires_grad and (p.grad is None or not torch.isfinite(p.grad).all() or p.grad.abs().sum() == 0)]
    assert not missing, missing


def test_overfits_a_batch_of_32_faces(overfit):
    torch.manual_seed(0)
    faces = render_faces(32, size=64, seed=0)
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    x = (torch.from_numpy(faces["images"]).float() / 255 - mean) / std               # (32, 64, 64, 3)
    x = x.permute(0, 3, 1, 2).reshape(4, 8, 3, 64, 64)                               # 4 clips of T = 8
    y = torch.from_numpy(faces["labels"]).long().reshape(4, 8)                       # (4, 8)
    m = create_model("regnet_transformer").train()
    losses = overfit(lambda: F.cross_entropy(m(x).logits.reshape(-1, 8), y.reshape(-1)), m.parameters(), 30, 1e-3)
    print(f"overfit: {len(losses)} steps, loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    assert losses[-1] < 0.1 * losses[0], losses


# ---------------------------------------------------------------------------------------------- losses

def _hand_loss(rows, labels, s=0.1, alpha=0.9, gamma=2.0, w=0.2):
    """CEFocalLoss of the published code (notes §3.3), written out with math only."""
    focal, kl = [], []
    for z, y in zip(rows, labels):
        c = len(z)
        lse = math.log(sum(math.exp(v) for v in z))
        logp = [v - lse for v in z]
        ce = -(1 - s) * logp[y] - s / c * sum(logp)
        focal.append(alpha * ce * (1 - math.exp(logp[y])) ** gamma)
        q = [(1 - s) * (k == y) + s / c for k in range(c)]
        kl.append(sum(qk * (math.log(qk) - lp) for qk, lp in zip(q, logp)))
    return (1 - w) * sum(focal) / len(focal) + w * sum(kl) / len(kl)


def test_code_loss_matches_hand_computation():
    rows, ys = [[2.0, 0.0, -1.0], [0.5, 0.5, 1.0]], [0, 2]
    # q = onehot (1 - s) + s / C = (0.9333, 0.0333, 0.0333) for frame 0; sum_c q_c log q_c = -0.29114
    # frame 0: p = (0.8438, 0.1142, 0.0420), -log p = (0.1698, 2.1698, 3.1698)
    #          ce = -sum q log p = 0.9333*0.1698 + 0.0333*(2.1698+3.1698) = 0.33647
    #          focal = 0.9 * 0.33647 * (1 - 0.8438)^2 = 0.00739;  KL = 0.33647 - 0.29114 = 0.04533
    # frame 1: p = (0.2741, 0.2741, 0.4519), -log p = (1.2944, 1.2944, 0.7944)
    #          ce = 0.0333*(2*1.2944) + 0.9333*0.7944 = 0.82773
    #          focal = 0.9 * 0.82773 * (1 - 0.4519)^2 = 0.22382; KL = 0.82773 - 0.29114 = 0.53659
    # loss = 0.8 * (0.00739 + 0.22382)/2 + 0.2 * (0.04533 + 0.53659)/2 = 0.09248 + 0.05819 = 0.15068
    expected = _hand_loss(rows, ys)
    assert expected == pytest.approx(0.15068, abs=2e-5)
    got = CEFocalLossCode()(torch.tensor([rows]), torch.tensor([ys]))               # (1, 2, 3), (1, 2)
    assert got.item() == pytest.approx(expected, rel=1e-5)
    flat = CEFocalLossCode()(torch.tensor(rows), torch.tensor(ys))                  # (N, C), (N,)
    assert flat.item() == pytest.approx(expected, rel=1e-5)


def test_code_loss_reduces_to_cross_entropy():
    torch.manual_seed(0)
    z, y = torch.randn(3, 4, 8), torch.randint(0, 8, (3, 4))
    plain = CEFocalLossCode(label_smoothing=0.0, alpha=0.0, gamma=0.0, distillation_weight=0.0)(z, y)
    assert torch.allclose(plain, F.cross_entropy(z.reshape(-1, 8), y.reshape(-1)))


@pytest.mark.parametrize("loss_fn", [CEFocalLossCode(), SequenceFocalLoss()], ids=["code", "paper"])
def test_padding_labels_are_ignored(loss_fn):
    torch.manual_seed(0)
    z = torch.randn(2, 4, 8, requires_grad=True)
    y = torch.tensor([[1, 2, -1, -1], [3, -1, 4, 7]])
    loss = loss_fn(z, y)
    keep = y != -1
    assert torch.allclose(loss, loss_fn(z[keep], y[keep]))          # same as the valid frames alone
    loss.backward()
    assert (z.grad[~keep] == 0).all() and (z.grad[keep].abs().sum(-1) > 0).all()
    z2 = z.detach().clone()
    z2[~keep] = 100.0                                                # padded frames' logits do not matter
    assert torch.allclose(loss_fn(z2, y), loss.detach())
    allpad = loss_fn(z, torch.full((2, 4), -1))                      # nothing valid: zero, still differentiable
    assert allpad.item() == 0.0 and allpad.requires_grad


@pytest.mark.parametrize("loss_fn", [CEFocalLossCode(), SequenceFocalLoss()], ids=["code", "paper"])
def test_bad_labels_raise(loss_fn):
    z = torch.randn(2, 3, 8)
    with pytest.raises(ValueError, match=r"\[0, 8\) or -1.*\[-2, 8\]"):
        loss_fn(z, torch.tensor([[0, 8, 1], [-2, 1, -1]]))
    with pytest.raises(ValueError, match="labels"):
        loss_fn(z, torch.zeros(2, 4, dtype=torch.long))              # shape mismatch
    with pytest.raises(ValueError, match="integer"):
        loss_fn(z, torch.zeros(2, 3))                                # float labels


# ------------------------------------------------------------------------------------------ pretrained

def test_pretrained_offline_raises_clear_error(monkeypatch):
    import timm

    def offline(*args, **kwargs):
        raise OSError("Temporary failure in name resolution")

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(RuntimeError, match="offline.*regnety_016|regnety_016.*offline"):
        create_model("regnet_transformer", pretrained=True)
