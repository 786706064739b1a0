"""LymphoSim presets: per-class morphology distributions and per-session nuisance ranges.

Two image models share this table: `relief` (3.x, the default: the LymphoMNIST microscope,
high magnification, differential-interference-like relief, the cell filling the crop; lengths
in native camera px before the dataset's resize to 64x64) and `brightfield` (2.x, kept for
history: low-magnification channel video, a ~20 px cell in a 64 px crop; lengths in crop px).
Class traits are Normal(mean, sd) clipped to [lo, hi]; the classes overlap on purpose so
that nothing separates them perfectly.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType
from typing import Mapping

from lymphosort.errors import ConfigError

#: Bumped whenever the image model changes what a (preset, seed) renders.
SIM_VERSION = "3.4"
#: the last version of the brightfield (2.x) image model, recorded by its history presets
BRIGHTFIELD_VERSION = "2.1"
#: LymphoMNIST's class shares (B, T4, T8) of about 80,000 images (../shared/reference/lymphomnist)
REAL_CLASS_SHARES: tuple[float, ...] = (0.362, 0.400, 0.238)


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
    off-centre, as a fraction of the room left (R - Rn); grain (relief model only): size of
    the cytoplasm granules (px, the texture's band centre).
    """

    name: str
    radius: Trait
    aspect: Trait
    roughness: Trait
    granularity: Trait
    nucleus_ratio: Trait
    nucleus_offset: Trait
    grain: Trait = Trait(2.0, 0.0, 2.0, 2.0)


#: the generative traits of a class, in table order (everything but the name)
CLASS_TRAITS: tuple[str, ...] = tuple(f.name for f in fields(ClassMorphology) if f.name != "name")
#: the traits the brightfield (2.x) model draws, in its order (so 2.x renders as it did)
BRIGHTFIELD_TRAITS: tuple[str, ...] = CLASS_TRAITS[:6]


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
class ReliefRanges:
    """Per-session (uniform lo, hi) and per-crop nuisances of the relief (3.x) microscope.

    Calibrated on the 64 real crops (../shared/reference/lymphomnist, README there):
    background 115 +- 19 grey levels crop to crop, brightest rim towards the lower right
    (52 +- 8 degrees), rim relief (upper-left minus lower-right) about -47 grey levels. 3.1
    re-fitted the optical-path and intensity terms (the fields from `defocus_crop_sd` on, and
    relief, bias, psf, defocus, absorption, diam_frac) by searching them against the
    `data compare` discriminator (benchmarks/realism.py; docs/lymphosim.md). 3.4 quieted and
    narrowed the optics (read noise, haze, debris, relief and psf spreads), softened the body
    edge and freed the cell's size from 3.3's clip floor (`RELIEF_3_3` lists 3.3's values).
    """

    background: tuple[float, float] = (90.0, 140.0)  # a session's lamp level (grey levels)
    background_crop_sd: float = 11.0  # crop-to-crop level change within a session
    shear_deg: tuple[float, float] = (44.0, 60.0)  # direction the bright rim faces (0 = +x, +y down)
    shear_crop_sd: float = 4.0  # degrees, crop to crop (slide tilt, cell position in the field)
    relief: tuple[float, float] = (0.21, 0.235)  # intensity change per unit optical-path slope
    relief_crop_sd: float = 0.1  # log-sd of the relief gain crop to crop
    bias: tuple[float, float] = (0.0, 0.04)  # second-order term: both edges a little brighter
    psf_sigma: tuple[float, float] = (1.05, 1.15)  # native px
    defocus: tuple[float, float] = (0.05, 0.17)  # a touch of Laplacian (halo) term
    halo_sigma: tuple[float, float] = (1.5, 2.5)  # its extra blur: how far the halo reaches (px)
    absorption: tuple[float, float] = (0.045, 0.1)  # scale of the intensity terms below
    read_noise: tuple[float, float] = (0.15, 0.35)  # grey levels, before the resize
    haze: tuple[float, float] = (0.0, 0.04)  # out-of-focus specks over the field (path px)
    illumination: float = 0.04  # max fractional illumination change across the crop
    center_jitter: float = 1.0  # px: how far the dataset's cropper missed the cell centre
    #: geometric cell diameter / crop side (mean, sd); the reference's 0.76 is measured at the
    #: outer edge of the blurred rim, ~4-5 px wider (`data compare` measures both alike)
    diam_frac: tuple[float, float] = (0.675, 0.045)
    #: the range that draw is clipped to; 3.1-3.3 kept 3.0's (0.66, 0.86) while the fit moved the
    #: mean to 0.655, so over a third of their crops sit on the floor and the size fraction's sd
    #: is 0.020 against the real crops' 0.034 (docs/lymphosim.md); 3.4 draws it freely
    diam_frac_clip: tuple[float, float] = (0.5, 0.86)
    crop_side: tuple[int, int] = (51, 73)  # native crop sides the dataset cut (px)
    p_neighbour: float = 0.10  # a piece of another cell in a corner
    debris_rate: tuple[float, float] = (0.0, 0.15)  # small specks per crop
    #: cell to cell (each sits at its own height): sd of the defocus term around the session's,
    #: either sign, so some centres show bright and some dark (0: none, the 3.0 model)
    defocus_crop_sd: float = 0.2
    # The cell's optical path per unit of the drawn traits (px of cell-equivalent
    # thickness). Body profile sqrt(1 - rho^(2 flatness)): flatter on top than a sphere,
    # so the relief shades the inside less than it lights the rim.
    flatness: float = 2.2
    body_path: float = 1.0  # x radius x the body's profile
    nucleus_path: float = 0.53  # x nucleus radius x its cap: the nucleus edge, a faint inner rim
    grain_band: tuple[float, float] = (0.57, 2.75)  # granule scales, x the cell's grain (px)
    grain_path: float = 2.25  # x granularity x unit band-pass texture
    speckle_path: float = 0.7  # granules near the optical resolution, every class alike
    speckle_band: tuple[float, float] = (0.5, 1.2)  # their Gaussian scales (px)
    #: intensity loss of body and nucleus, x the session's `absorption`. A negative nucleus
    #: weight is an effective term, not absorption: the real crops' centres are brighter than
    #: their cytoplasm ring (the cell gathers light like a lens), which 3.0 missed.
    body_absorb: float = 1.0
    nucleus_absorb: float = -1.55
    #: edge softness: extra Gaussian blur (px) of the body's height map alone, so the rim's edge
    #: softens while the granules keep the optics' resolution (0: none, 3.3 and before)
    edge_sigma: float = 0.7


#: the relief optics of LymphoSim 3.1-3.3 (the `relief-3.3` / `-3.2` / `-3.1` history presets)
RELIEF_3_3 = ReliefRanges(
    relief=(0.185, 0.26), relief_crop_sd=0.33, psf_sigma=(0.875, 1.3), read_noise=(0.3, 0.9), haze=(0.0, 0.15),
    diam_frac=(0.655, 0.03), diam_frac_clip=(0.66, 0.86), debris_rate=(0.0, 0.6), defocus_crop_sd=0.4,
    edge_sigma=0.0,
)
#: the relief model as LymphoSim 3.0 rendered it (the `relief-3.0` history preset)
RELIEF_3_0 = replace(
    RELIEF_3_3,
    relief=(0.18, 0.25), relief_crop_sd=0.15, bias=(0.0, 0.05), psf_sigma=(0.8, 1.2), defocus=(0.08, 0.2),
    absorption=(0.0, 0.03), diam_frac=(0.70, 0.025), defocus_crop_sd=0.0, flatness=2.0, nucleus_path=0.4,
    grain_band=(0.6, 2.4), grain_path=2.0, speckle_path=0.5, body_absorb=0.6, nucleus_absorb=0.4,
)


@dataclass(frozen=True)
class SimPreset:
    """Everything that decides what LymphoSim renders, besides the seed."""

    name: str
    description: str
    classes: tuple[ClassMorphology, ...]
    sessions: SessionRanges | ReliefRanges = field(default_factory=ReliefRanges)
    #: session ids 0..n_sessions-1 form the default pool of `render_crops`.
    n_sessions: int = 16
    #: sessions `write_lymphomnist` gives the train and the (held-out) test split.
    n_train_sessions: int = 12
    n_test_sessions: int = 4
    version: str = SIM_VERSION
    #: image model: "relief" (3.x, LymphoMNIST's microscope) or "brightfield" (2.x, history)
    optics: str = "relief"
    #: label shares (B, T4, T8) when labels are drawn; None = balanced (the 2.x sets)
    class_shares: tuple[float, ...] | None = REAL_CLASS_SHARES
    #: grey-level offset of each class's sessions, with sessions split by class: a lab that
    #: recorded each class on its own day (the `confounded` preset; 0 = none)
    class_background_shift: tuple[float, ...] | None = None
    #: name that salts the session table (default: the preset's name); the history presets
    #: keep their 2.x names' salt so that they render the 2.1 bytes
    session_salt: str | None = None


def _t(mean: float, sd: float, lo: float, hi: float) -> Trait:
    return Trait(mean, sd, lo, hi)


# Relief (3.x) classes, native px (a cell ~45 px across before the resize to 64x64).
# The crop follows the cell, so size survives only weakly (through the crop-side rule's
# scatter and the texture scale); classes differ in membrane outline, granule size and
# amount, and nucleus size and position: what a CNN can read and raw-pixel classical models
# mostly cannot (the real figure's 46-56% on 3 classes). B: smooth and round, fine texture,
# a large central nucleus. T4: a rougher outline, coarser granules, a smaller eccentric
# nucleus. T8: T4-like texture and nucleus (so a T4-vs-B model reads it as T, zero-shot) but
# a B-like smooth outline and a little larger (what fine-tuning has to learn).
_RELIEF_CLASSES_3_0 = (
    ClassMorphology(
        "B",
        radius=_t(22.0, 1.6, 17.0, 28.0),
        aspect=_t(1.02, 0.015, 1.0, 1.15),
        roughness=_t(0.005, 0.003, 0.0, 0.05),
        granularity=_t(0.60, 0.14, 0.1, 1.6),
        nucleus_ratio=_t(0.78, 0.035, 0.5, 0.95),
        nucleus_offset=_t(0.20, 0.13, 0.0, 1.0),
        grain=_t(3.0, 0.38, 1.6, 6.0),
    ),
    ClassMorphology(
        "T4",
        radius=_t(21.4, 1.6, 17.0, 28.0),
        aspect=_t(1.035, 0.02, 1.0, 1.15),
        roughness=_t(0.013, 0.0035, 0.0, 0.05),
        granularity=_t(0.78, 0.15, 0.1, 1.6),
        nucleus_ratio=_t(0.73, 0.04, 0.5, 0.95),
        nucleus_offset=_t(0.55, 0.15, 0.0, 1.0),
        grain=_t(4.2, 0.42, 1.6, 6.0),
    ),
    ClassMorphology(
        "T8",
        radius=_t(22.8, 1.6, 17.0, 28.0),
        aspect=_t(1.03, 0.02, 1.0, 1.15),
        roughness=_t(0.007, 0.003, 0.0, 0.05),
        granularity=_t(0.82, 0.15, 0.1, 1.6),
        nucleus_ratio=_t(0.75, 0.04, 0.5, 0.95),
        nucleus_offset=_t(0.48, 0.15, 0.0, 1.0),
        grain=_t(4.4, 0.42, 1.6, 6.0),
    ),
)
#: 3.1: finer granules (grain means x 0.86, spreads kept), fitted with the optics above
def _with_draws(c: ClassMorphology, draws: Mapping[str, tuple[float, float]]) -> ClassMorphology:
    """`c` with the named traits' (mean, sd) replaced (clip ranges kept)."""
    return replace(c, **{t: replace(getattr(c, t), mean=float(m), sd=float(sd)) for t, (m, sd) in draws.items()})


def _with_means(c: ClassMorphology, means: Mapping[str, float]) -> ClassMorphology:
    """`c` with the named traits' means moved (spreads and clip ranges kept)."""
    return _with_draws(c, {t: (m, getattr(c, t).sd) for t, m in means.items()})


_RELIEF_CLASSES_3_1 = tuple(_with_means(c, {"grain": m}) for c, m in zip(_RELIEF_CLASSES_3_0, (2.6, 3.6, 3.8)))


def _times(t: Trait, k: float) -> Trait:
    return Trait(t.mean * k, t.sd * k, t.lo * k, t.hi * k)


#: 3.2: the class cues at a size the optics resolve. 3.1's outline roughness was sub-pixel
#: (a ResNet-18 ignored it: benchmarks/deep_gap.py) and its granule sizes overlapped, so deep
#: models stopped near 93% on T4 vs B where the real teacher reaches 98%: roughness x4 (mean,
#: spread and range) and granule sizes B 2.4 / T4 3.8 / T8 4.0 px (probed in docs/lymphosim.md:
#: compact teacher 92.1 -> 96.4%, the realism discriminator unchanged)
_RELIEF_CLASSES_3_2 = tuple(
    _with_means(replace(c, roughness=_times(c.roughness, 4.0)), {"grain": m})
    for c, m in zip(_RELIEF_CLASSES_3_1, (2.4, 3.8, 4.0))
)
#: 3.3: T8 gets a cue of its own, on 3.2's optics. On 3.2 it was T4's texture on B's outline,
#: so a T4-vs-B model read it as T4 (zero-shot 95.1%, above the real 93%) and fine-tuning had
#: little left to learn (95.7%, real 97%). Now T8 has B's granule amount and nucleus position
#: but the coarsest granules of the three (4.8 px): half its T4 look is gone, and what
#: separates it from B is larger (probed in docs/lymphosim.md: compact teacher zero-shot
#: 94.1 -> 89.6%, its fine-tune 94.9 -> 97.9%)
_RELIEF_CLASSES_3_3 = _RELIEF_CLASSES_3_2[:2] + (
    _with_means(_RELIEF_CLASSES_3_2[2], {"grain": 4.8, "granularity": 0.60, "nucleus_offset": 0.20}),
)


#: 3.4: class cues that raw pixels mostly miss, as on the real figure (classical models at 46-56%
#: on 3 classes; 3.3's gradient boosting and random forest read 62-63%). Raw pixels read the
#: nucleus and the outline (the cell sits at one place and size), CNNs the granule size
#: (`synth_difficulty.py --pixel-cues`): so the texture's strength is even (T8 a little
#: stronger), granule sizes B 2.6 / T4 3.8 / T8 4.0 px carry most of the signal, and the outline
#: and nucleus cues are weaker (docs/lymphosim.md, "LymphoSim 3.4")
_RELIEF_CLASSES = tuple(_with_draws(c, d) for c, d in zip(_RELIEF_CLASSES_3_3, (
    {"granularity": (0.7, 0.06), "grain": (2.6, 0.3), "roughness": (0.02, 0.012), "nucleus_offset": (0.2, 0.13)},
    {"granularity": (0.7, 0.06), "grain": (3.8, 0.3), "roughness": (0.04, 0.014), "nucleus_offset": (0.4, 0.15)},
    {"granularity": (0.95, 0.06), "grain": (4.0, 0.3), "roughness": (0.025, 0.012), "nucleus_offset": (0.3, 0.15)},
)))


# Brightfield (2.x) classes, crop px. B cells: round, smooth membrane, big central nucleus
# (thin cytoplasm rim), fine texture. T4: smaller, rougher outline, coarser granular
# cytoplasm, smaller eccentric nucleus. T8: the largest, B-like outline, the most granular
# cytoplasm, a nucleus ratio between B and T4. Spreads are x0.85 of 1.0's; 2.1 moved only
# the T8 radius mean (11.8 -> 12.4 px), so B and T4 render as in 2.0.
_BRIGHTFIELD_CLASSES = (
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


def _brightfield(name: str, salt: str, description: str, classes: tuple[ClassMorphology, ...],
                 sessions: SessionRanges = SessionRanges()) -> SimPreset:
    return SimPreset(name, description, classes, sessions, version=BRIGHTFIELD_VERSION,
                     optics="brightfield", class_shares=None, session_salt=salt)


PRESETS: Mapping[str, SimPreset] = MappingProxyType(
    {
        "default": SimPreset(
            "default",
            "LymphoMNIST's microscope (relief, cell filling the crop), real class shares",
            _RELIEF_CLASSES,
        ),
        "easy": SimPreset(
            "easy",
            "narrower class traits and milder nuisances (smoke tests, quick demos)",
            _scaled(_RELIEF_CLASSES, 0.6),
            ReliefRanges(p_neighbour=0.05, debris_rate=(0.0, 0.1)),
        ),
        "hard": SimPreset(
            "hard",
            "wider class traits and stronger nuisances (more overlap, focus and lamp drift)",
            _scaled(_RELIEF_CLASSES, 1.35),
            ReliefRanges(background_crop_sd=16.0, psf_sigma=(0.8, 1.6), defocus=(0.0, 0.2),
                         read_noise=(1.0, 2.0), p_neighbour=0.2),
        ),
        "confounded": SimPreset(
            "confounded",
            "each class recorded in its own sessions, B brighter and T8 darker: a model can "
            "read the session instead of the cell (what `lymphosort audit` must flag)",
            _RELIEF_CLASSES,
            class_background_shift=(18.0, 0.0, -18.0),
        ),
        # history: the 3.3 relief model (before 3.4 moved the class cues where raw pixels miss them)
        "relief-3.3": SimPreset(
            "relief-3.3",
            "LymphoSim 3.3 default (history): class cues in nucleus and outline that raw pixels read",
            _RELIEF_CLASSES_3_3, RELIEF_3_3, version="3.3", session_salt="default",
        ),
        # history: the 3.2 relief model (before 3.3 gave T8 a cue of its own)
        "relief-3.2": SimPreset(
            "relief-3.2",
            "LymphoSim 3.2 default (history): T8 with T4's granules and nucleus position",
            _RELIEF_CLASSES_3_2, RELIEF_3_3, version="3.2", session_salt="default",
        ),
        # history: the 3.1 relief model (before 3.2 made the class cues resolvable)
        "relief-3.1": SimPreset(
            "relief-3.1",
            "LymphoSim 3.1 default (history): sub-pixel outline roughness, overlapping granule sizes",
            _RELIEF_CLASSES_3_1, RELIEF_3_3, version="3.1", session_salt="default",
        ),
        # history: the 3.0 relief model (before the 3.1 re-fit against the discriminator)
        "relief-3.0": SimPreset(
            "relief-3.0",
            "LymphoSim 3.0 default (history): the relief model before its 3.1 re-fit",
            _RELIEF_CLASSES_3_0, RELIEF_3_0, version="3.0", session_salt="default",
        ),
        # history: the 2.x brightfield model (low-magnification channel video)
        "brightfield": _brightfield(
            "brightfield", "default",
            "LymphoSim 2.1 default: low-magnification bright field calibrated on the wrong "
            "instrument (history; not LymphoMNIST's microscope)",
            _BRIGHTFIELD_CLASSES,
        ),
        "brightfield-easy": _brightfield(
            "brightfield-easy", "easy", "LymphoSim 2.1 easy (history)", _scaled(_BRIGHTFIELD_CLASSES, 0.6),
            SessionRanges(read_noise=(2.0, 2.5), motion_px=(0.0, 1.0), p_wall=(0.0, 0.15)),
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
    for designing a preset; a value "mean:sd" sets the spread too; named `<name>+<changes>`."""
    base = get_preset(preset)
    classes = {c.name: c for c in base.classes}
    for key, value in means.items():
        cname, _, trait = key.partition(".")
        if cname not in classes or trait not in CLASS_TRAITS:
            raise ConfigError(f"bad trait key {key!r}: use CLASS.TRAIT, CLASS in {list(classes)}, TRAIT in {CLASS_TRAITS}")
        try:
            nums = [float(v) for v in str(value).split(":")]
        except ValueError:
            nums = []
        if len(nums) not in (1, 2) or (len(nums) == 2 and nums[1] < 0):
            raise ConfigError(f"{key}: give a mean or mean:sd (sd >= 0), got {value!r}")
        c = classes[cname]
        classes[cname] = _with_draws(c, {trait: (nums[0], nums[1] if len(nums) == 2 else getattr(c, trait).sd)})
    name = f"{base.name}+" + ",".join(f"{k}={v}" for k, v in means.items())
    # a design variant keeps its base's sessions: the two differ only in the traits moved
    return replace(base, name=name, classes=tuple(classes[c.name] for c in base.classes),
                   session_salt=base.session_salt or base.name)


def with_trait_factors(preset: str | SimPreset, factors: Mapping[str, float | str]) -> SimPreset:
    """`preset` with one trait rescaled in every class, keyed "TRAIT" (e.g. {"roughness": 4}):
    mean, spread and clip range times the factor, so the classes overlap as before but the
    trait is larger in the image (how visible a trait is, apart from how well it separates
    the classes); named `<name>+<trait>*<factor>`, on its base's sessions."""
    base = get_preset(preset)
    classes = base.classes
    for trait, value in factors.items():
        if trait not in CLASS_TRAITS:
            raise ConfigError(f"bad trait {trait!r}: choose one of {CLASS_TRAITS}")
        try:
            k = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{trait}: factor must be a number, got {value!r}") from None
        if not k > 0:
            raise ConfigError(f"{trait}: factor must be > 0, got {k}")
        classes = tuple(replace(c, **{trait: _times(getattr(c, trait), k)}) for c in classes)
    name = f"{base.name}+" + ",".join(f"{t}*{v}" for t, v in factors.items())
    return replace(base, name=name, classes=classes, session_salt=base.session_salt or base.name)


#: `ReliefRanges` pairs that are (mean, sd), not (lo, hi) ranges
_MEAN_SD_FIELDS = frozenset({"diam_frac"})


def with_optics(preset: str | SimPreset, values: Mapping[str, float | str]) -> SimPreset:
    """`preset` with acquisition nuisances changed, keyed by a field of its `ReliefRanges` /
    `SessionRanges` (e.g. {"relief_crop_sd": 0.15, "read_noise": "0.2:0.5"}; a range is
    "lo:hi", `diam_frac` "mean:sd"), for fitting the optics against real crops (`data compare`); named
    `<name>+optics.<field>=<value>`, on its base's session salt."""
    base = get_preset(preset)
    ranges = base.sessions
    # the fields a variant may change: numbers and (lo, hi) ranges
    kinds = {f.name: type(getattr(ranges, f.name)) for f in fields(ranges)
             if isinstance(getattr(ranges, f.name), (float, int, tuple))}
    changes: dict[str, object] = {}
    for key, value in values.items():
        if key not in kinds:
            raise ConfigError(f"bad optics field {key!r}: choose one of {sorted(kinds)}")
        old = getattr(ranges, key)
        parts = str(value).split(":")
        try:
            nums = [float(v) for v in parts]
        except ValueError:
            raise ConfigError(f"optics.{key}: {value!r} is not a number (or lo:hi)") from None
        if kinds[key] is tuple:
            mean_sd = key in _MEAN_SD_FIELDS
            if len(nums) != len(old) or (len(nums) == 2 and (nums[1] < 0 if mean_sd else nums[0] > nums[1])):
                form = "mean:sd (sd >= 0)" if mean_sd else "lo:hi"
                raise ConfigError(f"optics.{key}: give {len(old)} numbers as {form}, got {value!r}")
            changes[key] = tuple(type(o)(v) for o, v in zip(old, nums))
        elif len(nums) != 1:
            raise ConfigError(f"optics.{key}: give one number, got {value!r}")
        else:
            changes[key] = kinds[key](nums[0])
    name = f"{base.name}+" + ",".join(f"optics.{k}={v}" for k, v in values.items())
    return replace(base, name=name, sessions=replace(ranges, **changes),
                   session_salt=base.session_salt or base.name)


def _derived(spec: str) -> SimPreset:
    """A design variant by name, as `with_trait_means` / `with_trait_factors` / `with_optics`
    name them: "BASE+ITEM,ITEM,...", each item "CLASS.TRAIT=mean[:sd]", "TRAIT*factor" or
    "optics.FIELD=value" (a range as lo:hi), applied in order (e.g.
    "default+roughness*4,B.grain=2.4" or "default+optics.relief_crop_sd=0.15")."""
    base_name, _, items = spec.partition("+")
    pre = get_preset(base_name)
    for item in filter(None, items.split(",")):
        if item.startswith("optics."):
            key, sep, value = item[len("optics."):].partition("=")
            if not sep:
                raise ConfigError(f"preset {spec!r}: item {item!r} needs a value (optics.FIELD=value)")
            pre = with_optics(pre, {key.strip(): value.strip()})
        elif "*" in item:
            trait, _, factor = item.partition("*")
            pre = with_trait_factors(pre, {trait.strip(): factor})
        elif "=" in item:
            key, _, mean = item.partition("=")
            pre = with_trait_means(pre, {key.strip(): mean})
        else:
            raise ConfigError(f"preset {spec!r}: item {item!r} is neither CLASS.TRAIT=mean nor TRAIT*factor")
    return replace(pre, name=spec)


def get_preset(preset: str | SimPreset) -> SimPreset:
    """A preset by name (or a `SimPreset` passed through); `ConfigError` lists the names.
    "BASE+..." names a design variant of a preset (see `_derived`)."""
    if isinstance(preset, SimPreset):
        return preset
    if isinstance(preset, str) and "+" in preset:
        return _derived(preset)
    try:
        return PRESETS[preset]
    except (KeyError, TypeError):
        raise ConfigError(
            f"unknown LymphoSim preset {preset!r}; choose one of {', '.join(PRESETS)}"
        ) from None
