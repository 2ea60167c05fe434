"""Where the pixels of the image a model sees come from in the photo (resizes, centre crops, padding).

A model's image processor resizes, crops or pads the photo before the model sees it (LLaVA-1.5: shortest edge to
336, then a 336×336 centre crop; Qwen-VL: a resize to multiples of 28; InternVL: a resize to its tile canvas).
Ground truth given in photo pixels (COCO boxes and masks) must go through the same transform, or an object cut
off by a crop lands, squashed, inside the model image. ``PhotoGrid`` holds the transform as the processor applies
it, read off the processor itself (``models/adapter.py: source_pixels``): for each row and column of the model
image, the photo row and column it is sampled from, or -1 where the processor pads. Every such transform is
separable (one source row per model row, one source column per model column), which ``from_source`` checks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PhotoGrid:
    """``rows`` (H',) and ``cols`` (W',): the photo row / column of each model-image row / column (nearest
    sample), -1 where the processor pads; ``photo_shape``: the photo's (h, w)."""

    photo_shape: tuple[int, int]
    rows: np.ndarray
    cols: np.ndarray

    @property
    def model_shape(self) -> tuple[int, int]:
        return len(self.rows), len(self.cols)

    @classmethod
    def identity(cls, shape: tuple[int, int]) -> PhotoGrid:
        """The model sees the photo as it is (or the working image *is* the photo: ``compose: processor``)."""
        h, w = int(shape[0]), int(shape[1])
        return cls((h, w), np.arange(h), np.arange(w))

    @classmethod
    def from_source(cls, source: np.ndarray, photo_shape: tuple[int, int]) -> PhotoGrid:
        """From (H', W') flat photo-pixel indices (-1: padding), as ``source_pixels`` reads them off a processor.
        Raises ValueError when the transform is not separable (it would not map boxes to boxes)."""
        h, w = int(photo_shape[0]), int(photo_shape[1])
        source = np.asarray(source, dtype=np.int64)
        valid = source >= 0
        if not valid.any():
            raise ValueError("the processor's image holds no pixel of the photo")
        src_rows = np.where(valid, source // w, -1)
        src_cols = np.where(valid, source % w, -1)
        rows = np.array([r[v][0] if v.any() else -1 for r, v in zip(src_rows, valid)], dtype=np.int64)
        cols = np.array([c[v][0] if v.any() else -1 for c, v in zip(src_cols.T, valid.T)], dtype=np.int64)
        expected = (rows[:, None] >= 0) & (cols[None, :] >= 0)
        rebuilt = np.where(expected, rows[:, None] * w + cols[None, :], -1)
        if not np.array_equal(rebuilt, source):
            raise ValueError("the processor's resampling is not separable by rows and columns; ground truth cannot "
                             "be carried onto its image exactly")
        if rows.max() >= h or cols.max() >= w:
            raise ValueError(f"source pixels beyond the {h}x{w} photo")
        return cls((h, w), rows, cols)

    def is_identity(self) -> bool:
        h, w = self.photo_shape
        return (self.model_shape == (h, w) and np.array_equal(self.rows, np.arange(h))
                and np.array_equal(self.cols, np.arange(w)))

    # -- photo -> model image ------------------------------------------------------------------------------------
    def to_model(self, photo_mask: np.ndarray) -> np.ndarray:
        """A boolean photo mask as the model sees it (padding and cropped-off parts False)."""
        mask = np.asarray(photo_mask, dtype=bool)
        if mask.shape != self.photo_shape:
            raise ValueError(f"mask {mask.shape} is not of the photo's size {self.photo_shape}")
        out = mask[np.clip(self.rows, 0, None)][:, np.clip(self.cols, 0, None)]
        return out & (self.rows[:, None] >= 0) & (self.cols[None, :] >= 0)

    def box_mask(self, bbox) -> np.ndarray:
        """A COCO box [x, y, w, h] in photo pixels as a model-image mask: the photo pixels the box touches
        (rows floor(y)..ceil(y + h), as Point Game reads a box), carried through the transform."""
        h, w = self.photo_shape
        x, y, bw, bh = (float(v) for v in bbox)
        mask = np.zeros((h, w), dtype=bool)
        mask[max(0, int(np.floor(y))):int(np.ceil(y + bh)), max(0, int(np.floor(x))):int(np.ceil(x + bw))] = True
        return self.to_model(mask)

    # -- model image -> photo ------------------------------------------------------------------------------------
    def to_photo(self, model_map: np.ndarray, fill: float | None = None) -> np.ndarray:
        """A model-image map at the photo's resolution: each photo pixel takes the value of the model pixel
        sampled nearest to it; photo pixels the model does not see (cropped off) get `fill` (default: the map's
        minimum, so they never win a Point Game or rank first)."""
        values = np.asarray(model_map)
        if values.shape != self.model_shape:
            raise ValueError(f"map {values.shape} is not of the model image's size {self.model_shape}")
        fill = float(values.min()) if fill is None else fill
        row_of, row_seen = _nearest(self.rows, self.photo_shape[0])
        col_of, col_seen = _nearest(self.cols, self.photo_shape[1])
        out = values[row_of][:, col_of].astype(np.float32)
        out[~(row_seen[:, None] & col_seen[None, :])] = fill
        return out


def _nearest(sources: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """For each photo index 0..size-1, the model index whose source is nearest, and whether the model image covers
    it (within half a sampling step of the first and last sampled source)."""
    model_idx = np.flatnonzero(sources >= 0)
    src = sources[model_idx].astype(np.float64)
    order = np.argsort(src, kind="stable")
    model_idx, src = model_idx[order], src[order]
    target = np.arange(size, dtype=np.float64)
    pos = np.clip(np.searchsorted(src, target), 1, max(1, len(src) - 1))
    lo, hi = src[pos - 1], src[np.minimum(pos, len(src) - 1)]
    pick = np.where(np.abs(target - lo) <= np.abs(hi - target), pos - 1, np.minimum(pos, len(src) - 1))
    step = float(np.median(np.diff(src))) if len(src) > 1 else 1.0
    half = max(step, 1.0) / 2
    seen = (target >= src[0] - half) & (target <= src[-1] + half)
    return model_idx[pick], seen


def working_image(model, photo: np.ndarray, compose: str) -> np.ndarray:
    """The image regions, masks and maps live on: the one the model sees (``compose: pixel_values``, the model's
    ``model_image``) or the photo itself, resized by the processor after masking (``compose: processor``, the
    reference's protocol)."""
    return photo if compose == "processor" else model.model_image(photo)


def photo_grid(model, photo_shape: tuple[int, int], compose: str) -> PhotoGrid:
    """How photo pixels land on the working image: the model processor's own resize, crop and padding (the
    model's ``photo_grid``), or the identity when the working image is the photo."""
    if compose == "processor":
        return PhotoGrid.identity(photo_shape)
    if hasattr(model, "photo_grid"):
        return model.photo_grid(*photo_shape)
    raise TypeError(f"the model '{model.name}' does not say how its processor maps a photo (photo_grid); "
                    "set superpixels.compose: processor to work on the photo itself")
