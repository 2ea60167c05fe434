"""Images as the method takes them: (H, W, 3) uint8 RGB arrays, from whatever a user hands over."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

EXPECTED = "an (H, W, 3) uint8 RGB array, an (H, W) grey array, a PIL image or an image file path"


def as_rgb(image) -> np.ndarray:
    """`image` as an (H, W, 3) uint8 RGB array. Takes a NumPy array (uint8 0–255, other integers within 0–255,
    floats within [0, 1]; grey (H, W) or (H, W, 1) repeated to three channels; an alpha channel dropped), a PIL
    image (any mode PIL converts to RGB) or the path of an image file. Anything else is a ValueError that says
    what was given and what is expected."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.is_file():
            raise FileNotFoundError(f"image file '{path}' does not exist")
        try:
            with Image.open(path) as opened:
                return np.asarray(opened.convert("RGB"))
        except (OSError, UnidentifiedImageError) as exc:
            raise ValueError(f"'{path}' cannot be read as an image ({exc})") from None
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    try:
        array = np.asarray(image)
    except Exception:  # noqa: BLE001 - anything NumPy cannot take is simply not an image
        array = np.asarray(None, dtype=object)
    if array.dtype == object or array.ndim not in (2, 3):
        raise ValueError(f"expected {EXPECTED}; got {type(image).__name__} of shape {getattr(array, 'shape', '?')}")
    if array.ndim == 2 or array.shape[2] == 1:
        array = np.repeat(array.reshape(*array.shape[:2], 1), 3, axis=2)
    elif array.shape[2] == 4:
        array = array[..., :3]
    elif array.shape[2] != 3:
        raise ValueError(f"expected {EXPECTED}; got an array of shape {array.shape} ({array.shape[2]} channels)")
    if min(array.shape[:2]) == 0:
        raise ValueError(f"the image is empty (shape {array.shape})")
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    low, high = (array.min(), array.max()) if array.dtype != bool else (0, 1)
    if np.issubdtype(array.dtype, np.floating):
        if not (np.isfinite(array).all() and low >= 0 and high <= 1):
            raise ValueError(f"a float image must hold values in [0, 1]; this one spans [{low:g}, {high:g}] "
                             f"(for 0-255 values, divide by 255 or pass uint8)")
        return np.rint(array * 255).astype(np.uint8)
    if np.issubdtype(array.dtype, np.integer) and low >= 0 and high <= 255:
        return array.astype(np.uint8)
    raise ValueError(f"expected {EXPECTED}; got dtype {array.dtype} with values in [{low}, {high}]")
