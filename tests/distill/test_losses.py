from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lymphosort.distill.losses import (
    DISTILL_LOSSES,
    ATLoss,
    DKDLoss,
    KDLoss,
    PaperLoss,
    attention_map,
    make_loss,
    parse_method_args,
)
from lymphosort.errors import ConfigError


def test_kd_matches_the_formula_by_hand() -> None:
    s = torch.tensor([[2.0, 0.0], [0.5, 1.5]])
    t = torch.tensor([[1.0, -1.0], [0.0, 3.0]])
    y = torch.tensor([0, 1])
    T, alpha = 2.0, 0.7
    loss, parts = KDLoss(temperature=T, alpha=alpha)(s, t, y)
    kl = 0.0
    for i in range(2):
        ps = [math.exp(v / T) for v in s[i].tolist()]
        pt = [math.exp(v / T) for v in t[i].tolist()]
        ps = [v / sum(ps) for v in ps]
        pt = [v / sum(pt) for v in pt]
        kl += sum(a * math.log(a / b) for a, b in zip(pt, ps))
    kl = kl / 2 * T * T
    ce = -sum(math.log(math.exp(s[i, y[i]].item()) / s[i].exp().sum().item()) for i in range(2)) / 2
    assert parts["kd"].item() == pytest.approx(kl, rel=1e-5)
    assert parts["ce"].item() == pytest.approx(ce, rel=1e-5)
    assert loss.item() == pytest.approx(alpha * kl + (1 - alpha) * ce, rel=1e-5)


def test_kd_is_zero_soft_term_when_student_equals_teacher() -> None:
    z = torch.randn(5, 3)
    _, parts = KDLoss()(z, z.clone(), torch.zeros(5, dtype=torch.long))
    assert parts["kd"].abs().item() < 1e-6


def _tckd_by_hand(s: torch.Tensor, t: torch.Tensor, y: torch.Tensor, T: float) -> float:
    ps, pt = F.softmax(s / T, 1), F.softmax(t / T, 1)
    total = 0.0
    for i in range(len(y)):
        bs = [ps[i, y[i]].item(), 1 - ps[i, y[i]].item()]
        bt = [pt[i, y[i]].item(), 1 - pt[i, y[i]].item()]
        total += sum(a * math.log(a / b) for a, b in zip(bt, bs))
    return total / len(y) * T * T


def test_dkd_with_beta_zero_and_alpha_one_is_tckd() -> None:
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(6, 3, generator=g), torch.randn(6, 3, generator=g)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    loss, parts = DKDLoss(alpha=1.0, beta=0.0, temperature=3.0, ce_weight=0.0)(s, t, y)
    assert loss.item() == pytest.approx(_tckd_by_hand(s, t, y, 3.0), rel=1e-5)
    assert loss.item() == pytest.approx(parts["tckd"].item(), rel=1e-6)
    assert parts["nckd"].item() > 0  # three classes: a non-trivial non-target term exists


def test_dkd_nckd_vanishes_for_two_classes_and_when_non_target_distributions_agree() -> None:
    s, t = torch.randn(4, 2), torch.randn(4, 2)
    _, parts = DKDLoss()(s, t, torch.tensor([0, 1, 0, 1]))
    assert parts["nckd"].item() == 0.0
    # Same non-target logits up to a shift, different target logit: NCKD = 0, TCKD > 0.
    s3 = torch.tensor([[5.0, 1.0, 2.0]])
    t3 = torch.tensor([[0.0, 1.5, 2.5]])
    _, parts = DKDLoss()(s3, t3, torch.tensor([0]))
    assert parts["nckd"].abs().item() < 1e-6 and parts["tckd"].item() > 0


def test_at_is_zero_for_identical_features_and_positive_otherwise() -> None:
    f = torch.randn(3, 8, 6, 6)
    at = ATLoss(base="ce")
    assert at.at_term([f], [f.clone()]).item() == pytest.approx(0.0, abs=1e-9)
    # Different channel counts and spatial sizes are fine (maps resized to the smaller size).
    f_t = torch.randn(3, 32, 12, 12)
    assert at.at_term([f], [f_t]).item() > 0
    s_logits = torch.randn(3, 2, requires_grad=True)
    loss, parts = ATLoss(base="kd")(s_logits, torch.randn(3, 2), torch.tensor([0, 1, 0]), [f], [f])
    assert parts["at"].item() == pytest.approx(0.0, abs=1e-9) and "kd" in parts
    loss.backward()
    assert s_logits.grad is not None


def test_attention_map_is_unit_norm_and_resized() -> None:
    a = attention_map(torch.randn(2, 4, 8, 8), size=(4, 4))
    assert a.shape == (2, 16)
    assert torch.allclose(a.norm(dim=1), torch.ones(2))


def test_paper_loss_ignores_the_teacher() -> None:
    g = torch.Generator().manual_seed(1)
    s = torch.randn(4, 2, generator=g)
    y = torch.tensor([0, 1, 1, 0])
    fn = PaperLoss()
    a, _ = fn(s, torch.randn(4, 2, generator=g), y)
    b, _ = fn(s, 100 * torch.randn(4, 2, generator=g), y)
    c, _ = fn(s, None, y)
    assert a.item() == b.item() == c.item()
    # KL against one-hot targets equals cross-entropy (the one-hot entropy is 0).
    assert a.item() == pytest.approx(F.cross_entropy(s, y).item(), rel=1e-6)
    assert not PaperLoss.needs_teacher


def test_paper_mixup_mixes_images_and_labels_consistently() -> None:
    x = torch.stack([torch.full((1, 4, 4), float(i)) for i in range(6)])
    y = torch.tensor([0, 1, 0, 1, 1, 0])
    g = torch.Generator().manual_seed(0)
    xm, targets = PaperLoss(mixup_alpha=0.4).mix(x, y, 2, g)
    assert targets.shape == (6, 2) and torch.allclose(targets.sum(1), torch.ones(6))
    assert xm.shape == x.shape
    # Reproducible from the generator's seed.
    xm2, t2 = PaperLoss(mixup_alpha=0.4).mix(x, y, 2, torch.Generator().manual_seed(0))
    assert torch.equal(xm, xm2) and torch.equal(targets, t2)
    x0, t0 = PaperLoss(mixup_alpha=0.0).mix(x, y, 2, g)
    assert torch.equal(x0, x) and torch.equal(t0, F.one_hot(y, 2).float())


def test_kd_mixes_only_when_asked_and_then_exactly_as_the_paper_recipe() -> None:
    x = torch.stack([torch.full((1, 4, 4), float(i)) for i in range(6)])
    y = torch.tensor([0, 1, 0, 1, 1, 0])
    x0, y0 = KDLoss(temperature=2, alpha=0.5).mix(x, y, 2, torch.Generator().manual_seed(0))
    assert x0 is x and y0 is y  # plain KD: the batch is untouched, hard labels kept
    xm, tm = KDLoss(mixup_alpha=1.0).mix(x, y, 2, torch.Generator().manual_seed(0))
    xp, tp = PaperLoss(mixup_alpha=1.0).mix(x, y, 2, torch.Generator().manual_seed(0))
    assert torch.equal(xm, xp) and torch.equal(tm, tp)
    assert not torch.equal(xm, x) and tm.shape == (6, 2)
    # The label term then reads the mixed rows: CE against them, not against y.
    s = torch.randn(6, 2, generator=torch.Generator().manual_seed(1))
    _, parts = KDLoss(mixup_alpha=1.0)(s, s.clone(), tm)
    assert parts["ce"].item() == pytest.approx(-(tm * F.log_softmax(s, 1)).sum(1).mean().item(), rel=1e-6)
    assert parts["kd"].item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ConfigError, match="mixup_alpha"):
        KDLoss(mixup_alpha=-1)


def _mixup_weights(loss: PaperLoss, draws: int) -> np.ndarray:
    """lam of each draw where the permutation swapped a 2-image batch of images 0 and 1.
    Unswapped, the first mixed image is exactly 0; swapped, the second is lam * 1 + (1 - lam) * 0."""
    x = torch.stack([torch.zeros(1, 1, 1), torch.ones(1, 1, 1)])
    y = torch.tensor([0, 1])
    g = torch.Generator().manual_seed(3)
    lams = []
    for _ in range(draws):
        xm, _ = loss.mix(x, y, 2, g)
        if xm[0].item() != 0.0:  # swapped (lam + (1 - lam) need not round to 1 exactly)
            lams.append(xm[1].item())
    return np.asarray(lams)


# None: the default, which must be the reference scripts' Beta(1, 1) (ALPHA = 1): uniform.
@pytest.mark.parametrize("alpha,expected,other", [(None, 1.0, 0.4), (1.0, 1.0, 0.4), (0.4, 0.4, 1.0)])
def test_paper_mixup_weight_follows_beta_alpha_alpha(alpha: float | None, expected: float, other: float) -> None:
    from scipy import stats

    loss = PaperLoss() if alpha is None else PaperLoss(mixup_alpha=alpha)
    lams = _mixup_weights(loss, 1200)
    assert len(lams) > 400
    assert stats.kstest(lams, "beta", args=(expected, expected)).pvalue > 0.01
    assert stats.kstest(lams, "beta", args=(other, other)).pvalue < 1e-3


def test_registry_and_method_args() -> None:
    assert set(DISTILL_LOSSES) == {"none", "kd", "dkd", "at", "paper"}
    assert make_loss("kd", temperature=2).temperature == 2.0
    assert parse_method_args(["temperature=2", "alpha=0.5", "base=ce"]) == {"temperature": 2, "alpha": 0.5, "base": "ce"}
    with pytest.raises(ConfigError, match="unknown distillation method"):
        make_loss("fitnet")
    with pytest.raises(ConfigError, match="bad arguments"):
        make_loss("kd", tau=3)
    with pytest.raises(ConfigError):
        parse_method_args(["oops"])
    with pytest.raises(ConfigError, match="teacher"):
        KDLoss()(torch.randn(2, 2), None, torch.tensor([0, 1]))
