"""TAM, the Token Activation Map (Li et al., ICCV 2025).

One teacher-forced pass; the LM head (final norm + lm_head) is applied to the last layer's hidden states. For an
explained answer token of class c, its raw map is ReLU(logit_c) at each image token. Estimated causal inference
removes what earlier text tokens (the prompt's words and the earlier answer tokens, except repeats of the same
token) explain: each earlier token i has its own raw map M_i (for its own class) and a weight ReLU(logit_c) at
its position; the weighted mean of the M_i, scaled by least squares to the raw map, is subtracted (then ReLU).
The map is min-max normalised together with the earlier tokens' scores, and a rank-based Gaussian filter (the
sorted values of each k × k window weighted by a Gaussian over rank whose width is the window's coefficient of
variation) denoises it on the token grid. Several explained tokens: the mean of their maps. Resized to the image.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, field_validator

from eagle_pipelines.core.baselines.common import check_positions, grid_to_image


class TamParams(BaseModel):
    """Token Activation Map."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kernel_size: PositiveInt = Field(default=3, description="rank Gaussian filter window (odd)")
    causal_inference: bool = Field(default=True, description="remove earlier tokens' interference (ECI)")

    @field_validator("kernel_size")
    @classmethod
    def _odd(cls, value: int) -> int:
        if value % 2 == 0:
            raise ValueError(f"must be odd, got {value}")
        return value


def rank_gaussian_filter(grid: np.ndarray, kernel_size: int = 3) -> np.ndarray:
    """TAM's rank Gaussian filter of an (h, w) map (reflect padding, odd `kernel_size`)."""
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd and positive, got {kernel_size}")
    grid = np.asarray(grid, dtype=np.float64)
    pad = kernel_size // 2
    mode = "reflect" if min(grid.shape) > pad else "edge"
    windows = np.lib.stride_tricks.sliding_window_view(np.pad(grid, pad, mode=mode), (kernel_size, kernel_size))
    values = np.sort(windows.reshape(*grid.shape, -1), axis=-1)  # (h, w, k²)
    mean = values.mean(-1)
    cov = np.divide(values.std(-1), mean, out=np.zeros_like(mean), where=mean > 0)
    ax = np.arange(kernel_size ** 2) - kernel_size ** 2 // 2
    with np.errstate(divide="ignore", invalid="ignore"):
        kernel = np.exp(-(ax ** 2)[None, None] / (2 * cov[..., None] ** 2))
    kernel = np.where(cov[..., None] > 0, kernel, (ax == 0)[None, None].astype(float))  # flat window: its median
    kernel /= kernel.sum(-1, keepdims=True)
    return np.where(mean > 0, (values * kernel).sum(-1), 0.0)


def _head_columns(tf, hidden: torch.Tensor, classes: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """Logits of `classes` for (N, D) hidden states, the head applied in chunks (the vocabulary can be large)."""
    return torch.cat([tf.head(hidden[lo:lo + chunk]).float()[:, classes] for lo in range(0, len(hidden), chunk)])


@torch.no_grad()
def tam(tf, positions: Sequence[int], *, kernel_size: int = 3, causal_inference: bool = True) -> np.ndarray:
    """(H, W) float32 Token Activation Map of the tokens at answer `positions` (see the module docstring)."""
    positions = check_positions(tf, positions)
    hidden = tf(tf.image[None], hidden_states=True).hidden_states[-1][0]  # (L, D)
    answer_positions = tf.answer_start + torch.arange(len(tf.answer_ids), device=hidden.device)
    text_positions = torch.cat([tf.context_positions.to(hidden.device), answer_positions])
    text_ids = tf.input_ids[text_positions]
    classes, class_index = torch.unique(text_ids, return_inverse=True)  # text_ids == classes[class_index]
    image_logits = _head_columns(tf, hidden[tf.image_positions], classes).cpu().numpy()  # (K, C)
    text_logits = _head_columns(tf, hidden[text_positions], classes).cpu().numpy()  # (T, C)
    raw = np.maximum(image_logits, 0)  # raw map of each class
    class_index = class_index.cpu().numpy()
    n_context = len(tf.context_positions)
    maps = []
    for r in positions:
        v = n_context + r  # the explained token among the text tokens
        c = class_index[v]
        img = raw[:, c].copy()
        txt = np.maximum(text_logits[:v, c], 0)  # the earlier tokens' activation of this class
        if causal_inference and v > 0:
            earlier = [i for i in range(v) if class_index[i] != c]
            weights = txt[earlier]
            if earlier and weights.sum() > 0:
                weights = weights / (weights.sum() + 1e-8)
                interference = (raw[:, class_index[earlier]] * weights[None]).sum(1)
                denom = float(interference @ interference)
                scale = float(img @ interference) / denom if denom > 0 else 0.0
                img = np.maximum(img - scale * interference, 0)
        joint = np.concatenate([img, txt])
        lo, hi = joint.min(), joint.max()
        img = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
        maps.append(rank_gaussian_filter(img.reshape(tf.image_grid), kernel_size))
    return grid_to_image(np.mean(maps, axis=0), tf.height, tf.width)
