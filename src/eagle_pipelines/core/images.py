"""Images as the method takes them: (H, W, 3) uint8 RGB arrays, from whatever a user hands over.

Conversions are exact or refused, never silently lossy:

- 8-bit images are taken as they are. 16-bit images (PNG/TIFF modes ``I;16*``, uint16 arrays) are scaled by the
  full range of their type, ``round(v * 255 / 65535)``: a 16-bit sample means v/65535 of full intensity whatever
  the image holds, so two exposures of one scene keep their relative brightness (scaling by an image's own
  maximum would stretch a dark image to full brightness). PIL's 32-bit integer mode ``I`` is how it holds 16-bit
  samples, so it is scaled the same way when its values lie within 0–65535 and refused otherwise.
- Float images (TIFF mode ``F``, float arrays) must be finite and within [0, 1]; NaN or infinite values (an
  all-NaN image would otherwise turn black) are refused with their count.
- Files: a directory, a broken link, a symbolic-link loop, a file PIL cannot decode (truncated, not an image) and
  a decompression bomb (more than ``PIL.Image.MAX_IMAGE_PIXELS`` pixels, about 89 million by default: PIL's
  warning and its error are both refused; raise the limit to accept a genuinely huge image) are ValueErrors
  (FileNotFoundError for a missing file) that name the file and the reason.
- EXIF orientation is applied (``PIL.ImageOps.exif_transpose``): a phone photo stored sideways with an
  orientation tag is taken upright, as every viewer shows it.
- ``check_size``: an image with a side below ``MIN_SIDE`` pixels is refused by ``explain`` instead of being
  silently upscaled to the model's resolution.
- ``SourceImage``: an image file of a dataset you supply (a COCO-format folder, MMVP, RePOPE), read only when used:
  a split keeps its bytes as they are (``io/split_dataset.py``) and decodes them here, so one damaged file is named
  when its item is reached instead of aborting the run.

Every path that takes an image decodes it here: ``eagle-explain``, ``explain()``, the splits of COCO folders,
reference lists, MMVP and RePOPE, and video frames.
"""

from __future__ import annotations

import errno
import io
import os
import warnings
from pathlib import Path

from dataclasses import dataclass
from typing import Any

import numpy as np


class ImageError(ValueError):
    """An image that is refused, with the reason (a ValueError)."""


EXPECTED = "an (H, W, 3) uint8 RGB array, an (H, W) grey array, a PIL image or an image file path"
#: the smallest side (pixels) an explained image may have: one vision-transformer patch of every supported family
#: (Qwen-VL, LLaVA and InternVL all cut 14x14 patches). A smaller image does not fill a single patch: whatever the
#: model sees of it is invented by upscaling.
MIN_SIDE = 14


def file_problem(path: Path) -> str | None:
    """Why `path` is not a readable regular file (a directory, a broken link, a symbolic-link loop, missing,
    unreadable, not a regular file), or None when it is one."""
    try:
        info = path.stat()
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "is a symbolic-link loop"
        if path.is_symlink():
            return f"is a broken symbolic link (to '{os.readlink(path)}', which does not exist)"
        if exc.errno == errno.ENOENT:
            return "does not exist"
        return f"cannot be read ({exc.strerror or exc})"
    import stat

    if stat.S_ISDIR(info.st_mode):
        return "is a directory, not an image file"
    if not stat.S_ISREG(info.st_mode):
        return "is not a regular file (a device, pipe or socket)"
    if not os.access(path, os.R_OK):
        return "cannot be read (permission denied)"
    return None


def read_image(path: str | os.PathLike, data: bytes | None = None) -> np.ndarray:
    """The image file at `path` (or its bytes `data`, already read) as an (H, W, 3) uint8 RGB array; every
    problem is a ValueError (FileNotFoundError when the file does not exist) naming the file and the reason."""
    from PIL import Image

    path = Path(path)
    if data is None:
        problem = file_problem(path)
        if problem == "does not exist":
            raise FileNotFoundError(f"image file '{path}' does not exist")
        if problem:
            raise ImageError(f"'{path}' {problem}")
    if (len(data) if data is not None else path.stat().st_size) == 0:
        raise ImageError(f"'{path}' cannot be read as an image (the file is empty, 0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data) if data is not None else path) as opened:
                opened.load()
                return _from_pil(opened)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"'{path}' is refused as a possible decompression bomb ({exc}); set "
                         f"PIL.Image.MAX_IMAGE_PIXELS higher to read a genuinely huge image") from None
    except ImageError as exc:  # decoded, but refused by the conversion rules
        raise ImageError(f"'{path}': {exc}") from None
    except Image.UnidentifiedImageError:
        raise ImageError(f"'{path}' cannot be read as an image (not an image format PIL can identify)") from None
    except MemoryError:
        raise ImageError(f"'{path}' cannot be read as an image (it does not fit in memory)") from None
    except Exception as exc:  # noqa: BLE001 - PIL's decoders raise OSError, SyntaxError, struct.error, EOFError...
        raise ImageError(f"'{path}' cannot be read as an image ({type(exc).__name__}: {exc})") from None


def _from_pil(image) -> np.ndarray:
    """A PIL image as (H, W, 3) uint8, turned upright by its EXIF orientation: 16-bit and float modes through the
    array rules (scaled or refused, not clipped as PIL's ``convert("RGB")`` would), palette transparency through
    RGBA, the rest (CMYK, LA, RGBA, YCbCr...) by PIL."""
    from PIL import ImageOps

    image = ImageOps.exif_transpose(image)
    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        array = np.asarray(image)
        if image.mode.startswith("I;16"):
            array = array.astype(np.uint16)
        elif image.mode == "I":
            low, high = int(array.min()), int(array.max())
            if low < 0 or high > 65535:
                raise ImageError(f"a 32-bit integer image with values in [{low}, {high}] has no known range "
                                 f"(16-bit samples, 0-65535, are scaled to 8 bits); convert it to 8 or 16 bits")
            array = array.astype(np.uint16)
        return as_rgb(array)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    return np.asarray(image.convert("RGB"))


def as_rgb(image) -> np.ndarray:
    """`image` as an (H, W, 3) uint8 RGB array. Takes a NumPy array (uint8 0–255; uint16 scaled by 255/65535;
    other integers within 0–255; floats within [0, 1], finite; grey (H, W) or (H, W, 1) repeated to three
    channels; an alpha channel dropped), a PIL image (any mode; 16-bit and float modes as their arrays) or the
    path of an image file (``read_image``). Anything else is a ValueError that says what was given and what is
    expected."""
    from PIL import Image

    if isinstance(image, (str, os.PathLike)):
        return read_image(image)
    if isinstance(image, Image.Image):
        return _from_pil(image)
    try:
        array = np.asarray(image)
    except Exception:  # noqa: BLE001 - anything NumPy cannot take is simply not an image
        array = np.asarray(None, dtype=object)
    if array.dtype == object or array.ndim not in (2, 3):
        raise ImageError(f"expected {EXPECTED}; got {type(image).__name__} of shape {getattr(array, 'shape', '?')}")
    if array.ndim == 3 and array.shape[2] == 4:
        array = array[..., :3]
    elif array.ndim == 3 and array.shape[2] not in (1, 3):
        raise ImageError(f"expected {EXPECTED}; got an array of shape {array.shape} ({array.shape[2]} channels)")
    if min(array.shape[:2]) == 0:
        raise ImageError(f"the image is empty (shape {array.shape})")
    if np.issubdtype(array.dtype, np.floating):
        finite = np.isfinite(array)
        if not finite.all():
            bad = int((~finite).sum())
            what = "every value is" if bad == array.size else f"{bad} of {array.size} values are"
            raise ImageError(f"a float image must hold finite values in [0, 1]; in this one {what} NaN or "
                             f"infinite")
    if array.ndim == 2 or array.shape[2] == 1:
        array = np.repeat(array.reshape(*array.shape[:2], 1), 3, axis=2)
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    if array.dtype == np.uint16:  # the full range of the type: 65535 is full intensity
        return np.rint(array.astype(np.float64) * (255 / 65535)).astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        low, high = array.min(), array.max()
        if not (low >= 0 and high <= 1):
            raise ImageError(f"a float image must hold values in [0, 1]; this one spans [{low:g}, {high:g}] "
                             f"(for 0-255 values, divide by 255 or pass uint8)")
        return np.rint(array * 255).astype(np.uint8)
    low, high = (array.min(), array.max()) if array.dtype != bool else (0, 1)
    if np.issubdtype(array.dtype, np.integer) and low >= 0 and high <= 255:
        return array.astype(np.uint8)
    raise ImageError(f"expected {EXPECTED}; got dtype {array.dtype} with values in [{low}, {high}]")


def upright_size(width: int, height: int, orientation: int | None) -> tuple[int, int]:
    """(width, height) of an image once its EXIF orientation is applied: orientations 5-8 turn it by 90 degrees."""
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


@dataclass(frozen=True)
class SourceImage:
    """An image file of a dataset you supply, read only when used. ``name`` is its file name (a split keeps it),
    ``read_bytes()`` its bytes as they are, ``pixels()`` (or calling it, like a ``PartitionedDataset`` loader)
    decodes them with ``read_image``, ``size()`` reads the header only. Every problem is an ``ImageError`` naming
    the file (a directory, a broken link, unreadable, not an image...)."""

    path: str
    fs: Any = None  # an fsspec filesystem for a remote folder; None: a local file

    @property
    def name(self) -> str:
        return self.path.replace("\\", "/").rsplit("/", 1)[-1]

    def read_bytes(self) -> bytes:
        if self.fs is None:
            problem = file_problem(Path(self.path))
            if problem:
                raise ImageError(f"'{self.path}' {problem}")
        try:
            return Path(self.path).read_bytes() if self.fs is None else self.fs.cat_file(self.path)
        except OSError as exc:
            raise ImageError(f"'{self.path}' cannot be read ({exc.strerror or exc})") from None

    def pixels(self) -> np.ndarray:
        return read_image(self.path, data=self.read_bytes())

    __call__ = pixels

    def size(self) -> tuple[int, int]:
        """(width, height) as ``read_image`` gives the image (EXIF orientation applied), from the header only."""
        from PIL import Image

        data = self.read_bytes()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # refused when decoded
                with Image.open(io.BytesIO(data)) as opened:
                    return upright_size(*opened.size, opened.getexif().get(0x0112))
        except Exception as exc:  # noqa: BLE001 - whatever PIL raises, the header is unreadable
            raise ImageError(f"'{self.path}' cannot be read as an image ({type(exc).__name__}: {exc})") from None


def check_size(image: np.ndarray, min_side: int = MIN_SIDE) -> None:
    """Refuses an image with a side below `min_side` pixels (``MIN_SIDE``), naming its size: the model would
    only see an upscaled blur of it."""
    h, w = image.shape[:2]
    if min(h, w) < min_side:
        raise ImageError(f"the image is {w}x{h} pixels, too small to explain: each side must be at least "
                         f"{min_side} pixels (one vision patch); it would only be upscaled to the model's resolution")
