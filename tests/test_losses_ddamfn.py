"""Paper D's losses (CCC, AU BCE, DDAMFN attention loss, the multi-task total) against hand-computed values,
plus hand checks of paper E's class weights and landmark normalisation (not tested elsewhere)."""
import math
import sys

import numpy as np
import pytest
import torch

from fer_kit.losses import (LSD_TRAIN_COUNTS, AttentionDiversityLoss, AUBCELoss, CCCLoss, DANLandmarkLoss,
                            DDAMFNLoss, ccc, class_weights_from_counts, denormalize_landmarks,
                            normalize_landmarks)
from fer_kit.models.ddamfn import DDAMFNOutput


# ------------------------------------------------------------------------------------------------ CCC

def test_ccc_hand_values():
    # valence: p = [1, 2, 3], t = [2, 4, 6]: means 2, 4; var_p = 2/3, var_t = 8/3, cov = 4/3, (2-4)^2 = 4
    #   CCC = (8/3) / (2/3 + 8/3 + 4) = 8/22 = 4/11
    # arousal: p = [0, 0, 1], t = [0, 1, 1]: means 1/3, 2/3; var_p = var_t = 2/9, cov = 1/9, shift^2 = 1/9
    #   CCC = (2/9) / (5/9) = 2/5
    p = torch.tensor([[1.0, 0.0], [2.0, 0.0], [3.0, 1.0]])
    t = torch.tensor([[2.0, 0.0], [4.0, 1.0], [6.0, 1.0]])
    assert ccc(p, t).tolist() == pytest.approx([4 / 11, 2 / 5], rel=1e-6)
    assert ccc(p[:, 0], t[:, 0]).ndim == 0                                     # (N,) -> a scalar
    assert ccc(p[:, 0], t[:, 0]).item() == pytest.approx(4 / 11, rel=1e-6)
    # loss = mean over dimensions of 1 - CCC = (7/11 + 3/5) / 2 = 34/55
    assert CCCLoss()(p, t).item() == pytest.approx(34 / 55, rel=1e-6)
    assert CCCLoss()(p[:, 1], t[:, 1]).item() == pytest.approx(3 / 5, rel=1e-6)


def test_ccc_matches_independent_numpy():
    rng = np.random.default_rng(0)
    for n in (2, 7, 100):
        t = rng.uniform(-1, 1, (n, 2))
        p = 0.6 * t + rng.normal(0.1, 0.3, (n, 2))
        for d in range(2):
            x, y = p[:, d], t[:, d]
            # Lin's CCC from Pearson's r and population standard deviations
            r = np.corrcoef(x, y)[0, 1]
            sx, sy = x.std(), y.std()                                          # ddof=0
            expected = 2 * r * sx * sy / (sx ** 2 + sy ** 2 + (x.mean() - y.mean()) ** 2)
            got = ccc(torch.from_numpy(p), torch.from_numpy(t))[d].item()
            assert got == pytest.approx(expected, rel=1e-6, abs=1e-9)
    # float32 inputs and perfect agreement
    t32 = torch.from_numpy(t).float()
    assert ccc(t32, t32).tolist() == pytest.approx([1.0, 1.0], abs=1e-6)
    assert CCCLoss()(t32, t32).item() == pytest.approx(0.0, abs=1e-6)


def test_ccc_degenerate_cases_are_finite_and_documented():
    t = torch.tensor([0.1, -0.4, 0.7, 0.2])
    # constant predictions vs a varying target: cov = 0 exactly -> CCC 0, loss 1, but a useful gradient
    p = torch.full((4,), 0.3, requires_grad=True)
    assert ccc(p, t).item() == 0.0
    loss = CCCLoss()(p, t)
    assert loss.item() == 1.0
    loss.backward()
    assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
    for n, v in ((7, 0.1), (10, 0.7), (3, 1 / 3)):       # p - mean(p) alone is ~1e-8 here, not 0
        p = torch.full((n, 2), v)
        assert ccc(p, torch.linspace(-1, 1, 2 * n).view(n, 2)).tolist() == [0.0, 0.0]
    # constant predictions and constant target with equal means: 0/0 without eps -> 0 (loss 1), no NaN
    p = torch.full((4,), 0.5, requires_grad=True)
    loss = CCCLoss()(p, torch.full((4,), 0.5))
    assert loss.item() == 1.0
    loss.backward()
    assert torch.isfinite(p.grad).all()
    # one sample: no variance, CCC 0, loss 1, finite zero gradient
    p = torch.tensor([[0.2, -0.1]], requires_grad=True)
    loss = CCCLoss()(p, torch.tensor([[0.5, 0.5]]))
    assert loss.item() == 1.0
    loss.backward()
    assert torch.equal(p.grad, torch.zeros_like(p))


def test_ccc_invalid_minus5_frames_are_dropped():
    p = torch.tensor([[1.0, 0.0], [2.0, 0.0], [3.0, 1.0]])
    t = torch.tensor([[2.0, 0.0], [4.0, 1.0], [6.0, 1.0]])
    # frames where either value is -5 are left out, whatever is predicted for them
    p5 = torch.cat([p, torch.tensor([[9.0, -9.0], [100.0, 3.0]])])
    t5 = torch.cat([t, torch.tensor([[-5.0, -5.0], [0.3, -5.0]])])
    assert CCCLoss()(p5, t5).item() == pytest.approx(34 / 55, rel=1e-6)
    # the explicit mask does the same, and combines with the -5 rule
    t_ok = torch.cat([t, torch.tensor([[0.3, 0.3], [0.1, 0.2]])])
    assert CCCLoss()(p5, t_ok, valid=torch.tensor([True, True, True, False, False])).item() == \
        pytest.approx(34 / 55, rel=1e-6)
    assert ccc(p5, t_ok, valid=torch.tensor([True, True, True, False, False])).tolist() == \
        pytest.approx([4 / 11, 2 / 5], rel=1e-6)
    # with invalid_value=None the -5 frames count, and the value changes
    assert CCCLoss(invalid_value=None)(p5, t5).item() != pytest.approx(34 / 55, rel=1e-3)
    # a batch with no valid frame: a zero that still joins the graph
    q = torch.randn(2, 2, requires_grad=True)
    loss = CCCLoss()(q, torch.full((2, 2), -5.0))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(q.grad, torch.zeros_like(q))


def test_ccc_clear_errors():
    with pytest.raises(ValueError, match=r"same shape.*\(3, 2\) and \(3,\)"):
        CCCLoss()(torch.zeros(3, 2), torch.zeros(3))
    with pytest.raises(ValueError, match=r"\(2, 2, 2\)"):
        ccc(torch.zeros(2, 2, 2), torch.zeros(2, 2, 2))
    with pytest.raises(ValueError, match="bool mask shaped"):
        CCCLoss()(torch.zeros(3, 2), torch.zeros(3, 2), valid=torch.tensor([1, 0, 1]))
    with pytest.raises(ValueError, match="no frames"):
        ccc(torch.zeros(2), torch.zeros(2), valid=torch.tensor([False, False]))
    with pytest.raises(ValueError, match="floating-point"):
        ccc(torch.tensor([1, 2]), torch.tensor([1, 2]))


# ------------------------------------------------------------------------------------ attention loss

def test_attention_loss_hand_values():
    h0 = torch.tensor([0.0, 0.0]).view(1, 1, 1, 2)
    h1 = torch.tensor([1.0, 3.0]).view(1, 1, 1, 2)
    h2 = torch.tensor([2.0, 0.0]).view(1, 1, 1, 2)
    loss = AttentionDiversityLoss()
    # two heads: MSE(h0, h1) = (1 + 9) / 2 = 5 -> 1 pair / 5
    assert loss([h0, h1]).item() == pytest.approx(1 / 5)
    # three heads: MSE 5 (h0,h1), 2 (h0,h2), (1 + 9)/2 = 5 (h1,h2) -> 3 pairs / 12
    assert loss([h0, h1, h2]).item() == pytest.approx(3 / 12)
    # the model's (B, k, C, H, W) tensor gives the same
    assert loss(torch.stack([h0, h1, h2], dim=1)).item() == pytest.approx(3 / 12)
    assert loss.eps == sys.float_info.epsilon


def test_attention_loss_rewards_heads_that_differ():
    # the code's formula (not the paper's wording): a gradient step moves the heads apart
    heads = torch.rand(2, 2, 4, 3, 3, requires_grad=True)
    loss = AttentionDiversityLoss()
    before = loss(heads)
    before.backward()
    with torch.no_grad():
        moved = heads - 1e-3 * heads.grad
        gap = lambda h: (h[:, 0] - h[:, 1]).pow(2).mean().item()      # noqa: E731
        assert gap(moved) > gap(heads)
        assert loss(moved).item() < before.item()
    # identical heads: huge (pairs / eps) but finite
    same = torch.ones(1, 2, 1, 1, 2)
    assert loss(same).item() == pytest.approx(1 / sys.float_info.epsilon, rel=1e-6)
    assert math.isfinite(loss(same).item())


def test_attention_loss_one_head_and_errors():
    one = torch.rand(2, 1, 4, 3, 3, requires_grad=True)
    loss = AttentionDiversityLoss()(one)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(one.grad, torch.zeros_like(one))
    assert AttentionDiversityLoss()([one[:, 0]]).item() == 0.0
    with pytest.raises(ValueError, match=r"got a tensor shaped \(2, 512\)"):
        AttentionDiversityLoss()(torch.rand(2, 512))
    with pytest.raises(ValueError, match=r"one shape.*\(2, 4, 3, 3\), \(2, 4, 3, 2\)"):
        AttentionDiversityLoss()([torch.rand(2, 4, 3, 3), torch.rand(2, 4, 3, 2)])
    with pytest.raises(ValueError, match="non-empty list"):
        AttentionDiversityLoss()([])


# ------------------------------------------------------------------------------------------- AU BCE

LOG2 = math.log(2)
SOFTPLUS_M1 = math.log(1 + math.exp(-1))      # -log(sigmoid(1)) = -log(1 - sigmoid(-1))


def test_au_bce_hand_values_and_mask():
    logits = torch.tensor([[0.0, 2.0], [-1.0, 0.0]])
    targets = torch.tensor([[1.0, -1.0], [0.0, 1.0]])
    # valid entries: (0,0) z=0 y=1 -> log 2; (1,0) z=-1 y=0 -> log(1 + e^-1); (1,1) z=0 y=1 -> log 2
    assert AUBCELoss(num_au=2)(logits, targets).item() == pytest.approx((2 * LOG2 + SOFTPLUS_M1) / 3, rel=1e-6)
    # pos_weight multiplies the positive term of its AU: 2 log 2 (AU 0) + 3 log 2 (AU 1)
    weighted = AUBCELoss(num_au=2, pos_weight=[2.0, 3.0])(logits, targets)
    assert weighted.item() == pytest.approx((5 * LOG2 + SOFTPLUS_M1) / 3, rel=1e-6)
    # the masked entry's logit does not matter
    logits2 = logits.clone()
    logits2[0, 1] = -50.0
    assert AUBCELoss(num_au=2)(logits2, targets).item() == pytest.approx((2 * LOG2 + SOFTPLUS_M1) / 3, rel=1e-6)


def test_au_bce_all_invalid_and_errors():
    z = torch.randn(3, 12, requires_grad=True)
    loss = AUBCELoss()(z, torch.full((3, 12), -1.0))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(z.grad, torch.zeros_like(z))
    with pytest.raises(ValueError, match=r"\(B, 12\); got \(3, 8\)"):
        AUBCELoss()(torch.randn(3, 8), torch.zeros(3, 8))
    with pytest.raises(ValueError, match=r"shaped like the logits \(3, 12\); got \(3, 11\)"):
        AUBCELoss()(torch.randn(3, 12), torch.zeros(3, 11))
    with pytest.raises(ValueError, match=r"\[-5.0, 2.0\]"):
        AUBCELoss()(torch.randn(2, 12), torch.tensor([[2.0] + [0.0] * 11, [-5.0] + [1.0] * 11]))
    with pytest.raises(ValueError, match="pos_weight"):
        AUBCELoss(pos_weight=[1.0, 2.0])


# -------------------------------------------------------------------------------------- DDAMFNLoss

def _fake_output(va=True, expr=True, au=True):
    """B = 4 frames; the expected terms are computed by hand in test_ddamfn_loss_hand_total."""
    va_pred = torch.tensor([[0.1, 0.0], [0.2, 0.0], [0.3, 0.5], [0.9, -0.9]])
    expr_logits = torch.stack([torch.zeros(3), torch.tensor([100.0, -100.0, 0.0]),
                               torch.tensor([1.0, 2.0, 3.0]).log(), torch.tensor([0.0, math.log(3), 0.0])])
    au_logits = torch.tensor([[0.0, 2.0], [-1.0, 0.0], [5.0, 5.0], [0.0, 0.0]])
    heads = torch.stack([torch.zeros(4, 1, 1, 2), torch.ones(4, 1, 1, 2)], dim=1)     # (B, k=2, 1, 1, 2)
    tensors = [t.clone().requires_grad_() for t in (va_pred, expr_logits, au_logits, heads)]
    va_pred, expr_logits, au_logits, heads = tensors
    return DDAMFNOutput(va_pred if va else None, expr_logits if expr else None, au_logits if au else None,
                        heads, None, None)


VA = torch.tensor([[0.2, 0.0], [0.4, 0.5], [0.6, 0.5], [-5.0, -5.0]])    # frame 3: VA unannotated
EXPR = torch.tensor([0, -1, 2, 1])                                       # frame 1: EXPR unannotated
AU = torch.tensor([[1.0, -1.0], [0.0, 1.0], [-1.0, -1.0], [1.0, 0.0]])   # frame 2: no AU annotated


def test_ddamfn_loss_hand_total():
    out = _fake_output()
    parts = DDAMFNLoss(num_au=2)(out, va=VA, expr=EXPR, au=AU)
    # VA on frames 0-2 (frame 3 is -5): valence (0.1, 0.2, 0.3) vs (0.2, 0.4, 0.6) is [1,2,3] vs [2,4,6]
    # scaled by 0.1 (CCC is scale-free) -> 4/11; arousal (0, 0, 0.5) vs (0, 0.5, 0.5) -> 2/5 as above
    va_term = ((1 - 4 / 11) + (1 - 2 / 5)) / 2
    # EXPR on frames 0, 2, 3: -log(1/3) + -log(3/6) + -log(3/5) = log 3 + log 2 + log(5/3) = log 10
    expr_term = math.log(10) / 3
    # AU: valid entries (0,0) log 2, (1,0) log(1+e^-1), (1,1) log 2, (3,0) log 2, (3,1) log 2
    au_term = (4 * LOG2 + SOFTPLUS_M1) / 5
    # attention: MSE(zeros, ones) = 1 -> 1 / (1 + eps)
    assert parts["va"].item() == pytest.approx(va_term, rel=1e-5)
    assert parts["expr"].item() == pytest.approx(expr_term, rel=1e-5)
    assert parts["au"].item() == pytest.approx(au_term, rel=1e-5)
    assert parts["attention"].item() == pytest.approx(1.0)
    assert parts["loss"].item() == pytest.approx(va_term + expr_term + au_term + 0.1, rel=1e-5)
    # weights
    w = DDAMFNLoss(ccc_weight=2, expr_weight=0.5, au_weight=3, attention_weight=0, num_au=2)(out, VA, EXPR, AU)
    assert w["loss"].item() == pytest.approx(2 * va_term + 0.5 * expr_term + 3 * au_term, rel=1e-5)


def test_ddamfn_loss_masks_are_per_task():
    """Each invalid marker removes exactly its task's entry: invalid VA still trains EXPR and AU, etc."""
    out = _fake_output()
    parts = DDAMFNLoss(num_au=2)(out, va=VA, expr=EXPR, au=AU)
    parts["loss"].backward()
    va_grad, expr_grad, au_grad = out.va.grad, out.expr.grad, out.au.grad
    assert torch.equal(va_grad[3], torch.zeros(2))            # VA -5: no VA gradient for frame 3 ...
    assert expr_grad[3].abs().sum() > 0 and au_grad[3].abs().sum() > 0    # ... but EXPR and AU still train
    assert torch.equal(expr_grad[1], torch.zeros(3))          # EXPR -1: no CE gradient for frame 1 ...
    assert va_grad[1].abs().sum() > 0 and au_grad[1].abs().sum() > 0
    assert torch.equal(au_grad[2], torch.zeros(2))            # every AU of frame 2 is -1
    assert au_grad[0, 1] == 0 and au_grad[0, 0] != 0          # only the -1 entry of frame 0 is dropped
    assert va_grad[2].abs().sum() > 0 and expr_grad[2].abs().sum() > 0


def test_ddamfn_loss_single_task_outputs():
    out = _fake_output(va=False, au=False)                   # an EXPR-only model
    parts = DDAMFNLoss()(out, expr=EXPR)
    assert parts["va"].item() == 0.0 and parts["au"].item() == 0.0
    assert set(parts) == {"loss", "va", "expr", "au", "attention"}
    assert parts["loss"].item() == pytest.approx(math.log(10) / 3 + 0.1, rel=1e-5)
    with pytest.raises(ValueError, match=r"VA labels were given but the model has no VA head"):
        DDAMFNLoss()(out, va=VA, expr=EXPR)
    with pytest.raises(ValueError, match=r"no AU head"):
        DDAMFNLoss()(out, expr=EXPR, au=AU)
    # a model that has a head whose labels are not given: that term is skipped
    parts = DDAMFNLoss(num_au=2)(_fake_output(), expr=EXPR)
    assert parts["va"].item() == 0.0 and parts["au"].item() == 0.0
    # all EXPR labels invalid: zero term, still joins the graph
    parts = DDAMFNLoss()(out, expr=torch.full((4,), -1))
    assert parts["expr"].item() == 0.0 and parts["loss"].requires_grad


def test_ddamfn_loss_with_a_real_single_task_model():
    from fer_kit.models.ddamfn import DDAMFN
    torch.manual_seed(0)
    model = DDAMFN(tasks=("VA",), num_heads=2)
    out = model(torch.rand(4, 3, 112, 112))
    parts = DDAMFNLoss()(out, va=torch.tensor([[0.1, 0.2], [-0.3, 0.4], [0.5, -0.6], [-5.0, -5.0]]))
    assert parts["expr"].item() == 0.0 and parts["au"].item() == 0.0 and parts["va"].item() > 0
    parts["loss"].backward()
    assert model.va_head.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="no EXPR head"):
        DDAMFNLoss()(out, expr=torch.tensor([0, 1, 2, 3]))


def test_ddamfn_loss_clear_errors():
    out = _fake_output()
    loss = DDAMFNLoss(num_au=2)
    with pytest.raises(ValueError, match=r"VA labels must be shaped like the predictions \(4, 2\); got \(4, 1\)"):
        loss(out, va=torch.zeros(4, 1))
    with pytest.raises(ValueError, match=r"VA labels must be in \[-1, 1\] or -5.*\[2.0\]"):
        loss(out, va=torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 0.0], [0.0, 0.0]]))
    with pytest.raises(ValueError, match=r"EXPR labels shaped \(3,\) for a batch of 4"):
        loss(out, expr=torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=r"\[7\]"):
        loss(out, expr=torch.tensor([0, 1, 7, 2]))                      # 3 classes in the fake output
    with pytest.raises(ValueError, match="integer class indices"):
        loss(out, expr=torch.tensor([0.0, 1.0, 2.0, 1.0]))
    with pytest.raises(TypeError, match="has no va, expr, au, heads"):
        loss(torch.zeros(4, 8), expr=EXPR)


# ------------------------------------------------------------------- paper E: weights and landmarks

def test_lsd_class_weights_and_weighted_ce_hand_values():
    # w_c = 1 - n_c / N
    n = sum(LSD_TRAIN_COUNTS)
    assert class_weights_from_counts(LSD_TRAIN_COUNTS).tolist() == pytest.approx([1 - c / n for c in LSD_TRAIN_COUNTS])
    assert class_weights_from_counts(LSD_TRAIN_COUNTS).tolist() == \
        pytest.approx([0.934, 0.945, 0.961, 0.736, 0.478, 0.946], abs=1e-3)
    # counts (1, 3): N = 4, w = (0.75, 0.25)
    loss = DANLandmarkLoss(class_counts=[1, 3], num_classes=2, feat_dim=4)
    logits = torch.tensor([[0.0, 0.0], [0.0, math.log(3)]])
    labels = torch.tensor([0, 1])
    # l_0 = 0.75 * -log(1/2); l_1 = 0.25 * -log(3/4)
    l0, l1 = 0.75 * LOG2, 0.25 * math.log(4 / 3)
    assert loss.weighted_ce(logits, labels).item() == pytest.approx((l0 + l1) / 2, rel=1e-6)
    # as_code (nn.CrossEntropyLoss(weight=w)): divided by the summed weights of the labels, 0.75 + 0.25
    as_code = DANLandmarkLoss(class_counts=[1, 3], num_classes=2, feat_dim=4, as_code=True)
    assert as_code.weighted_ce(logits, labels).item() == pytest.approx((l0 + l1) / 1.0, rel=1e-6)


def test_landmark_normalisation_hand_values_and_round_trip():
    # square 4x4 image: pixel centres x = 0..3 span [-0.5, 3.5] -> [-1, 1]; u = (2x + 1)/W - 1
    pts = torch.tensor([[0.0, 3.0], [-0.5, 3.5], [1.5, 1.5]])
    assert torch.allclose(normalize_landmarks(pts, 4), torch.tensor([[-0.75, 0.75], [-1.0, 1.0], [0.0, 0.0]]))
    # (H, W) = (2, 4): x = 1 -> 3/4 - 1 = -0.25, y = 0.5 -> 2/2 - 1 = 0
    assert torch.allclose(normalize_landmarks(torch.tensor([[1.0, 0.5]]), (2, 4)), torch.tensor([[-0.25, 0.0]]))
    rng = np.random.default_rng(0)
    for size in (112, (96, 128)):
        p = torch.from_numpy(rng.uniform(0, 90, (3, 68, 2)).astype(np.float32))
        assert torch.allclose(denormalize_landmarks(normalize_landmarks(p, size), size), p, atol=1e-4)
    with pytest.raises(ValueError, match="positive"):
        normalize_landmarks(pts, 0)
