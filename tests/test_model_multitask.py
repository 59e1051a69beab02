"""Paper E's DAN + landmark multi-task network (fer_kit/models/multitask.py) and its loss
(fer_kit.losses.DANLandmarkLoss); figures from paper_code_notes.md §1.1 and §6."""
import math
import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fer_kit.data.synthetic import render_faces
from fer_kit.losses import (LSD_TRAIN_COUNTS, DANLandmarkLoss, class_weights_from_counts, denormalize_landmarks,
                            normalize_landmarks)
from fer_kit.models import DANLandmarks, create_model, list_models, logits_only
from fer_kit.models.multitask import SharedFC


def n_params(m):
    return sum(p.numel() for p in m.parameters())


# ----------------------------------------------------------------------------------------------------
# the model


@pytest.mark.parametrize("size,grid", [(224, 7), (112, 4)])
def test_output_shapes(size, grid):
    m = create_model("dan_landmarks").eval()          # DAN-R18 (4 heads) + ResNet-50 appearance branch
    with torch.no_grad():
        out = m(torch.randn(2, 3, size, size))
    assert out.logits.shape == (2, 6)                  # LSD's six classes
    assert out.landmarks.shape == (2, 68, 2)           # (x, y) of the 68 iBUG points
    assert out.features.shape == (2, 512, grid, grid)  # emotion trunk map, for the affinity loss
    assert out.heads.shape == (2, 4, 512)
    assert out.attention.shape == (2, 4, grid, grid)
    assert all(t.isfinite().all() for t in out)


def test_registry_and_resnet50_emotion_branch():
    assert {"dan_landmarks", "dan_landmarks_r50"} <= set(list_models()) and "test_dan_landmarks" in list_models(include_test=True)
    m = create_model("dan_landmarks_r50", num_classes=6).eval()
    assert isinstance(m, DANLandmarks) and m.features.num_features == 2048
    with torch.no_grad():
        out = m(torch.randn(2, 3, 112, 112))
    assert out.features.shape == (2, 512, 4, 4)        # 2048 -> 1x1 reduction -> 512
    assert out.heads.shape == (2, 4, 512) and out.landmarks.shape == (2, 68, 2)
    with pytest.raises(TypeError, match=r"'landmark_backbon' \(did you mean 'landmark_backbone'\?\)"):
        create_model("dan_landmarks", landmark_backbon="resnet18")


def test_parameter_counts():
    m = create_model("dan_landmarks")
    parts = {name: n_params(child) for name, child in m.named_children()}
    # published-code figures (notes §6.1): SharedFC (Linear 512->256, BN, Linear 256->128, BN) 164,992;
    # with the emotion output (Linear 128->6 + BN1d(6)) and the two landmark outputs (Linear 128->68 each) 183,322
    assert parts["shared"] == n_params(SharedFC()) == 164_992
    head_params = sum(parts[k] for k in ("shared", "emotion_fc", "emotion_bn", "landmark_x", "landmark_y"))
    assert head_params == 183_322
    # appearance branch: notes §6.1 give 24,558,144 for the code's VGGFace2 ResNet-50 + AvgPool2d(7) +
    # Conv1x1 2048->512 (+bias) + BN. The kit's timm ResNet-50 trunk (no fc) + AdaptiveAvgPool2d(1) + the same
    # projection matches it exactly: the VGGFace2 network is a torchvision ResNet-50 (its 8631-way fc is not
    # part of the branch), the pools have no parameters, and the projection's ReLU neither.
    assert parts["appearance"] == 23_508_032
    assert parts["appearance_proj"] == 2048 * 512 + 512 + 2 * 512 == 1_050_112
    assert parts["appearance"] + parts["appearance_proj"] == 24_558_144
    # emotion branch: DAN's ResNet-18 trunk (11,176,512, notes §1.1) and 4 heads of 2,135,904; no reduction
    assert parts["features"] == 11_176_512 and parts["reduce"] == 0
    assert parts["heads"] == 4 * 2_135_904
    assert "fc" not in parts and "bn" not in parts       # DAN's own classifier is dropped, as in the code's MTL path
    # the kit's landmark path has its own BatchNorm (2 x (256 + 128) affine parameters); the code's shared_bn does not
    assert parts["shared_landmarks"] == 164_992 and n_params(m.shared_landmarks[1]) + n_params(m.shared_landmarks[3]) == 768
    assert n_params(m) == 11_176_512 + 4 * 2_135_904 + 24_558_144 + 183_322 + 768 == 44_462_362
    assert n_params(create_model("dan_landmarks", shared_bn=True)) == 44_461_594
    # paper E's configuration: DAN-R50 emotion branch = 34,677,696 "active branch params" of notes §6.1
    # (trunk 23,508,032 + 1x1 reduction 2048->1024->512 2,626,048 + 4 heads)
    r50 = create_model("dan_landmarks_r50")
    emotion = sum(n_params(getattr(r50, k)) for k in ("features", "reduce", "heads"))
    assert n_params(r50.reduce) == 2_626_048
    assert emotion == 34_677_696
    assert n_params(r50) == 34_677_696 + 24_558_144 + 183_322 + 768 == 59_419_930   # + the landmark path's own BN
    assert all(p.requires_grad for p in r50.parameters())


# timm ResNets zero-initialise the last BN gamma of every residual block (`zero_init_last`), so at init the
# block's inner layers get exactly zero gradient: conv1, bn1, conv2 of a BasicBlock (ResNet-18; bn2 is last),
# conv1, bn1, conv2, bn2, conv3 of a Bottleneck (ResNet-50; bn3 is last)
_ZERO_AT_INIT = re.compile(r"^(features|appearance)\.layer\d\.\d+\.(conv1|bn1|conv2|bn2|conv3)\.")


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    m = create_model("dan_landmarks")                   # BasicBlocks in one branch, Bottlenecks in the other
    crit = DANLandmarkLoss(LSD_TRAIN_COUNTS, image_size=64)

    def backward():
        m.zero_grad(set_to_none=True)
        crit.zero_grad(set_to_none=True)
        out = m(torch.randn(4, 3, 64, 64))
        crit(out, torch.tensor([0, 1, 2, 5]), torch.rand(4, 68, 2) * 64)["loss"].backward()

    backward()                                          # training mode, full loss (wCE + affinity + partition + MSE)
    named = dict(m.named_parameters())
    assert all(p.requires_grad for p in named.values())
    assert not [n for n, p in named.items() if p.grad is None or not p.grad.isfinite().all()]
    zero = {n for n, p in named.items() if not p.grad.any()}
    expected = {n for n in named if _ZERO_AT_INIT.match(n)
                and not (n.startswith("features.") and ".bn2." in n)}     # BasicBlock's bn2 is its last BN
    assert zero == expected and len(zero) == 8 * 4 + 16 * 7
    assert crit.affinity.centers.grad is not None and crit.affinity.centers.grad.any()
    # Give the zero-initialised gammas a value and let BatchNorm use its running statistics (in training mode
    # the batch mean cancels the bias of a layer feeding a BN, so its gradient is ~1e-9, i.e. 0 in meaning):
    # then every single parameter, shared FC included, gets a nonzero gradient.
    with torch.no_grad():
        for n, p in named.items():
            if n.endswith("weight") and p.ndim == 1 and not p.any():
                p.fill_(1.0)
    m.eval()
    backward()
    assert not [n for n, p in named.items() if p.grad is None or not p.grad.any()]


def test_shared_fc_is_applied_to_both_branches():
    m = create_model("test_dan_landmarks").eval()
    calls = []
    m.shared[2].register_forward_hook(lambda mod, inp, out: calls.append(out.shape))   # the shared 256->128 Linear
    x, x2 = torch.randn(2, 3, 64, 64), torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        both = m(x, x2)
        one = m(x)
        other = m(x2)
    assert calls == [(2, 128)] * 6                      # once per branch per forward, same weights (own BN each)
    # the emotion output depends only on x, the landmarks only on the second view
    assert torch.allclose(both.logits, one.logits) and torch.allclose(both.landmarks, other.landmarks)
    assert not torch.allclose(both.landmarks, one.landmarks)


def test_one_argument_forward_and_logits_only():
    m = create_model("test_dan_landmarks").eval()
    x = torch.randn(3, 3, 112, 112)
    with torch.no_grad():
        out = m(x)
        wrapped = logits_only(m)(x)
    assert isinstance(wrapped, torch.Tensor) and wrapped.shape == (3, 6)
    assert torch.equal(wrapped, out.logits)
    with torch.no_grad():
        assert torch.allclose(out.landmarks, m(x, x).landmarks)


def test_forward_errors():
    m = create_model("test_dan_landmarks")
    x = torch.randn(4, 3, 64, 64)
    with pytest.raises(ValueError, match="x and x_landmarks must hold the same faces; got batches of 4 and 3"):
        m(x, x[:3])
    with pytest.raises(ValueError, match=r"images shaped \(B, 3, H, W\); got \(3, 64, 64\)"):
        m(x[0])
    with pytest.raises(ValueError, match=r"x_landmarks shaped \(B, 3, H, W\); got \(4, 1, 64, 64\)"):
        m(x, x[:, :1])


def test_log_softmax_heads():
    torch.manual_seed(0)
    raw = create_model("test_dan_landmarks").eval()
    ls = create_model("test_dan_landmarks", log_softmax_heads=True).eval()
    ls.load_state_dict(raw.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        a, b = raw(x), ls(x)
    # paper E's code: raw heads (the channel attention output, >= 0); not a distribution over heads
    assert (a.heads >= 0).all() and not torch.allclose(a.heads.exp().sum(1), torch.ones(2, 512), atol=1e-3)
    # DAN's behaviour: per channel, log-probabilities across the heads
    assert torch.allclose(b.heads.exp().sum(1), torch.ones(2, 512), atol=1e-5)
    assert torch.allclose(b.heads, a.heads.log_softmax(dim=1), atol=1e-6)
    assert not torch.allclose(a.logits, b.logits)
    assert torch.equal(a.landmarks, b.landmarks)        # the appearance branch does not see the heads


def test_dan_weights_load_into_the_emotion_branch():
    # the parameter names are DAN's: a kit DAN's state dict fills the emotion branch (strict=False skips fc/bn)
    dan = create_model("dan", num_classes=8)
    m = create_model("dan_landmarks")
    result = m.load_state_dict(dan.state_dict(), strict=False)
    assert sorted(result.unexpected_keys) == ["bn.bias", "bn.num_batches_tracked", "bn.running_mean",
                                              "bn.running_var", "bn.weight", "fc.bias", "fc.weight"]
    assert not [k for k in result.missing_keys if k.startswith(("features.", "heads."))]
    assert torch.equal(m.heads[3].ca.mlp[0].weight, dan.heads[3].ca.mlp[0].weight)


def test_overfits_one_batch_of_synthetic_faces():
    faces = render_faces(96, size=112, seed=0)
    by_class = np.stack([np.flatnonzero(faces["labels"] == c)[:6] for c in range(1, 7)])   # Aff-Wild2 1..6 = LSD 0..5
    keep = by_class.T.reshape(-1)[:32]                    # classes taken in turn: all six in the batch
    assert len(keep) == 32
    x = torch.from_numpy(faces["images"][keep]).permute(0, 3, 1, 2).float().div(255)   # (32, 3, 112, 112)
    y = torch.as_tensor(faces["labels"][keep] - 1)
    lm = torch.as_tensor(faces["landmarks"][keep])       # (32, 68, 2) pixel coordinates in the 112 px image
    assert len(set(y.tolist())) == 6
    torch.manual_seed(0)
    m = create_model("test_dan_landmarks")
    # The terms paper E's text names (§2.1): weighted CE + landmark MSE, the pixel targets normalised by the
    # loss (image_size). The code's extra DAN terms (affinity, partition) are regularisers that barely move
    # in 15 steps (the affinity is normalised by the centres' spread); they are checked by hand below.
    crit = DANLandmarkLoss(LSD_TRAIN_COUNTS, image_size=112, affinity_weight=0, partition_weight=0)
    # Learning rates: the BatchNorm on the logits needs its scale to grow fast (it bounds the logits), and
    # the appearance branch + landmark regressors learn faster at 1e-2; everything else at 3e-3.
    appearance = [*m.appearance.parameters(), *m.appearance_proj.parameters(), *m.landmark_x.parameters(),
                  *m.landmark_y.parameters()]
    special = {id(p) for p in [*appearance, *m.emotion_bn.parameters()]}
    opt = torch.optim.Adam([{"params": [p for p in m.parameters() if id(p) not in special], "lr": 3e-3},
                            {"params": list(m.emotion_bn.parameters()), "lr": 1e-1},
                            {"params": appearance, "lr": 1e-2}])
    history = []
    for _ in range(15):                                  # ~1 s a step on an idle 2-core CPU: ~16 s in all
        out = m(x)
        parts = crit(out, y, lm)
        opt.zero_grad()
        parts["loss"].backward()
        opt.step()
        history.append({k: v.item() for k, v in parts.items()})
    first, last = history[0], history[-1]
    assert last["loss"] < 0.1 * first["loss"], [round(h["loss"], 3) for h in history]
    assert last["ce"] < 0.1 * first["ce"] and last["landmark"] < 0.3 * first["landmark"]
    assert first["landmark"] < 1.0                       # normalised targets: O(1), not px^2 (thousands)
    assert (out.logits.argmax(1) == y).all()


# ----------------------------------------------------------------------------------------------------
# the loss


def test_weighted_ce_by_hand():
    # counts 6, 3, 1 (N = 10): w = 1 - n/N = 0.4, 0.7, 0.9
    crit = DANLandmarkLoss(class_counts=[6, 3, 1], num_classes=3)
    assert torch.allclose(crit.class_weights, torch.tensor([0.4, 0.7, 0.9]))
    logits = torch.log(torch.tensor([[1.0, 2.0, 1.0], [1.0, 1.0, 1.0]]))    # softmax (1/4, 1/2, 1/4), (1/3, 1/3, 1/3)
    y = torch.tensor([1, 2])
    l1, l2 = 0.7 * math.log(2), 0.9 * math.log(3)                          # -w_y log p_y
    assert math.isclose(crit.weighted_ce(logits, y).item(), (l1 + l2) / 2, rel_tol=1e-6)   # kit: mean over samples
    # as_code: nn.CrossEntropyLoss(weight=w), normalised by the summed weights of the targets
    code = DANLandmarkLoss(class_counts=[6, 3, 1], num_classes=3, as_code=True)
    assert math.isclose(code.weighted_ce(logits, y).item(), (l1 + l2) / (0.7 + 0.9), rel_tol=1e-6)
    assert torch.allclose(code.weighted_ce(logits, y), F.cross_entropy(logits, y, weight=crit.class_weights))
    # one sample: the weight cancels in the code's normalisation, not in the kit's
    assert math.isclose(code.weighted_ce(logits[:1], y[:1]).item(), math.log(2), rel_tol=1e-6)
    assert math.isclose(crit.weighted_ce(logits[:1], y[:1]).item(), l1, rel_tol=1e-6)
    # no counts: plain CE; LSD counts: notes §6.2's weights
    assert torch.allclose(DANLandmarkLoss(num_classes=3).weighted_ce(logits, y), F.cross_entropy(logits, y))
    assert torch.allclose(DANLandmarkLoss(LSD_TRAIN_COUNTS).class_weights,
                          torch.tensor([0.934, 0.945, 0.961, 0.736, 0.478, 0.946]), atol=5e-4)
    assert torch.equal(class_weights_from_counts(LSD_TRAIN_COUNTS), DANLandmarkLoss(LSD_TRAIN_COUNTS).class_weights)


def test_soft_mixup_targets():
    torch.manual_seed(0)
    crit = DANLandmarkLoss(LSD_TRAIN_COUNTS)
    logits = torch.randn(5, 6) * 2
    y_a = torch.tensor([0, 1, 4, 4, 5])
    y_b = y_a[torch.tensor([3, 0, 4, 1, 2])]            # labels of the shuffled copy mixed in
    for lam in (0.0, 0.3, 0.97, 1.0):
        q = lam * F.one_hot(y_a, 6).float() + (1 - lam) * F.one_hot(y_b, 6).float()
        expected = lam * crit.weighted_ce(logits, y_a) + (1 - lam) * crit.weighted_ce(logits, y_b)
        assert torch.allclose(crit.weighted_ce(logits, q), expected, atol=1e-6), lam


def test_landmark_mse_normalises_pixel_targets():
    pred = torch.zeros(2, 68, 2)
    target = torch.tensor([83.5, 27.5]).expand(2, 68, 2)     # pixel centres in a 112 x 112 image
    # u = (2x + 1) / W - 1 = 0.5, v = (2y + 1) / H - 1 = -0.5: MSE against 0 = 0.25
    assert math.isclose(DANLandmarkLoss(image_size=112).landmark_mse(pred, target).item(), 0.25, rel_tol=1e-6)
    # (H, W) = (56, 112): u = 0.5, v = 0: MSE 0.125
    assert math.isclose(DANLandmarkLoss(image_size=(56, 112)).landmark_mse(pred, target).item(), 0.125, rel_tol=1e-6)
    # image corners are -1 and 1 whatever the size; denormalize undoes normalize
    corners = torch.tensor([[-0.5, -0.5], [111.5, 111.5], [55.5, 55.5]])
    assert torch.allclose(normalize_landmarks(corners, 112), torch.tensor([[-1.0, -1.0], [1.0, 1.0], [0.0, 0.0]]))
    assert torch.allclose(denormalize_landmarks(normalize_landmarks(target, 224), 224), target)
    # image_size None: the targets are taken as already normalised (raw pixels would give px^2)
    assert math.isclose(DANLandmarkLoss().landmark_mse(pred, target).item(), (83.5 ** 2 + 27.5 ** 2) / 2, rel_tol=1e-6)
    assert torch.allclose(DANLandmarkLoss().landmark_mse(pred + 0.5, normalize_landmarks(target, 112)),
                          torch.tensor((0.0 + 1.0) / 2))


def _fake_output(b=4, k=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return SimpleNamespace(logits=torch.randn(b, 6, generator=g), features=torch.rand(b, 512, 4, 4, generator=g),
                           heads=torch.rand(b, k, 512, generator=g), landmarks=torch.rand(b, 68, 2, generator=g) - 0.5)


def test_total_loss_combines_the_terms():
    out = _fake_output()
    y, lm = torch.tensor([0, 3, 4, 5]), torch.rand(4, 68, 2) * 112
    crit = DANLandmarkLoss(LSD_TRAIN_COUNTS, image_size=112, affinity_weight=0.5, partition_weight=2.0,
                           landmark_weight=3.0)
    parts = crit(out, y, lm)
    assert set(parts) == {"loss", "ce", "affinity", "partition", "landmark"}
    assert torch.allclose(parts["ce"], crit.weighted_ce(out.logits, y))
    assert torch.allclose(parts["affinity"], crit.affinity(out.features, y))
    assert torch.allclose(parts["partition"], crit.partition(out.heads))
    assert torch.allclose(parts["landmark"], F.mse_loss(out.landmarks, normalize_landmarks(lm, 112)))
    assert torch.allclose(parts["loss"], parts["ce"] + 0.5 * parts["affinity"] + 2.0 * parts["partition"]
                          + 3.0 * parts["landmark"])
    # soft targets: the affinity term uses each row's largest share, or the labels given
    q = 0.8 * F.one_hot(y, 6).float() + 0.2 * F.one_hot(y.flip(0), 6).float()
    assert torch.allclose(crit(out, q, lm)["affinity"], crit.affinity(out.features, y))
    assert torch.allclose(crit(out, q, lm, affinity_labels=y.flip(0))["affinity"],
                          crit.affinity(out.features, y.flip(0)))
    assert len(list(crit.parameters())) == 1            # the affinity centres: give them to the optimiser


def test_loss_errors():
    out, crit = _fake_output(), DANLandmarkLoss(LSD_TRAIN_COUNTS, image_size=112)
    y, lm = torch.tensor([0, 1, 2, 3]), torch.rand(4, 68, 2) * 112
    with pytest.raises(ValueError, match=r"targets must be shaped like the predictions \(4, 68, 2\); got \(4, 136\)"):
        crit(out, y, lm.reshape(4, 136))
    with pytest.raises(ValueError, match=r"got \(4, 5, 2\)"):
        crit(out, y, lm[:, :5])
    with pytest.raises(ValueError, match="soft targets must be non-negative rows summing to 1"):
        crit(out, F.one_hot(y, 6).float() * 0.8, lm)
    with pytest.raises(ValueError, match="soft targets must be non-negative rows summing to 1"):
        crit(out, F.one_hot(y, 6).float() * 2 - F.one_hot(y.flip(0), 6).float(), lm)
    with pytest.raises(ValueError, match=r"soft targets must be shaped like the logits \(4, 6\); got \(4, 8\)"):
        crit(out, F.one_hot(y, 8).float(), lm)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 6\); got \[-1\]"):
        crit(out, torch.tensor([0, -1, 2, 3]), lm)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 6\); got \[6, 7\]"):
        crit(out, torch.tensor([0, 6, 7, 3]), lm)
    with pytest.raises(ValueError, match="integer class indices"):
        crit(out, y.float(), lm)
    with pytest.raises(TypeError, match="has no landmarks"):
        crit(SimpleNamespace(logits=out.logits, features=out.features, heads=out.heads), y, lm)
    with pytest.raises(ValueError, match="class_counts has 5 entries but num_classes is 6"):
        DANLandmarkLoss(LSD_TRAIN_COUNTS[:5])
    with pytest.raises(ValueError, match="image size must be positive"):
        DANLandmarkLoss(image_size=0)


def test_landmark_path_keeps_its_own_batchnorm_statistics_and_starts_at_the_mean_shape():
    torch.manual_seed(0)
    m = create_model("test_dan_landmarks")
    assert m.shared_landmarks[0] is m.shared[0] and m.shared_landmarks[2] is m.shared[2]   # Linear weights shared
    m.train()
    with torch.no_grad():
        for _ in range(5):
            m(torch.randn(4, 3, 64, 64))
    # the emotion path's BN saw the head vectors, the landmark path's the appearance vectors: the code's single
    # BN would hold one average of both
    assert not torch.allclose(m.shared[1].running_mean, m.shared_landmarks[1].running_mean)
    shared = create_model("test_dan_landmarks", shared_bn=True)
    assert shared.shared_landmarks is shared.shared
    mean = torch.rand(68, 2) * 1.6 - 0.8
    m.start_landmarks_at(mean)
    with torch.no_grad():
        out = m.eval()(torch.randn(6, 3, 64, 64)).landmarks          # (6, 68, 2)
    assert (out - mean).abs().mean() < 0.1 < (mean - mean.mean()).abs().mean()
