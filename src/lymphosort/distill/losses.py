"""Distillation losses behind one registry and one call signature.

Every loss is called as::

    loss, parts = fn(student_logits, teacher_logits, targets, student_feats, teacher_feats)

``targets`` are int64 class labels [N] or, after mixup, soft label rows [N, C];
``*_feats`` are lists of hooked feature maps (see `models.hooks`), empty when the loss
hooks nothing; ``parts`` holds detached scalars for logging. A loss also says what it
needs from the training loop: ``needs_teacher``, ``feature_layers`` (hook automatically)
and an optional batch transform ``mix`` (mixup for the `paper` recipe).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn.functional as F

from lymphosort.errors import ConfigError

Parts = dict[str, torch.Tensor]


def _ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against hard labels [N] or soft label rows [N, C] (torch takes both)."""
    return F.cross_entropy(logits, targets)


def kd_term(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton et al. 2015: KL(softmax(t/T) || softmax(s/T)) * T^2, batch mean.

    The T^2 keeps the gradient scale of the soft term independent of T.
    """
    t = temperature
    log_p_s = F.log_softmax(student_logits / t, dim=1)
    log_p_t = F.log_softmax(teacher_logits / t, dim=1)
    return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * (t * t)


class DistillLoss:
    """Base class: hard-label cross-entropy (the `none` method)."""

    name = "none"
    needs_teacher = False
    #: a feature loss asks the loop to hook layers (paths chosen by the loop if not given).
    uses_features = False

    def __init__(self) -> None:
        pass

    def mix(self, x: torch.Tensor, labels: torch.Tensor, num_classes: int, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch transform before the forward pass; identity unless the recipe mixes."""
        return x, labels

    def config(self) -> dict[str, Any]:
        """The hyper-parameters (plain data, for the resolved config and model card)."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def __call__(
        self,
        student_logits: torch.Tensor,
        teacher_logits: torch.Tensor | None,
        targets: torch.Tensor,
        student_feats: Sequence[torch.Tensor] = (),
        teacher_feats: Sequence[torch.Tensor] = (),
    ) -> tuple[torch.Tensor, Parts]:
        ce = _ce(student_logits, targets)
        return ce, {"ce": ce.detach()}

    def _require_teacher(self, teacher_logits: torch.Tensor | None) -> torch.Tensor:
        if teacher_logits is None:
            raise ConfigError(f"distillation method {self.name!r} needs teacher logits")
        return teacher_logits


class KDLoss(DistillLoss):
    """Hinton KD: ``alpha * KD_T + (1 - alpha) * CE`` (alpha weighs the soft term).

    ``mixup_alpha > 0`` adds "function matching" (Beyer et al., CVPR 2022, "a good teacher is
    patient and consistent"): teacher and student see the same mixup-mixed images, so the
    student copies the teacher's function between the training images too, not only on
    them; CE then uses the mixed label rows.
    """

    name = "kd"
    needs_teacher = True

    def __init__(self, temperature: float = 4.0, alpha: float = 0.9, mixup_alpha: float = 0.0) -> None:
        if temperature <= 0:
            raise ConfigError(f"kd temperature must be > 0, got {temperature}")
        if not 0.0 <= alpha <= 1.0:
            raise ConfigError(f"kd alpha must be in [0, 1], got {alpha}")
        if mixup_alpha < 0:
            raise ConfigError(f"kd mixup_alpha must be >= 0, got {mixup_alpha}")
        self.temperature = float(temperature)
        self.alpha = float(alpha)
        self.mixup_alpha = float(mixup_alpha)

    def mix(self, x, labels, num_classes, generator):
        if self.mixup_alpha == 0:
            return x, labels
        return mixup(x, labels, num_classes, self.mixup_alpha, generator)

    def __call__(self, student_logits, teacher_logits, targets, student_feats=(), teacher_feats=()):
        t_logits = self._require_teacher(teacher_logits)
        ce = _ce(student_logits, targets)
        kd = kd_term(student_logits, t_logits, self.temperature)
        loss = self.alpha * kd + (1.0 - self.alpha) * ce
        return loss, {"ce": ce.detach(), "kd": kd.detach()}


class DKDLoss(DistillLoss):
    """Decoupled KD (Zhao et al., CVPR 2022): ``ce_weight*CE + alpha*TCKD + beta*NCKD``.

    TCKD: KL between the binary (target, not-target) probabilities of teacher and student.
    NCKD: KL between their distributions over the non-target classes only. Both at
    temperature T and scaled by T^2. With two classes NCKD is identically 0 (one non-target
    class), so for the binary tasks DKD is CE plus a re-weighted TCKD.
    """

    name = "dkd"
    needs_teacher = True

    def __init__(self, alpha: float = 1.0, beta: float = 8.0, temperature: float = 4.0, ce_weight: float = 1.0) -> None:
        if temperature <= 0:
            raise ConfigError(f"dkd temperature must be > 0, got {temperature}")
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.temperature = float(temperature)
        self.ce_weight = float(ce_weight)

    def __call__(self, student_logits, teacher_logits, targets, student_feats=(), teacher_feats=()):
        t_logits = self._require_teacher(teacher_logits)
        hard = targets.argmax(dim=1) if targets.dim() == 2 else targets
        ce = _ce(student_logits, targets)
        tckd, nckd = dkd_terms(student_logits, t_logits, hard, self.temperature)
        loss = self.ce_weight * ce + self.alpha * tckd + self.beta * nckd
        return loss, {"ce": ce.detach(), "tckd": tckd.detach(), "nckd": nckd.detach()}


def dkd_terms(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(TCKD, NCKD), each a batch-mean KL times T^2."""
    t = temperature
    gt = F.one_hot(labels, student_logits.shape[1]).to(torch.bool)
    p_s = F.softmax(student_logits / t, dim=1)
    p_t = F.softmax(teacher_logits / t, dim=1)
    # Binary distributions [p(target), p(rest)].
    b_s = torch.stack([(p_s * gt).sum(1), (p_s * ~gt).sum(1)], dim=1).clamp_min(1e-12)
    b_t = torch.stack([(p_t * gt).sum(1), (p_t * ~gt).sum(1)], dim=1).clamp_min(1e-12)
    tckd = F.kl_div(b_s.log(), b_t, reduction="batchmean") * (t * t)
    if student_logits.shape[1] < 3:
        return tckd, student_logits.new_zeros(())
    # Non-target distribution: softmax over logits with the target pushed to -inf.
    big = torch.finfo(student_logits.dtype).max / 4
    log_q_s = F.log_softmax(student_logits / t - big * gt, dim=1)
    log_q_t = F.log_softmax(teacher_logits / t - big * gt, dim=1)
    # Target column contributes q_t * (log q_t - log q_s) = 0 * finite; mask it for safety.
    kl = (log_q_t.exp() * (log_q_t - log_q_s)).masked_fill(gt, 0.0).sum(1).mean()
    return tckd, kl * (t * t)


def attention_map(feat: torch.Tensor, size: tuple[int, int] | None = None, p: float = 2.0) -> torch.Tensor:
    """Zagoruyko & Komodakis spatial attention: mean_c |f|^p, resized, flattened, L2-normalised."""
    if feat.dim() != 4:
        raise ConfigError(f"attention transfer needs [N,C,H,W] features, got shape {tuple(feat.shape)}")
    a = feat.abs().pow(p).mean(dim=1, keepdim=True)
    if size is not None and tuple(a.shape[-2:]) != tuple(size):
        # Area pooling when shrinking keeps the map's mass; bilinear when growing.
        if a.shape[-2] >= size[0] and a.shape[-1] >= size[1]:
            a = F.adaptive_avg_pool2d(a, size)
        else:
            a = F.interpolate(a, size=size, mode="bilinear", align_corners=False)
    return F.normalize(a.flatten(1), dim=1)


class ATLoss(DistillLoss):
    """Attention transfer: ``base + beta * mean_pairs mean((a_s - a_t)^2)``.

    Each (student, teacher) feature pair is reduced to a normalised attention map at the
    smaller of the two spatial sizes. ``base`` is "kd" (Hinton KD with temperature/alpha) or
    "ce". beta=1000 with the element mean follows the original paper's setting.
    """

    name = "at"
    needs_teacher = True
    uses_features = True

    def __init__(self, beta: float = 1000.0, p: float = 2.0, base: str = "kd", temperature: float = 4.0, alpha: float = 0.9) -> None:
        if base not in ("kd", "ce"):
            raise ConfigError(f"at base must be 'kd' or 'ce', got {base!r}")
        self.beta = float(beta)
        self.p = float(p)
        self.base = base
        self.temperature = float(temperature)
        self.alpha = float(alpha)

    def at_term(self, student_feats: Sequence[torch.Tensor], teacher_feats: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(student_feats) != len(teacher_feats) or not student_feats:
            raise ConfigError(
                f"attention transfer needs equally many student and teacher features, got "
                f"{len(student_feats)} and {len(teacher_feats)}"
            )
        terms = []
        for fs, ft in zip(student_feats, teacher_feats):
            size = (min(fs.shape[-2], ft.shape[-2]), min(fs.shape[-1], ft.shape[-1]))
            a_s = attention_map(fs, size, self.p)
            a_t = attention_map(ft.detach(), size, self.p)
            terms.append((a_s - a_t).pow(2).mean())
        return torch.stack(terms).mean()

    def __call__(self, student_logits, teacher_logits, targets, student_feats=(), teacher_feats=()):
        ce = _ce(student_logits, targets)
        parts: Parts = {"ce": ce.detach()}
        if self.base == "kd":
            t_logits = self._require_teacher(teacher_logits)
            kd = kd_term(student_logits, t_logits, self.temperature)
            parts["kd"] = kd.detach()
            base = self.alpha * kd + (1.0 - self.alpha) * ce
        else:
            base = ce
        at = self.at_term(student_feats, teacher_feats)
        parts["at"] = at.detach()
        return base + self.beta * at, parts


class PaperLoss(DistillLoss):
    """The reference project's recipe, reproduced as a baseline (not a real distillation).

    Its "distillation" loss was ``KLDiv(log_softmax(student), mixup_one_hot)`` at
    temperature 1: a soft cross-entropy against mixup-mixed one-hot labels (it equals the
    soft CE minus the labels' entropy, a constant). The teacher's logits were computed
    but never entered the loss, and the teacher's loader was shuffled independently of the
    student's, so they were for different images anyway. This class ignores
    ``teacher_logits`` by construction; the loop feeds the teacher independently drawn
    images (``independent_teacher``) to mirror the reference.

    Mixup: one ``lam ~ Beta(alpha, alpha)`` per batch, images and one-hot labels mixed with
    a random permutation of the batch. alpha = 1 (``lam`` uniform on [0, 1]) as in the
    reference's student scripts (KD4FPGA ``student_final.py``: ``ALPHA = 1`` into
    ``np.random.beta(alpha, alpha)``); until 2026-12-01 this default was 0.4, an unsourced
    milder mix. ``--method-arg mixup_alpha=...`` overrides it.

    Kept from our shared training loop rather than the reference, so that the comparison
    isolates the loss: optimiser, schedule, batch size and augmentation (the reference ran
    a constant lr 1e-3 with gradient-norm clipping at 1, batch 64, weight decay 1e-4 and no
    augmentation: its student_final.py only resizes), and the student module
    (the reference's had dropout 0.5 and a softmax inside it, under the loss's log_softmax).
    """

    name = "paper"
    needs_teacher = False
    independent_teacher = True

    def __init__(self, mixup_alpha: float = 1.0) -> None:
        if mixup_alpha < 0:
            raise ConfigError(f"paper mixup_alpha must be >= 0, got {mixup_alpha}")
        self.mixup_alpha = float(mixup_alpha)

    def mix(self, x, labels, num_classes, generator):
        return mixup(x, labels, num_classes, self.mixup_alpha, generator)

    def __call__(self, student_logits, teacher_logits, targets, student_feats=(), teacher_feats=()):
        if targets.dim() == 1:
            targets = F.one_hot(targets, student_logits.shape[1]).to(student_logits.dtype)
        # KLDiv(input=log q_student, target=mixed one-hot) at T = 1, batch mean.
        loss = F.kl_div(F.log_softmax(student_logits, dim=1), targets, reduction="batchmean")
        return loss, {"kl_mixup": loss.detach()}


def mixup(
    x: torch.Tensor, labels: torch.Tensor, num_classes: int, alpha: float, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup with one ``lam ~ Beta(alpha, alpha)`` per batch: images and one-hot label rows
    mixed with a random permutation of the batch (alpha 0: images unchanged, one-hot rows)."""
    onehot = F.one_hot(labels, num_classes).to(x.dtype) if labels.dim() == 1 else labels.to(x.dtype)
    if alpha == 0:
        return x, onehot
    # Draw on CPU from the loop's generator so the stream is device independent.
    g_dev = generator.device if generator is not None else torch.device("cpu")
    u = torch.rand((), generator=generator, device=g_dev).item()
    perm = torch.randperm(x.shape[0], generator=generator, device=g_dev).to(x.device)
    lam = float(_beta_sample(alpha, u))
    return lam * x + (1 - lam) * x[perm], lam * onehot + (1 - lam) * onehot[perm]


def _beta_sample(alpha: float, u: float) -> float:
    """Inverse-CDF draw from Beta(alpha, alpha) given a uniform u.

    torch's Beta sampler takes no generator; inverting the CDF keeps the draw on the loop's
    seeded generator (reproducible, no global RNG state touched).
    """
    from scipy.special import betaincinv

    return float(betaincinv(alpha, alpha, min(max(u, 1e-12), 1 - 1e-12)))


#: name -> loss class; `make_loss(name, **kwargs)` builds one.
DISTILL_LOSSES: Mapping[str, Callable[..., DistillLoss]] = {
    "none": DistillLoss,
    "kd": KDLoss,
    "dkd": DKDLoss,
    "at": ATLoss,
    "paper": PaperLoss,
}


def make_loss(name: str, **kwargs: Any) -> DistillLoss:
    try:
        cls = DISTILL_LOSSES[name]
    except KeyError:
        raise ConfigError(f"unknown distillation method {name!r}; choose one of {', '.join(DISTILL_LOSSES)}") from None
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"bad arguments for method {name!r}: {exc}") from None


def parse_method_args(items: Sequence[str] | None) -> dict[str, Any]:
    """``["temperature=2", "base=ce"]`` -> ``{"temperature": 2.0, "base": "ce"}`` (numbers parsed)."""
    out: dict[str, Any] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"method argument {item!r} must look like key=value")
        try:
            num = float(value)
            out[key] = int(num) if value.lstrip("-").isdigit() else num
        except ValueError:
            out[key] = value
        if isinstance(out[key], float) and not math.isfinite(out[key]):
            raise ConfigError(f"method argument {item!r} is not finite")
    return out
