"""InternVL3 / InternVL3.5 (the ``-HF`` checkpoints, ``InternVLForConditionalGeneration``; no trust_remote_code).

InternVL's processor can tile an image into up to 12 tiles of 448×448 (the grid closest to the image's aspect)
plus a thumbnail, the whole image resized to one tile. ``max_tiles`` (an adapter option, default 1) sets the most
tiles:

- ``max_tiles=1`` (default): dynamic tiling off, InternVL's single-tile mode. The model sees the image resized to
  one 448×448 tile (256 image tokens); ``model_image`` returns that tile and masked ``pixel_values`` compose
  exactly from pixels. Fine detail that needs tiles is not seen.
- ``max_tiles>1``: ``model_image`` resizes the image to the tile grid's canvas (columns × 448 by rows × 448), so
  the tiles are exact crops of it and compose from pixels; the thumbnail is a resampled copy of the whole masked
  image, so it is made per masked copy by the image processor's own resize (exactly what the processor path
  does, a little slower). The differentiable pass of the baselines needs ``max_tiles=1``.
"""

from __future__ import annotations

import numpy as np
import torch

from eagle_pipelines.models.adapter import TransformersAdapter
from eagle_pipelines.models.processing import ImageTextInternVLProcessor
from eagle_pipelines.models.registry import register_family


@register_family("internvl", model_types=("internvl",))
class InternVLAdapter(TransformersAdapter):
    """InternVL behind ``VisionLanguageModel``; ``max_tiles`` tiles of 448×448 at most (1: no tiling)."""

    processor_class = ImageTextInternVLProcessor
    vision_tokens = ("<IMG_CONTEXT>", "<img>", "</img>", "<video>")

    def __init__(self, model, processor, name: str | None = None, fingerprint: str = "", max_tiles: int = 1,
                 softmax_dtype: str = "float32"):
        super().__init__(model, processor, name=name, fingerprint=fingerprint, softmax_dtype=softmax_dtype)
        if int(max_tiles) < 1:
            raise ValueError(f"max_tiles must be at least 1, got {max_tiles}")
        self.max_tiles = int(max_tiles)
        self.images_kwargs = {"crop_to_patches": self.max_tiles > 1, "max_patches": self.max_tiles}

    @property
    def tile_size(self) -> tuple[int, int]:
        size = self.processor.image_processor.size
        return int(size["height"]), int(size["width"])

    def tile_grid(self, height: int, width: int) -> tuple[int, int]:
        """(columns, rows) of the tiles the processor cuts an image of this size into."""
        if self.max_tiles == 1:
            return 1, 1
        from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import get_optimal_tiled_canvas

        min_tiles = int(getattr(self.processor.image_processor, "min_patches", 1) or 1)
        return get_optimal_tiled_canvas((height, width), self.tile_size, min_tiles, self.max_tiles)

    def model_image(self, image: np.ndarray, resample=None) -> np.ndarray:
        """One tile (``max_tiles=1``) or the tile grid's canvas, resized by the image processor's own resize
        (`resample`: a PIL filter instead of the processor's, for ``source_pixels``)."""
        if self.max_tiles == 1:
            return super().model_image(image, resample=resample)
        th, tw = self.tile_size
        cols, rows = self.tile_grid(*image.shape[:2])
        if image.shape[:2] == (rows * th, cols * tw):
            return np.ascontiguousarray(image)
        out = self.processor.image_processor(
            images=[np.ascontiguousarray(image)], crop_to_patches=False, size={"height": rows * th, "width": cols * tw},
            do_rescale=False, do_normalize=False, return_tensors="np",
            **({} if resample is None else {"resample": resample}))["pixel_values"][0]
        canvas = np.clip(np.rint(out), 0, 255).astype(np.uint8).transpose(1, 2, 0)
        if self.tile_grid(*canvas.shape[:2]) != (cols, rows):  # the processor must cut the canvas the same way
            raise ValueError(f"the canvas {canvas.shape[:2]} tiles differently from the image {image.shape[:2]}")
        return canvas

    def patch_index(self, height: int, width: int) -> np.ndarray:
        """Pixel indices of the tiles, row by row (the thumbnail, resampled, is left to
        ``resampled_pixel_values``)."""
        cols, rows = self.tile_grid(height, width)
        if (cols, rows) == (1, 1):
            return super().patch_index(height, width)
        th, tw = self.tile_size
        if (height, width) != (rows * th, cols * tw):
            raise ValueError(f"a {height}x{width} image is not the {rows}x{cols} tile canvas; pass model_image(image)")
        index = np.arange(height * width, dtype=np.int64).reshape(height, width)
        tiles = [index[r * th:(r + 1) * th, c * tw:(c + 1) * tw] for r in range(rows) for c in range(cols)]
        return np.repeat(np.stack(tiles)[:, None], 3, axis=1)  # (tiles, 3, th, tw)

    def resampled_pixel_values(self, images: np.ndarray) -> torch.Tensor:
        """(B, 1, 3, th, tw) thumbnails of masked canvases: the processor's resize of the whole image to one tile,
        rescaled and normalised (what its tiling appends after the tiles)."""
        out = self.processor.image_processor(images=list(images), crop_to_patches=False, return_tensors="pt")
        return out["pixel_values"].unsqueeze(1)
