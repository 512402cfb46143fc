"""TRADES and MART against their formulas on a hand-checked case."""

import math

import pytest
import torch
import torch.nn.functional as F

from fsr_models.training.losses import classification_loss, mart_loss, trades_kl, trades_loss

NAT = [[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]]
ADV = [[0.5, 1.0, -0.5], [0.0, 0.5, 1.0]]
Y = [0, 1]


def softmax(row):
    z = [math.exp(v) for v in row]
    return [v / sum(z) for v in z]


def test_trades_loss_by_hand():
    ce = sum(-math.log(softmax(n)[y]) for n, y in zip(NAT, Y)) / 2
    kl = sum(sum(p * math.log(p / q) for p, q in zip(softmax(n), softmax(a))) for n, a in zip(NAT, ADV)) / 2
    got = trades_loss(torch.tensor(NAT), torch.tensor(ADV), torch.tensor(Y), beta=6.0)
    assert got.item() == pytest.approx(ce + 6.0 * kl, rel=1e-5)
    assert trades_kl(torch.tensor(ADV), torch.tensor(NAT)).item() == pytest.approx(2 * kl, rel=1e-5)


def test_mart_loss_by_hand():
    total = 0.0
    for n, a, y in zip(NAT, ADV, Y):
        p_adv, p_nat = softmax(a), softmax(n)
        wrong = max((c for c in range(3) if c != y), key=lambda c: p_adv[c])  # y' of the adversarial prediction
        bce = -math.log(p_adv[y]) - math.log(1.0001 - p_adv[wrong] + 1e-12)
        kl = sum(q * (math.log(q) - math.log(p + 1e-12)) for p, q in zip(p_adv, p_nat))
        total += bce + 6.0 * kl * (1.0000001 - p_nat[y])
    got = mart_loss(torch.tensor(NAT), torch.tensor(ADV), torch.tensor(Y), beta=6.0)
    assert got.item() == pytest.approx(total / 2, rel=1e-5)


def test_at_is_cross_entropy_on_the_adversarial_logits_and_unknown_methods_fail():
    assert classification_loss("at", torch.tensor(ADV), torch.tensor(Y)).item() == pytest.approx(
        F.cross_entropy(torch.tensor(ADV), torch.tensor(Y)).item()
    )
    with pytest.raises(ValueError, match="unknown training method"):
        classification_loss("fgsm", torch.tensor(ADV), torch.tensor(Y))
