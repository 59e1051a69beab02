import math

import pytest
import torch
import torch.nn.functional as F

from fer_kit.losses import AffinityLoss, DANLoss, FocalLoss, PartitionLoss


def test_affinity_hand_value():
    loss = AffinityLoss(num_classes=2, feat_dim=2)
    loss.centers.data = torch.tensor([[0.0, 0.0], [2.0, 2.0]])
    # var over centres per dim (unbiased, 2 centres): ((0-1)^2 + (2-1)^2) / 1 = 2 -> summed over 2 dims = 4
    x = torch.tensor([[1.0, 0.0], [2.0, 3.0], [0.0, 0.0]])
    y = torch.tensor([0, 1, 0])
    # squared distances to own centre: 1, 1, 0 -> sum 2; / sigma^2 4 / batch 3
    assert loss(x, y).item() == pytest.approx(2 / 4 / 3)
    assert loss(x[:, :, None, None], y).item() == pytest.approx(2 / 4 / 3)   # a (B, D, 1, 1) map is pooled


def test_affinity_trains_its_centres_and_rejects_bad_labels():
    loss = AffinityLoss(num_classes=3, feat_dim=4)
    loss(torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1])).backward()
    assert loss.centers.grad is not None and loss.centers.grad.abs().sum() > 0
    with pytest.raises(ValueError, match=r"\[-1\]"):
        loss(torch.randn(2, 4), torch.tensor([0, -1]))
    with pytest.raises(ValueError, match="expects features"):
        loss(torch.randn(2, 5), torch.tensor([0, 1]))


def test_partition_hand_values_paper_and_code():
    heads = torch.tensor([[[0.0, 0.0], [2.0, 4.0]]])       # B=1, k=2, C=2
    # variance across the 2 heads (unbiased): channel 0: 2, channel 1: 8
    paper = (math.log(1 + 2 / 2) + math.log(1 + 2 / 8)) / 2   # Eq. 2: mean of logs
    code = math.log(1 + 2 / 5)                                  # DAN code: log of mean variance
    assert PartitionLoss(eps=0)(heads).item() == pytest.approx(paper)
    assert PartitionLoss(eps=0, as_code=True)(heads).item() == pytest.approx(code)
    assert paper != pytest.approx(code)


def test_partition_degenerate_cases():
    one = torch.randn(3, 1, 8, requires_grad=True)
    out = PartitionLoss()(one)
    assert out.item() == 0.0 and out.requires_grad              # a tensor, so it can join a sum
    same = torch.ones(2, 4, 8)
    assert math.isfinite(PartitionLoss()(same).item()) and PartitionLoss()(same).item() > 10
    with pytest.raises(ValueError, match="heads shaped"):
        PartitionLoss()(torch.randn(2, 8))


def test_focal_gamma0_is_cross_entropy():
    logits, y = torch.randn(6, 8), torch.tensor([0, 1, 2, 3, 4, 7])
    assert FocalLoss(gamma=0)(logits, y).item() == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-6)


def test_focal_hand_value_and_alpha():
    logits, y = torch.tensor([[0.0, 0.0]]), torch.tensor([0])   # p_y = 0.5
    expected = 0.25 * math.log(2)                               # (1 - 0.5)^2 * -log 0.5
    assert FocalLoss(gamma=2)(logits, y).item() == pytest.approx(expected)
    assert FocalLoss(alpha=0.5, gamma=2)(logits, y).item() == pytest.approx(0.5 * expected)
    per_class = FocalLoss(alpha=[0.1, 0.9], gamma=2, reduction="none")
    both = per_class(torch.zeros(2, 2), torch.tensor([0, 1]))
    assert both.tolist() == pytest.approx([0.1 * expected, 0.9 * expected])


def test_focal_rejects_bad_input():
    with pytest.raises(ValueError, match="alpha has 3 weights"):
        FocalLoss(alpha=[1, 1, 1])(torch.zeros(1, 2), torch.tensor([0]))
    with pytest.raises(ValueError, match=r"\[-1\]"):
        FocalLoss()(torch.zeros(2, 8), torch.tensor([0, -1]))


def test_dan_loss_is_the_sum_of_eq3_terms():
    torch.manual_seed(0)
    crit = DANLoss(num_classes=8, feat_dim=512, affinity_weight=1.0, partition_weight=1.0)
    parts = crit(torch.randn(4, 8), torch.randn(4, 512, 2, 2), torch.randn(4, 4, 512), torch.tensor([0, 1, 2, 3]))
    assert parts["loss"].item() == pytest.approx((parts["focal"] + parts["affinity"] + parts["partition"]).item())
