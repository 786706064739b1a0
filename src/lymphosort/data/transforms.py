"""Batched tensor transforms: model input conversion and training augmentation.

Images travel as uint8 ``[N, H, W]`` until the last moment. Training augments the whole
batch once, as float ``[N, 1, H, W]`` in [0, 1] on whatever device it lives on, and each
model then converts the *same* augmented pixels with its own input size and
normalisation through :func:`to_model_input` (teacher and student see identical cells).

Everything here is vectorised over the batch; per-sample randomness comes from one
``torch.Generator`` so a seed reproduces a batch exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lymphosort.errors import ConfigError

__all__ = ["AugmentConfig", "BatchAugment", "center_window", "resize_matrix", "to_model_input"]


def _as_batch(images: torch.Tensor) -> torch.Tensor:
    """uint8/float [N,H,W] or [N,1,H,W] -> float32 [N,1,H,W] in [0,1] (new tensor for uint8)."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor, got {type(images).__name__}")
    if images.ndim == 3:
        images = images.unsqueeze(1)
    elif images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(f"expected images [N,H,W] or [N,1,H,W], got shape {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        return images.to(torch.float32).div_(255.0)
    if images.is_floating_point():
        return images.to(torch.float32)
    raise TypeError(f"expected uint8 or floating-point images in [0,1], got {images.dtype}")


def to_model_input(
    images: torch.Tensor, size: int, mean: float, std: float, fov: int | None = None
) -> torch.Tensor:
    """Convert a batch to a model's input: float32 ``[N, 1, size, size]``, ``(x - mean) / std``.

    ``images``: uint8 ``[N,H,W]``/``[N,1,H,W]`` (scaled by 1/255) or float in [0, 1].
    ``fov`` (field of view, native pixels): first cut the centred ``fov`` x ``fov`` window
    (the cell sits at the crop centre), keeping full resolution where the cell is. Then
    resizes with bilinear interpolation only when ``H, W != size`` (antialiased when
    shrinking, so a 64 -> 28 student input does not alias). Stays on the input's device.
    """
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ConfigError(f"size must be a positive integer, got {size!r}")
    mean, std = float(mean), float(std)
    if not math.isfinite(mean) or not math.isfinite(std) or std <= 0:
        raise ConfigError(f"need finite mean and std > 0, got mean={mean}, std={std}")
    x = _as_batch(images)
    if fov is not None:
        x = center_window(x, fov)
    h, w = x.shape[-2:]
    if (h, w) != (size, size):
        x = F.interpolate(
            x, size=(size, size), mode="bilinear", align_corners=False, antialias=(h > size or w > size)
        )
    elif isinstance(images, torch.Tensor) and x.untyped_storage().data_ptr() == images.untyped_storage().data_ptr():
        x = x.clone()  # never normalise the caller's tensor (or a window of it) in place
    return x.sub_(mean).div_(std)


def center_window(x: Any, side: int) -> Any:
    """The centred ``side`` x ``side`` window of a ``[..., H, W]`` tensor or array (a view)."""
    h, w = x.shape[-2:]
    if not isinstance(side, int) or isinstance(side, bool) or not 1 <= side <= min(h, w):
        raise ConfigError(f"field of view must be an integer in [1, {min(h, w)}] for {h}x{w} images, got {side!r}")
    top, left = (h - side) // 2, (w - side) // 2
    return x[..., top : top + side, left : left + side]


def resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """float32 [n_out, n_in]: the 1-D resize `to_model_input` applies along each axis,
    measured from `to_model_input` itself (the resize is linear and separable)."""
    # Column images e_i (n_in x 1): the width axis is untouched, so each output column is
    # the i-th column of the height-axis resize matrix. mean 0, std 1 keeps values raw.
    eye = torch.eye(n_in, dtype=torch.float32).reshape(n_in, 1, n_in, 1)
    # to_model_input resizes to a square; resize the e_i images to (n_out, n_out), take column 0
    wide = eye.expand(n_in, 1, n_in, n_in).contiguous()  # constant along width: width resize is exact
    cols = to_model_input(wide, n_out, 0.0, 1.0)[:, 0, :, 0]  # [n_in, n_out]
    return cols.T.contiguous().numpy().astype(np.float32)


def _check_range(name: str, r: tuple[float, float], lo: float | None = None, hi: float | None = None) -> None:
    if len(r) != 2 or not all(math.isfinite(v) for v in r) or r[0] > r[1]:
        raise ConfigError(f"AugmentConfig.{name} must be a (low, high) pair with low <= high, got {r!r}")
    if (lo is not None and r[0] < lo) or (hi is not None and r[1] > hi):
        raise ConfigError(f"AugmentConfig.{name}={r!r} must lie within [{lo}, {hi}]")


@dataclass(frozen=True)
class AugmentConfig:
    """Per-sample random augmentation for bright-field lymphocyte crops.

    Defaults are mild and label-preserving for LymphoMNIST's microscope: its relief
    (DIC-like) contrast lights every cell from the same side (brightest rim to the lower
    right in every crop), so a mirror image or a quarter turn shows a cell no crop ever
    shows, and flips and quarter turns are off (on LymphoSim 3.3 turning them off raised the
    tiny student by 0.6-1.5 points at 8 epochs: docs/DESIGN.md). Small rotations stay
    (the relief direction varies by ~8 degrees crop to crop). For isotropic bright-field
    optics, where cells have no preferred orientation, turn them on: ``flip_p=0.5``,
    ``rot90=True``. Cells sit roughly centred (a few pixels of jitter), and their size is a
    cue between classes (so scaling stays within +-5%). Intensity changes mimic
    session-to-session illumination (background grey differs between sessions), slight
    defocus and sensor noise. All intensities are in [0, 1] units.
    """

    #: probability of a horizontal flip, and independently of a vertical flip (0: relief optics).
    flip_p: float = 0.0
    #: rotate by a uniformly drawn multiple of 90 degrees (180 only, for non-square images).
    rot90: bool = False
    #: maximum absolute rotation of the continuous affine part, degrees.
    rotate_deg: float = 15.0
    #: maximum absolute translation, as a fraction of the image side.
    translate: float = 0.0625
    #: isotropic zoom factor range (>1 magnifies the cell).
    scale: tuple[float, float] = (0.95, 1.05)
    #: how the affine part fills pixels pulled from outside the image.
    padding_mode: Literal["border", "reflection", "zeros"] = "reflection"
    #: additive brightness offset range.
    brightness: tuple[float, float] = (-0.1, 0.1)
    #: contrast factor range, applied about each image's mean.
    contrast: tuple[float, float] = (0.8, 1.25)
    #: probability of a gaussian blur, and its sigma range in pixels.
    blur_p: float = 0.2
    blur_sigma: tuple[float, float] = (0.3, 1.0)
    #: gaussian noise standard deviation range (drawn per sample).
    noise_std: tuple[float, float] = (0.0, 0.02)

    def __post_init__(self) -> None:
        # Tuples may arrive as lists from YAML/JSON configs; store hashable tuples.
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, list):
                object.__setattr__(self, f.name, tuple(float(x) for x in v))
        for name in ("flip_p", "blur_p"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ConfigError(f"AugmentConfig.{name} must be a probability in [0, 1], got {p!r}")
        if not 0.0 <= self.rotate_deg <= 180.0:
            raise ConfigError(f"AugmentConfig.rotate_deg must be in [0, 180], got {self.rotate_deg!r}")
        if not 0.0 <= self.translate <= 1.0:
            raise ConfigError(f"AugmentConfig.translate must be in [0, 1], got {self.translate!r}")
        if self.padding_mode not in ("border", "reflection", "zeros"):
            raise ConfigError(
                f"AugmentConfig.padding_mode must be border, reflection or zeros, got {self.padding_mode!r}"
            )
        _check_range("scale", self.scale)
        if self.scale[0] <= 0:
            raise ConfigError(f"AugmentConfig.scale must be positive, got {self.scale!r}")
        _check_range("brightness", self.brightness, -1.0, 1.0)
        _check_range("contrast", self.contrast, 0.0)
        _check_range("blur_sigma", self.blur_sigma, 0.0)
        if self.blur_p > 0 and self.blur_sigma[1] <= 0:
            raise ConfigError("AugmentConfig.blur_sigma must reach above 0 when blur_p > 0")
        _check_range("noise_std", self.noise_std, 0.0)

    @classmethod
    def none(cls) -> AugmentConfig:
        """The identity: every augmentation off (evaluation, or a no-augment baseline)."""
        return cls(
            flip_p=0.0,
            rot90=False,
            rotate_deg=0.0,
            translate=0.0,
            scale=(1.0, 1.0),
            brightness=(0.0, 0.0),
            contrast=(1.0, 1.0),
            blur_p=0.0,
            noise_std=(0.0, 0.0),
        )

    def to_dict(self) -> dict[str, Any]:
        """Every field as plain data (lists for ranges): what a run's config.yaml records."""
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = list(v) if isinstance(v, tuple) else v
        return out

    def replace(self, **changes: object) -> AugmentConfig:
        """A copy with some fields changed (validated)."""
        return replace(self, **changes)  # type: ignore[arg-type]

    @property
    def has_affine(self) -> bool:
        return self.rotate_deg > 0 or self.translate > 0 or self.scale != (1.0, 1.0)

    @property
    def is_identity(self) -> bool:
        return (
            self.flip_p == 0
            and not self.rot90
            and not self.has_affine
            and self.brightness == (0.0, 0.0)
            and self.contrast == (1.0, 1.0)
            and self.blur_p == 0
            and self.noise_std == (0.0, 0.0)
        )


def _uniform(
    n: int, r: tuple[float, float], gen: torch.Generator | None, device: torch.device
) -> torch.Tensor:
    return _rand((n,), gen, device).mul_(r[1] - r[0]).add_(r[0])


def _rand(shape: tuple[int, ...], gen: torch.Generator | None, device: torch.device) -> torch.Tensor:
    # Draw on the generator's own device (CPU unless the caller made a CUDA generator), then
    # move: the same seed gives the same parameters whichever device the batch is on.
    src = gen.device if gen is not None else torch.device("cpu")
    return torch.rand(shape, generator=gen, device=src).to(device)


def _randn(shape: tuple[int, ...], gen: torch.Generator | None, device: torch.device) -> torch.Tensor:
    src = gen.device if gen is not None else torch.device("cpu")
    return torch.randn(shape, generator=gen, device=src).to(device)


def _gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Separable blur of [n,C,H,W] with one sigma per sample ([n]); edges replicated."""
    n, c, h, w = x.shape
    radius = max(1, math.ceil(3.0 * float(sigma.max())))
    offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-0.5 * (offsets[None, :] / sigma[:, None].clamp_min(1e-3)) ** 2)
    k = k / k.sum(dim=1, keepdim=True)  # [n, K]
    # One group per (sample, channel) so each sample convolves with its own kernel.
    k = k.repeat_interleave(c, dim=0)
    y = x.reshape(1, n * c, h, w)
    y = F.conv2d(F.pad(y, (radius, radius, 0, 0), mode="replicate"), k[:, None, None, :], groups=n * c)
    y = F.conv2d(F.pad(y, (0, 0, radius, radius), mode="replicate"), k[:, None, :, None], groups=n * c)
    return y.reshape(n, c, h, w)


class BatchAugment(nn.Module):
    """Vectorised per-sample augmentation of float ``[N, C, H, W]`` batches in [0, 1].

    Order: flips and quarter turns (exact pixel permutations), continuous affine
    (rotation, translation, zoom via ``affine_grid``/``grid_sample``), blur, brightness and
    contrast, noise; the result is clamped to [0, 1]. Parameters are drawn per sample from
    ``generator`` (the global CPU generator if None), in a fixed order, so a seeded
    generator reproduces the batch. uint8 input is accepted and scaled by 1/255.
    """

    def __init__(self, config: AugmentConfig | None = None) -> None:
        super().__init__()
        self.config = config if config is not None else AugmentConfig()

    def extra_repr(self) -> str:
        return repr(self.config)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.ndim != 4:
            raise ValueError(f"expected a [N,C,H,W] tensor, got {getattr(x, 'shape', type(x))}")
        if x.dtype == torch.uint8:
            x = x.to(torch.float32).div_(255.0)
        elif not x.is_floating_point():
            raise TypeError(f"expected float images in [0,1] (or uint8), got {x.dtype}")
        cfg = self.config
        n, _, h, w = x.shape
        if n == 0 or cfg.is_identity:
            return x.clone()
        dev, g = x.device, generator

        if cfg.flip_p > 0:
            fh = _rand((n,), g, dev) < cfg.flip_p
            fv = _rand((n,), g, dev) < cfg.flip_p
            x = torch.where(fh[:, None, None, None], x.flip(-1), x)
            x = torch.where(fv[:, None, None, None], x.flip(-2), x)
        if cfg.rot90:
            # Quarter turns change the shape of non-square images, so those get 0 or 180.
            k = (_rand((n,), g, dev) * 4).long().clamp_(max=3)
            if h != w:
                k = k - (k % 2)
            out = x.clone()
            for q in (1, 2, 3):
                sel = k == q
                if bool(sel.any()):
                    out[sel] = torch.rot90(x[sel], q, dims=(-2, -1))
            x = out
        if cfg.has_affine:
            x = self._affine(x, g)
        if cfg.blur_p > 0:
            do_blur = _rand((n,), g, dev) < cfg.blur_p
            sigma = _uniform(n, cfg.blur_sigma, g, dev)
            idx = do_blur.nonzero().squeeze(1)
            if idx.numel() > 0:
                # Out of place: x may still be the caller's tensor.
                x = x.index_copy(0, idx, _gaussian_blur(x[idx], sigma[idx].to(x.dtype)))
        if cfg.brightness != (0.0, 0.0) or cfg.contrast != (1.0, 1.0):
            b = _uniform(n, cfg.brightness, g, dev).to(x.dtype)[:, None, None, None]
            c = _uniform(n, cfg.contrast, g, dev).to(x.dtype)[:, None, None, None]
            m = x.mean(dim=(1, 2, 3), keepdim=True)
            x = (x - m) * c + m + b
        if cfg.noise_std != (0.0, 0.0):
            s = _uniform(n, cfg.noise_std, g, dev).to(x.dtype)[:, None, None, None]
            x = x + s * _randn(tuple(x.shape), g, dev).to(x.dtype)
        return x.clamp(0.0, 1.0)

    def _affine(self, x: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
        cfg = self.config
        n, _, h, w = x.shape
        dev = x.device
        angle = _uniform(n, (-cfg.rotate_deg, cfg.rotate_deg), g, dev) * (math.pi / 180.0)
        tx = _uniform(n, (-cfg.translate, cfg.translate), g, dev) * 2.0  # normalised coords span 2
        ty = _uniform(n, (-cfg.translate, cfg.translate), g, dev) * 2.0
        s = _uniform(n, cfg.scale, g, dev)
        cos, sin = torch.cos(angle) / s, torch.sin(angle) / s
        # theta maps output to input in normalised coordinates; the h/w factors keep the
        # rotation rigid in pixels when the image is not square.
        theta = torch.stack(
            [
                torch.stack([cos, -sin * (h / w), tx], dim=1),
                torch.stack([sin * (w / h), cos, ty], dim=1),
            ],
            dim=1,
        ).to(x.dtype)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode=cfg.padding_mode, align_corners=False)
