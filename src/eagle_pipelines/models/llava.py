"""LLaVA-1.5 (the llava-hf checkpoints, ``LlavaForConditionalGeneration``).

The CLIP image processor resizes the shortest edge and centre-crops (336×336 for LLaVA-1.5; ``do_pad`` checkpoints
pad to a square first): ``model_image`` returns that crop, so masks and superpixels cover exactly the pixels the
model sees, and the processor then only rescales and normalises per pixel (masked ``pixel_values`` compose
exactly). The parts of the photo outside the crop are not seen by the model and are not explained.
"""

from __future__ import annotations

from transformers import LlavaProcessor

from eagle_pipelines.models.adapter import TransformersAdapter
from eagle_pipelines.models.registry import register_family


@register_family("llava", model_types=("llava",))
class LlavaAdapter(TransformersAdapter):
    """LLaVA-1.5 behind ``VisionLanguageModel``; everything else is ``TransformersAdapter``'s."""

    processor_class = LlavaProcessor
    vision_tokens = ("<image>",)
