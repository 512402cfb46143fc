"""The FSR feature analysis of the paper's Table 5: accuracy when FSR passes on each of its features, and k-NN
accuracy of adversarial features among clean ones."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fsr_models.evaluation import attacks
from fsr_models.evaluation.protocol import batched, correct, pgd_settings


def knn_accuracy(features, labels, bank, bank_labels, k, temperature=0.1, num_classes=None) -> float:
    """Weighted k-NN (Wu et al. 2018): vote of the k most cosine-similar bank features, weighted exp(cos / T)."""
    sim = F.normalize(features, dim=1) @ F.normalize(bank, dim=1).T
    top, idx = sim.topk(min(k, len(bank)), dim=1)
    votes = torch.zeros(len(features), num_classes or int(bank_labels.max()) + 1)
    votes.scatter_add_(1, bank_labels[idx], torch.exp(top / temperature))
    return (votes.argmax(1) == labels).float().mean().item()


def feature_analysis(model, x, y, bank_x, bank_y, eps, batch_size=200) -> dict:
    """Table 5: (a) accuracy when FSR passes on f+, f-, f~- or f~ (clean and PGD-20 crafted against that model);
    (b) weighted 5-NN and 20-NN accuracy of each feature of PGD-20 examples among clean features of `bank_x`."""
    check_feature_analysis(model)
    outputs = ("f_pos", "f_neg", "f_neg_recal", "f_tilde")
    s = pgd_settings(20, eps)  # the paper's PGD-20
    pgd20 = lambda xb, yb: attacks.pgd(model, xb, yb, eps, s["step_size"], s["steps"], s["random_start"])  # noqa: E731
    table = {}
    for output in outputs:
        model.set_fsr_output(output)
        table[output] = {
            "natural": batched(lambda xb, yb: correct(model, xb, yb), x, y, batch_size).float().mean().item(),
            "pgd20": batched(lambda xb, yb: correct(model, pgd20(xb, yb), yb), x, y, batch_size).float().mean().item(),
        }  # the model ends on f_tilde, the paper's

    def pooled_parts(xb, yb):  # the last FSR module's features, globally pooled: (4, batch, C)
        with torch.no_grad():
            p = model(xb, return_fsr=True).fsr_parts[-1]
        return torch.stack([f.mean(dim=(2, 3)) for f in (p.f_pos, p.f_neg, p.f_neg_recal, p.f_pos + p.f_neg_recal)])

    bank = torch.cat([pooled_parts(bank_x[i : i + batch_size], None)[3] for i in range(0, len(bank_x), batch_size)])
    adv = torch.cat(
        [pooled_parts(pgd20(x[i : i + batch_size], y[i : i + batch_size]), None) for i in range(0, len(x), batch_size)],
        dim=1,
    )
    for j, output in enumerate(outputs):
        for k in (5, 20):
            table[output][f"knn{k}"] = knn_accuracy(adv[j], y, bank, bank_y, k, num_classes=model.num_classes)
    return table


def check_feature_analysis(model) -> None:
    fsr = getattr(model, "fsr_modules", lambda: [])()
    if not fsr or any(m.separation_net is None or m.recalibration_net is None for m in fsr):
        raise ValueError("--features needs an FSR network with both Separation and Recalibration (paper Table 5)")
