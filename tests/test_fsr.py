"""The FSR module and its losses against Sec. 3 of the paper (Eq. 2-5) and the ablations of Tables 5-6."""

import math

import pytest
import torch
import torch.nn.functional as F

from fsr_models import FSR, FSRLoss, FSROutput, FSRParts, highest_wrong_class


@pytest.fixture
def feature():
    torch.manual_seed(0)
    return torch.randn(3, 8, 4, 4).relu()


def test_eval_mask_is_sigmoid_of_r_over_tau_and_outputs_follow_sec3(feature):
    fsr = FSR(8, tau=0.1).eval()
    out, parts = fsr(feature, return_parts=True)
    r = fsr.separation_net(feature)
    m = torch.sigmoid(r / 0.1)
    torch.testing.assert_close(parts.mask, m)
    torch.testing.assert_close(parts.f_pos, m * feature)
    torch.testing.assert_close(parts.f_neg, (1 - m) * feature)
    f_neg = (1 - m) * feature
    torch.testing.assert_close(parts.f_neg_recal, f_neg + (1 - m) * fsr.recalibration_net(f_neg))
    torch.testing.assert_close(out, parts.f_pos + parts.f_neg_recal)
    assert torch.equal(fsr(feature), fsr(feature))


def test_train_mask_equals_the_two_class_gumbel_softmax_of_eq2(feature):
    fsr = FSR(8, tau=0.1).train()
    r = torch.randn(3, 8, 4, 4)
    torch.manual_seed(1)
    m = fsr.mask(r)
    torch.manual_seed(1)  # the same draws as u = exp(-E), E ~ Exp(1), so u ~ U(0, 1), in the paper's form
    u1 = torch.exp(-torch.empty_like(r).exponential_())
    u2 = torch.exp(-torch.empty_like(r).exponential_())
    g1, g2 = -torch.log(-torch.log(u1)), -torch.log(-torch.log(u2))
    logits = torch.stack([torch.log(torch.sigmoid(r)) + g1, torch.log(1 - torch.sigmoid(r)) + g2]) / 0.1
    torch.testing.assert_close(m, logits.softmax(dim=0)[0], rtol=1e-4, atol=1e-5)
    assert not torch.equal(fsr.mask(r), fsr.mask(r))


def test_train_mask_is_a_fair_coin_at_zero_score():
    fsr = FSR(4, tau=0.1).train()
    m = fsr.mask(torch.zeros(100_000))
    assert abs((m > 0.5).float().mean().item() - 0.5) < 0.01
    assert ((m < 0.05) | (m > 0.95)).float().mean() > 0.8  # tau = 0.1 makes it nearly binary


def test_highest_wrong_class_is_top1_when_wrong_else_top2():
    logits = torch.tensor([[3.0, 1.0, 2.0], [0.0, 5.0, 1.0], [0.0, 1.0, 9.0]])
    target = torch.tensor([0, 0, 2])
    assert highest_wrong_class(logits, target).tolist() == [2, 1, 1]


def _ce(logits: torch.Tensor, label: int) -> float:
    return -(logits[label] - math.log(sum(math.exp(v) for v in logits.tolist()))).item()


def test_losses_match_eq3_to_eq5_by_hand():
    loss_fn = FSRLoss([2], num_classes=3, lambda_sep=0.5, lambda_rec=2.0)
    with torch.no_grad():
        loss_fn.heads[0].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, -1.0]]))
        loss_fn.heads[0].bias.copy_(torch.tensor([0.0, 0.5, -0.5]))
    # One image, 2 channels, 1x2 spatial: the head sees channel means.
    f_pos = torch.tensor([[[[2.0, 0.0]], [[1.0, 1.0]]]])  # means (1, 1)
    f_neg = torch.tensor([[[[0.0, 0.0]], [[3.0, 1.0]]]])  # means (0, 2)
    f_rec = torch.tensor([[[[4.0, 2.0]], [[0.0, 0.0]]]])  # means (3, 0)
    final_logits = torch.tensor([[0.1, 0.3, 2.0]])  # y = 2 is right, so y' = top-2 = 1
    target = torch.tensor([2])
    terms = loss_fn.terms(FSROutput(final_logits, (FSRParts(f_pos, f_neg, f_rec, torch.ones(1)),)), target)

    head = lambda m: torch.tensor([m[0], m[1] + 0.5, m[0] - m[1] - 0.5])  # noqa: E731
    sep = _ce(head((1, 1)), 2) + _ce(head((0, 2)), 1)
    rec = _ce(head((3, 0)), 2)
    assert terms["sep"].item() == pytest.approx(sep, rel=1e-6)
    assert terms["rec"].item() == pytest.approx(rec, rel=1e-6)
    assert terms["fsr"].item() == pytest.approx(0.5 * sep + 2.0 * rec, rel=1e-6)


def test_losses_average_over_fsr_positions(feature):
    torch.manual_seed(0)
    loss_fn = FSRLoss([8, 8], num_classes=5)
    parts = FSRParts(feature, feature * 0.5, feature * 2, feature)
    logits, target = torch.randn(3, 5), torch.tensor([0, 1, 2])
    both = loss_fn.terms(FSROutput(logits, (parts, parts)), target)
    first = FSRLoss([8], num_classes=5)
    first.heads[0].load_state_dict(loss_fn.heads[0].state_dict())
    second = FSRLoss([8], num_classes=5)
    second.heads[0].load_state_dict(loss_fn.heads[1].state_dict())
    one, two = (f.terms(FSROutput(logits, (parts,)), target)["fsr"] for f in (first, second))
    torch.testing.assert_close(both["fsr"], (one + two) / 2)
    with pytest.raises(ValueError, match="heads"):
        first(FSROutput(logits, (parts, parts)), target)


def test_without_separation_recalibrates_the_whole_feature(feature):
    fsr = FSR(8, separation=False).eval()
    out, parts = fsr(feature, return_parts=True)
    assert fsr.separation_net is None and parts.f_pos is None
    assert torch.equal(parts.mask, torch.zeros_like(feature))
    torch.testing.assert_close(out, feature + fsr.recalibration_net(feature))
    terms = FSRLoss([8], 4).terms(FSROutput(torch.randn(3, 4), (parts,)), torch.tensor([0, 1, 2]))
    assert terms["sep"].item() == 0 and terms["rec"].item() > 0


def test_without_recalibration_passes_on_the_robust_feature(feature):
    fsr = FSR(8, recalibration=False).eval()
    out, parts = fsr(feature, return_parts=True)
    assert fsr.recalibration_net is None and parts.f_neg_recal is None
    torch.testing.assert_close(out, parts.f_pos)
    terms = FSRLoss([8], 4).terms(FSROutput(torch.randn(3, 4), (parts,)), torch.tensor([0, 1, 2]))
    assert terms["rec"].item() == 0 and terms["sep"].item() > 0
    full = sum(p.numel() for p in FSR(8).parameters())
    assert full - sum(p.numel() for p in fsr.parameters()) == full // 2  # R is half of S + R


@pytest.mark.parametrize("output", ["f_pos", "f_neg", "f_neg_recal"])
def test_output_switch_passes_on_the_chosen_feature(feature, output):
    fsr = FSR(8).eval()
    _, parts = fsr(feature, return_parts=True)
    fsr.output = output
    torch.testing.assert_close(fsr(feature), getattr(parts, output))


def test_bad_fsr_settings_are_value_errors():
    with pytest.raises(ValueError, match="one of"):
        FSR(8, output="f_plus")
    with pytest.raises(ValueError, match="without"):
        FSR(8, separation=False, output="f_pos")
    with pytest.raises(ValueError, match="identity"):
        FSR(8, separation=False, recalibration=False)
    with pytest.raises(ValueError, match="tau"):
        FSR(8, tau=0)
    with pytest.raises(ValueError, match="at least one"):
        FSRLoss([], 10)


def test_cross_entropy_of_highest_wrong_class_uses_final_logits_not_aux(feature):
    # y' comes from the network's logits; the aux head's own prediction must not change it.
    loss_fn = FSRLoss([8], num_classes=3)
    parts = FSRParts(feature, feature, feature, feature)
    target = torch.tensor([0, 0, 0])
    logits = torch.tensor([[5.0, 4.0, 0.0]] * 3)  # y' = 1 for every image
    terms = loss_fn.terms(FSROutput(logits, (parts,)), target)
    aux = loss_fn.head_logits(0, feature)
    expected = F.cross_entropy(aux, target) + F.cross_entropy(aux, torch.tensor([1, 1, 1]))
    torch.testing.assert_close(terms["sep"], expected)
