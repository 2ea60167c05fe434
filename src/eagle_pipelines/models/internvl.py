"""InternVL3 / InternVL3.5 (the ``-HF`` checkpoints, ``InternVLForConditionalGeneration``; no trust_remote_code).

InternVL's processor tiles an image into up to 12 tiles of 448×448 plus a thumbnail (the whole image resized to
one tile). The thumbnail is a resampled copy, so a mask on the image has no exact counterpart in it; this adapter
therefore turns the dynamic tiling off (``crop_to_patches=False``): the model sees the image resized to one
448×448 tile (256 image tokens), ``model_image`` returns that tile, and masked ``pixel_values`` compose exactly.
This is InternVL's own single-tile mode (``max_num=1`` in its chat scripts); fine detail that needs tiles is
not seen.
"""

from __future__ import annotations

from eagle_pipelines.models.adapter import TransformersAdapter
from eagle_pipelines.models.processing import ImageTextInternVLProcessor
from eagle_pipelines.models.registry import register_family


@register_family("internvl", model_types=("internvl",))
class InternVLAdapter(TransformersAdapter):
    """InternVL behind ``VisionLanguageModel``, one 448×448 tile per image."""

    processor_class = ImageTextInternVLProcessor
    vision_tokens = ("<IMG_CONTEXT>", "<img>", "</img>", "<video>")
    images_kwargs = {"crop_to_patches": False}
