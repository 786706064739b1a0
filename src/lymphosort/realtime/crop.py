"""Crops around detected cells and their conversion to a model's input, in numpy.

A crop is the dataset's 64x64 at native pixel scale (LymphoSim crops and flow frames share
optics and pixel scale), centred on the detection as the dataset centres its cells (centre
at (size-1)/2). Where the window leaves the frame (cells near the channel walls in a
96-px strip), the border rows/columns are repeated: the frame's outer rows are background
beyond the wall, so this looks like the dataset's crops, not like black padding.

`Preprocessor` reproduces `data.transforms.to_model_input` (uint8/255, the centred field of
view when the model has one, antialiased bilinear resize, (x - mean)/std) without torch: the resize is linear and separable, so it is
one matrix per axis, measured once from `to_model_input` itself. That keeps torch (and its
per-call overhead, tens of microseconds) out of the ONNX and hls per-frame paths.
"""

from __future__ import annotations

import numpy as np

from lymphosort.data.transforms import center_window, resize_matrix

__all__ = ["CROP_SIZE", "Preprocessor", "crop_cells"]

CROP_SIZE = 64


def crop_cells(image: np.ndarray, centers: list[tuple[float, float]] | np.ndarray, size: int = CROP_SIZE) -> np.ndarray:
    """uint8 [N, size, size] windows of `image` centred on (x, y) centres (edge-replicated)."""
    h, w = image.shape
    out = np.empty((len(centers), size, size), dtype=np.uint8)
    half = (size - 1) / 2
    for i, (cx, cy) in enumerate(centers):
        x0, y0 = int(round(cx - half)), int(round(cy - half))
        if 0 <= x0 and x0 + size <= w and 0 <= y0 and y0 + size <= h:
            out[i] = image[y0:y0 + size, x0:x0 + size]
            continue
        # copy the part inside the frame, then repeat its outermost rows / columns outwards
        ya, yb = min(max(0, y0), h - 1), max(min(h, y0 + size), 1)
        xa, xb = min(max(0, x0), w - 1), max(min(w, x0 + size), 1)
        ra, rb = ya - y0, ya - y0 + (yb - ya)  # rows of `out` the frame covers
        ca, cb = xa - x0, xa - x0 + (xb - xa)
        o = out[i]
        o[max(0, ra):min(size, rb), max(0, ca):min(size, cb)] = image[
            ya + max(0, -ra):yb - max(0, rb - size), xa + max(0, -ca):xb - max(0, cb - size)]
        ra, rb, ca, cb = max(0, ra), min(size, rb), max(0, ca), min(size, cb)
        if ca > 0:
            o[ra:rb, :ca] = o[ra:rb, ca:ca + 1]
        if cb < size:
            o[ra:rb, cb:] = o[ra:rb, cb - 1:cb]
        if ra > 0:
            o[:ra] = o[ra]
        if rb < size:
            o[rb:] = o[rb - 1]
    return out


class Preprocessor:
    """uint8 [N, S0, S0] crops -> float32 [N, 1, size, size] as `to_model_input` makes them.

    (A x A^T) / (255 std) - mean/std with the scale folded into the left matrix: three numpy
    calls per batch (each costs ~1-2 us, whatever the batch of a frame)."""

    def __init__(self, size: int, mean: float, std: float, crop_size: int = CROP_SIZE, fov: int | None = None) -> None:
        self.size, self.mean, self.std, self.crop_size = int(size), float(mean), float(std), int(crop_size)
        self.fov = None if fov is None else int(fov)
        if self.fov is not None and not 1 <= self.fov <= self.crop_size:
            raise ValueError(f"field of view {self.fov} does not fit a {self.crop_size}-px crop")
        side = self.fov or self.crop_size
        self._scale = np.float32(1.0 / (255.0 * self.std))
        self._offset = np.float32(self.mean / self.std)
        self._left = self._right = None  # no resize at the native size
        if self.size != side:
            a = resize_matrix(side, self.size)
            self._left, self._right = (a * self._scale).astype(np.float32), np.ascontiguousarray(a.T)

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        if crops.ndim != 3 or crops.shape[1:] != (self.crop_size, self.crop_size):
            raise ValueError(f"expected uint8 [N, {self.crop_size}, {self.crop_size}] crops, got {crops.shape}")
        if self.fov is not None:
            crops = center_window(crops, self.fov)  # the dataset path's own window (a view)
        x = crops.astype(np.float32)
        if self._left is None:
            x *= self._scale
        else:
            x = self._left @ x @ self._right  # batched: [s, S0] @ [N, S0, S0] @ [S0, s]
        x -= self._offset
        return x.reshape(len(crops), 1, self.size, self.size)
