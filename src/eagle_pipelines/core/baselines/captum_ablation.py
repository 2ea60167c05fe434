"""Captum's black-box peer: ``LLMAttribution(FeatureAblation)`` with ``ImageMaskInput`` over EAGLE's superpixels.

Each superpixel is one feature; ablating it paints it black (baseline (0, 0, 0), EAGLE's zero fill; Captum's own
default is white). The attribution of a region is the drop of the target (by default the log-probability, as
Captum computes it) when that region alone is ablated, per answer token (``token_attr``); the explained tokens'
rows are summed (all tokens: Captum's ``seq_attr``). Captum runs the model in sequence mode (one forward pass per
perturbation, the answer teacher-forced; its token-by-token cached mode returns all-zero attributions for Qwen-VL
models) through the family's ``llm_module`` (for Qwen-VL it rebuilds ``mm_token_type_ids`` for the longer
sequence), one perturbed image per call: n_regions + 1 passes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict

from eagle_pipelines.core.baselines.common import check_positions


class CaptumParams(BaseModel):
    """Captum LLMAttribution(FeatureAblation) over EAGLE's superpixels, black baseline."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    attr_target: Literal["log_prob", "prob"] = "log_prob"


def region_attributions(tf, positions: Sequence[int], labels: np.ndarray, attr_target: str = "log_prob"
                        ) -> tuple[np.ndarray, np.ndarray]:
    """(region ids, attribution per region) of the explained tokens from Captum's LLMAttribution."""
    from captum.attr import FeatureAblation, ImageMaskInput, LLMAttribution
    from PIL import Image

    positions = check_positions(tf, positions)
    labels = np.asarray(labels)
    if labels.shape != (tf.height, tf.width):
        raise ValueError(f"the superpixel map is {labels.shape}, the model image is {(tf.height, tf.width)}")
    image = Image.fromarray(np.clip(tf.image.detach().cpu().numpy().round(), 0, 255).astype(np.uint8))
    inp = ImageMaskInput(image=image, mask=torch.as_tensor(labels.astype(np.int64)), baseline=(0, 0, 0),
                         processor_fn=tf.llm_inputs)
    attribution = LLMAttribution(FeatureAblation(tf.llm_module), tf.tokenizer, attr_target=attr_target)
    target = tf.answer_ids[: positions[-1] + 1].detach().cpu()
    with torch.no_grad():
        result = attribution.attribute(inp, target=target, forward_in_tokens=False)
    per_token = result.token_attr.detach().float().cpu().numpy()  # (tokens, features)
    ids = np.array(sorted(inp.mask_id_to_idx, key=inp.mask_id_to_idx.get))
    return ids, per_token[positions].sum(axis=0)


def captum_feature_ablation(tf, positions: Sequence[int], labels: np.ndarray, *, attr_target: str = "log_prob"
                            ) -> np.ndarray:
    """(H, W) float32 map: each superpixel painted with its Captum FeatureAblation attribution."""
    ids, values = region_attributions(tf, positions, labels, attr_target)
    lookup = np.zeros(int(np.max(ids)) + 1, dtype=np.float32)
    lookup[ids] = values
    return lookup[np.asarray(labels)].astype(np.float32)
