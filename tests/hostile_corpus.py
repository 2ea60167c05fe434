"""A hostile corpus of image inputs, built in a test's temporary folder: what a user's photo folder may hold.

``build(folder)`` writes every case and returns them; each ``Case`` says what must happen to it, alone or in a
folder run, through ``eagle-explain`` and through ``explain()``: ``ok`` (an Attribution of exactly this image),
``error`` (a one-line error naming the file with `reason` in it; ``api_reason``/``alone_reason`` where the API or a
run given only this path says it differently) or ``skipped`` (a folder entry that is not a file, named with its
reason). ``pixels`` is what an ``ok`` case decodes to where plain PIL would decode it otherwise (16-bit scaled, float
scaled); ``stage: model`` marks a case refused only when it is brought to the model's resolution (decoding takes
it). tests/hostile/test_hostile_images.py runs the same corpus through every path that decodes an image.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

COLOURS = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (50, 90, 230), "yellow": (230, 210, 40)}


@dataclass
class Case:
    name: str  # the file name (str; a name that is not UTF-8 holds surrogates)
    kind: str  # ok | error | skipped
    reason: str = ""  # in the error line of a folder run (and of the others unless they say otherwise)
    api_reason: str | None = None  # in explain()'s ValueError, when different
    alone_reason: str | None = None  # in the error of `eagle-explain <this path>`, when different
    note: str = ""
    pixels: np.ndarray | None = None  # the expected decoded pixels where they differ from PIL's plain decoding
    stage: str = "decode"  # decode | model (refused only at the model's resolution)

    def path(self, folder: Path) -> Path:
        return folder / self.name


def shapes_image(index: int) -> np.ndarray:
    """The `index`-th image of the embedded shapes benchmark (112x112 RGB, coloured shapes)."""
    from eagle_pipelines.data.params import ShapesParams
    from eagle_pipelines.data.shapes import generate_image

    return generate_image(ShapesParams(colours=COLOURS), "eval", index)[0]


def png_header(width: int, height: int) -> bytes:
    """A valid PNG signature, IHDR of `width` x `height` RGB and IEND, no pixel data: a decompression bomb's
    promise."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) \
        + chunk(b"IEND", b"")


def build(folder: Path) -> list[Case]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    cases: list[Case] = []

    def image(name: str, array, note: str = "", **save) -> None:
        picture = array if isinstance(array, Image.Image) else Image.fromarray(array)
        kind = {"jpg": "JPEG", "tif": "TIFF"}.get(name.rsplit(".", 1)[-1], name.rsplit(".", 1)[-1].upper())
        picture.save(folder / name, format=kind, **save)  # by name: PIL takes no format from "..png"
        cases.append(Case(name, "ok", note=note))

    def bad(name: str, data: bytes | None, reason: str, **kw) -> None:
        if data is not None:
            (folder / name).write_bytes(data)
        cases.append(Case(name, "error", reason, **kw))

    image("photo.2024.01.png", shapes_image(1), "name with dots: must not share photo.2024.02's output")
    image("photo.2024.02.png", shapes_image(2), "name with dots")
    image("shapes.png", shapes_image(3), "same stem as shapes.jpg")
    image("shapes.jpg", shapes_image(4), "same stem as shapes.png", quality=95)
    image("..png", shapes_image(5), "would write outside --out with Path.with_suffix")
    image("фото.png", shapes_image(6), "non-ASCII name")
    image("写真.png", shapes_image(7), "non-ASCII name")
    image(os.fsdecode(b"bytes\xff\xfe.png"), shapes_image(8), "a name that is not UTF-8")
    grey16 = (shapes_image(9).mean(axis=2).round().astype(np.uint16) * 257)  # 16-bit, full range
    image("sixteen_bit.png", Image.fromarray(grey16), "16-bit grey (I;16): scaled, not clipped at 255")
    cases[-1].pixels = np.repeat(shapes_image(9).mean(axis=2).round().astype(np.uint8)[..., None], 3, axis=2)
    image("float_unit.tif", Image.fromarray(shapes_image(10)[..., 0].astype(np.float32) / 255),
          "float TIFF (mode F) in [0, 1]")
    cases[-1].pixels = np.repeat(shapes_image(10)[..., :1], 3, axis=2)
    image("cmyk.jpg", Image.fromarray(shapes_image(11)).convert("CMYK"), "CMYK JPEG")
    palette = Image.fromarray(shapes_image(12)).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    palette.info["transparency"] = 0
    image("palette_transparent.png", palette, "palette with a transparent colour", transparency=0)
    image("grey.png", Image.fromarray(shapes_image(13)).convert("L"), "8-bit grey")
    image("grey_alpha.png", Image.fromarray(shapes_image(14)).convert("LA"), "grey with alpha")
    image("palette.png", Image.fromarray(shapes_image(18)).convert("P", palette=Image.Palette.ADAPTIVE, colors=16),
          "palette without transparency")
    rgba = np.dstack([shapes_image(19), np.full((112, 112), 90, np.uint8)])
    image("rgba.png", Image.fromarray(rgba), "RGBA: the alpha channel is dropped")
    cases[-1].pixels = shapes_image(19)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: "turn 90 degrees clockwise to view"
    sideways = np.ascontiguousarray(np.rot90(shapes_image(20)[:, :80]))  # 80 x 112 stored, 112 x 80 upright
    image("exif_rotated.jpg", sideways, "a phone photo: EXIF orientation 6 turns it upright", exif=exif.tobytes(),
          quality=95)
    frames = [Image.fromarray(shapes_image(15)), Image.fromarray(shapes_image(16))]
    frames[0].save(folder / "animated.gif", save_all=True, append_images=frames[1:])
    cases.append(Case("animated.gif", "ok", note="two frames: the first is explained"))

    Image.fromarray(np.full((24, 24), np.nan, np.float32)).save(folder / "all_nan.tif")
    cases.append(Case("all_nan.tif", "error", "every value is NaN or infinite"))
    Image.fromarray(np.array([[-5, 70000]] * 20, np.int32).repeat(10, axis=1)).save(folder / "int32_range.tif")
    cases.append(Case("int32_range.tif", "error", "has no known range"))
    image_1x1 = Image.fromarray(np.full((1, 1, 3), 200, np.uint8))
    image_1x1.save(folder / "one_pixel.png")
    cases.append(Case("one_pixel.png", "error", "1x1 pixels, too small"))
    Image.fromarray(shapes_image(17)).save(folder / "full.png")
    whole = (folder / "full.png").read_bytes()
    (folder / "full.png").unlink()
    bad("truncated.png", whole[: len(whole) // 3], "cannot be read as an image")
    bad("bomb.png", png_header(60000, 60000), "decompression bomb")
    bad("zero_bytes.png", b"", "the file is empty")
    bad("text.png", b"this is a text file, not a picture\n", "not an image format PIL can identify")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (16, 4000, 3), dtype=np.uint8)).save(
        folder / "huge_aspect.png")
    cases.append(Case("huge_aspect.png", "error", "4000x16 image cannot be brought to the model's resolution",
                      stage="model"))
    Image.fromarray(shapes_image(21)).save(folder / "no_permission.png")
    os.chmod(folder / "no_permission.png", 0)
    if os.access(folder / "no_permission.png", os.R_OK):  # root (with its override) reads any file: no case
        (folder / "no_permission.png").unlink()
    else:
        cases.append(Case("no_permission.png", "error", "permission denied"))

    (folder / "dir.png").mkdir()
    cases.append(Case("dir.png", "skipped", "is a directory", alone_reason="no image files"))
    os.symlink("loop.png", folder / "loop.png")
    cases.append(Case("loop.png", "error", "is a symbolic-link loop"))
    os.symlink("nowhere.png", folder / "broken_link.png")
    cases.append(Case("broken_link.png", "error", "is a broken symbolic link"))
    return cases
