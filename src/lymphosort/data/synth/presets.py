"""LymphoSim presets: per-class morphology distributions and per-session nuisance ranges.

All lengths are in pixels at the real LymphoMNIST pixel scale (a lymphocyte is ~15-20 px
across). Class traits are Normal(mean, sd) clipped to [lo, hi]; the classes overlap on
purpose so that nothing separates them perfectly.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType
from typing import Mapping

from lymphosort.errors import ConfigError

#: Bumped whenever the image model changes what a (preset, seed) renders.
SIM_VERSION = "2.1"


@dataclass(frozen=True)
class Trait:
    """A clipped normal distribution of one generative parameter."""

    mean: float
    sd: float
    lo: float
    hi: float


@dataclass(frozen=True)
class ClassMorphology:
    """Generative traits of one cell class.

    radius: mean body radius (px); aspect: long/short axis; roughness: scale of the
    boundary's harmonic perturbation (fraction of the radius, harmonics 2-6); granularity:
    amplitude of the band-pass cytoplasm texture (fraction of transmitted light);
    nucleus_ratio: nucleus radius / body radius; nucleus_offset: how far the nucleus sits
    off-centre, as a fraction of the room left (R - Rn).
    """

    name: str
    radius: Trait
    aspect: Trait
    roughness: Trait
    granularity: Trait
    nucleus_ratio: Trait
    nucleus_offset: Trait


#: the generative traits of a class, in table order (everything but the name)
CLASS_TRAITS: tuple[str, ...] = tuple(f.name for f in fields(ClassMorphology) if f.name != "name")


@dataclass(frozen=True)
class SessionRanges:
    """Uniform ranges (lo, hi) of the per-session acquisition nuisances."""

    background_levels: tuple[float, ...] = (128.0, 170.0)  # the two levels in the real crops
    background_jitter: float = 3.0  # sd of a session's level around its nominal value
    read_noise: tuple[float, float] = (2.4, 3.0)  # grey levels, camera read noise sd
    shot_gain: tuple[float, float] = (0.0, 0.015)  # shot-noise variance per grey level
    psf_sigma: tuple[float, float] = (0.7, 1.2)  # in-focus blur of the optics (px)
    defocus_sigma: tuple[float, float] = (1.0, 1.8)  # spread of the defocus (halo width, px)
    defocus: tuple[float, float] = (0.11, 0.22)  # strength of the Laplacian (halo/rim) term
    absorption: tuple[float, float] = (0.18, 0.32)  # body absorption at the thickest point
    motion_px: tuple[float, float] = (0.0, 2.0)  # motion blur length along x during exposure
    illumination: float = 0.05  # max fractional illumination change across the crop
    pattern: float = 0.006  # sd of the static fixed-pattern background texture
    p_wall: tuple[float, float] = (0.0, 0.35)  # chance a crop shows a channel wall band
    debris_rate: tuple[float, float] = (0.2, 1.2)  # mean debris dots per 64x64 crop
    p_pad: float = 0.02  # chance of black padding rows (crop ran past the camera frame)
    center_jitter: float = 1.2  # sd (px) of the cell centre around the crop centre
    #: cells flow at different heights in the channel: per-cell log-sd of the defocus
    #: strength around the session's focus (changes halo and rim contrast cell by cell)
    z_jitter: float = 0.3


@dataclass(frozen=True)
class SimPreset:
    """Everything that decides what LymphoSim renders, besides the seed."""

    name: str
    description: str
    classes: tuple[ClassMorphology, ...]
    sessions: SessionRanges = field(default_factory=SessionRanges)
    #: session ids 0..n_sessions-1 form the default pool of `render_crops`.
    n_sessions: int = 16
    #: sessions `write_lymphomnist` gives the train and the (held-out) test split.
    n_train_sessions: int = 12
    n_test_sessions: int = 4
    version: str = SIM_VERSION


def _t(mean: float, sd: float, lo: float, hi: float) -> Trait:
    return Trait(mean, sd, lo, hi)


# B cells: round, smooth membrane, big central nucleus (thin cytoplasm rim), fine texture.
# T4: smaller, rougher outline, coarser granular cytoplasm, smaller eccentric nucleus.
# T8 (CD8, cytotoxic): the largest here, with a smooth, B-like outline, the most granular
# cytoplasm (lytic granules) and a nucleus ratio between B and T4. A T4-vs-B boundary reads
# its texture as T but its size and outline as B, so it transfers to T8 vs B only in part,
# while T8 vs B stays learnable (granularity, size): what fine-tuning has to find.
# Spreads (sd) are x0.85 of the v1 table (SIM_VERSION 1.0): calibrated so that a compact
# CNN clears 96% on T4 vs B (BENCHMARKS.md, "LymphoSim difficulty": how 2.0 was chosen).
# 2.1 moves only the T8 radius mean (11.8 -> 12.4 px): on 2.0 full-data T8-vs-B fine-tuning
# stopped at 95.4%, 1.4 points under the T4-vs-B teacher where the reference's real data has
# 1 point; size separates T8 from B without changing what a T4-vs-B model reads zero-shot.
# Sessions are salted by preset name and every trait draw is a shifted normal, so B and T4
# crops render bit-identical to 2.0 (tests/data/test_synth.py checks it; BENCHMARKS.md "LymphoSim 2.1").
_DEFAULT_CLASSES = (
    ClassMorphology(
        "B",
        radius=_t(10.6, 0.72, 7.0, 14.0),
        aspect=_t(1.05, 0.034, 1.0, 1.3),
        roughness=_t(0.025, 0.0102, 0.0, 0.12),
        granularity=_t(0.035, 0.01275, 0.0, 0.2),
        nucleus_ratio=_t(0.80, 0.038, 0.5, 0.95),
        nucleus_offset=_t(0.30, 0.17, 0.0, 1.0),
    ),
    ClassMorphology(
        "T4",
        radius=_t(9.8, 0.72, 7.0, 14.0),
        aspect=_t(1.10, 0.0425, 1.0, 1.3),
        roughness=_t(0.055, 0.0153, 0.0, 0.12),
        granularity=_t(0.075, 0.0187, 0.0, 0.2),
        nucleus_ratio=_t(0.70, 0.0425, 0.5, 0.95),
        nucleus_offset=_t(0.60, 0.17, 0.0, 1.0),
    ),
    ClassMorphology(
        "T8",
        radius=_t(12.4, 0.72, 7.0, 14.0),
        aspect=_t(1.08, 0.0425, 1.0, 1.3),
        roughness=_t(0.028, 0.0136, 0.0, 0.12),
        granularity=_t(0.09, 0.0187, 0.0, 0.2),
        nucleus_ratio=_t(0.77, 0.0425, 0.5, 0.95),
        nucleus_offset=_t(0.58, 0.17, 0.0, 1.0),
    ),
)


def _scaled(classes: tuple[ClassMorphology, ...], k: float) -> tuple[ClassMorphology, ...]:
    """Widen (k > 1) or narrow (k < 1) every class trait's spread: harder or easier."""
    return tuple(
        replace(c, **{t: replace(getattr(c, t), sd=getattr(c, t).sd * k) for t in CLASS_TRAITS})
        for c in classes
    )


PRESETS: Mapping[str, SimPreset] = MappingProxyType(
    {
        "default": SimPreset(
            "default",
            "calibrated to the real crops; T4 vs B learnable from shape/texture, not from global statistics",
            _DEFAULT_CLASSES,
        ),
        "easy": SimPreset(
            "easy",
            "narrower class traits and milder nuisances (smoke tests, quick demos)",
            _scaled(_DEFAULT_CLASSES, 0.6),
            SessionRanges(read_noise=(2.0, 2.5), motion_px=(0.0, 1.0), p_wall=(0.0, 0.15)),
        ),
        "hard": SimPreset(
            "hard",
            "wider class traits and stronger nuisances (more overlap, more defocus, more walls)",
            _scaled(_DEFAULT_CLASSES, 1.35),
            SessionRanges(defocus=(0.12, 0.40), motion_px=(0.0, 3.0), p_wall=(0.0, 0.5),
                          debris_rate=(0.3, 1.5), read_noise=(2.6, 3.4)),
        ),
    }
)


def with_trait_scale(preset: str | SimPreset, k: float) -> SimPreset:
    """`preset` with every class trait's spread times `k` (< 1 easier, > 1 harder), for
    calibrating a preset's difficulty; named `<name>-x<k>`."""
    base = get_preset(preset)
    if not k > 0:
        raise ConfigError(f"trait scale must be > 0, got {k}")
    return replace(base, name=f"{base.name}-x{k:g}", classes=_scaled(base.classes, float(k)))


def with_trait_means(preset: str | SimPreset, means: Mapping[str, float | str]) -> SimPreset:
    """`preset` with class trait means moved, keyed "CLASS.TRAIT" (e.g. {"T8.radius": 12.2}),
    for designing a preset; named `<name>+<changes>`."""
    base = get_preset(preset)
    classes = {c.name: c for c in base.classes}
    for key, value in means.items():
        cname, _, trait = key.partition(".")
        if cname not in classes or trait not in CLASS_TRAITS:
            raise ConfigError(f"bad trait key {key!r}: use CLASS.TRAIT, CLASS in {list(classes)}, TRAIT in {CLASS_TRAITS}")
        try:
            mean = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: mean must be a number, got {value!r}") from None
        c = classes[cname]
        classes[cname] = replace(c, **{trait: replace(getattr(c, trait), mean=mean)})
    name = f"{base.name}+" + ",".join(f"{k}={v}" for k, v in means.items())
    return replace(base, name=name, classes=tuple(classes[c.name] for c in base.classes))


def get_preset(preset: str | SimPreset) -> SimPreset:
    """A preset by name (or a `SimPreset` passed through); `ConfigError` lists the names."""
    if isinstance(preset, SimPreset):
        return preset
    try:
        return PRESETS[preset]
    except (KeyError, TypeError):
        raise ConfigError(
            f"unknown LymphoSim preset {preset!r}; choose one of {', '.join(PRESETS)}"
        ) from None
