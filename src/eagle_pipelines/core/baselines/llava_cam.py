"""LLaVA-CAM: Grad-CAM on the language model's hidden states at the image tokens, with SmoothGrad.

For each of ``samples`` noisy copies of the image (Gaussian noise of standard deviation ``noise`` × 255), the
target is the sum of the explained tokens' logits (teacher-forced); A are the hidden states of ``layer`` at the K
image tokens (K, D) and G their gradients. ``weighting="pooled"`` is Grad-CAM (Selvaraju et al.) as LLaVA-CAM applies it
(Zhang et al. 2024, "From Redundancy to Relevance"): channel weights w = the token-mean of G, map ReLU(A · w).
``weighting="token"`` weights each token by its own gradient, ReLU(Σ_d A·G) (gradient × activation), which
localises where one global channel weighting cannot (LLM hidden states are not spatial feature maps). Each copy's
map is divided by its maximum (a copy whose map is blank, every token's score at most 0, contributes its signed
scores min-max normalised instead, so that the map still ranks the tokens); the copies are averaged, laid out on
the token grid and resized to the image (LLaVA-CAM: 10 samples, noise 0.15).

The layer: ``hidden_states[layer]`` of the TeacherForcedPass (0 = embeddings, -1 = the last layer's output). The
default is the input of the last decoder layer (-2): in a causal decoder the last layer's output at an image
token feeds only that token's own logits, so its gradient from the answer's logits is exactly zero there and
Grad-CAM on it would be blank.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, PositiveInt

from eagle_pipelines.core.baselines.common import check_positions, grid_to_image


class LlavaCamParams(BaseModel):
    """Smooth Grad-CAM on the LM hidden states at the image tokens (paper: 10 samples)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    layer: int = Field(default=-2, description="hidden state index (0 embeddings, -1 last layer output; -2 the "
                                               "input of the last layer, the deepest with gradients at image tokens)")
    samples: PositiveInt = Field(default=4, description="noisy copies averaged (SmoothGrad)")
    noise: float = Field(default=0.15, ge=0, description="noise standard deviation, fraction of the pixel range")
    weighting: Literal["pooled", "token"] = Field(
        default="pooled", description="pooled: Grad-CAM's channel weights (LLaVA-CAM); token: each token's own "
                                      "gradient x activation")
    batch_size: PositiveInt = 8
    seed: int = 0


def llava_cam(tf, positions: Sequence[int], *, layer: int = -2, samples: int = 10, noise: float = 0.15,
              weighting: str = "pooled", batch_size: int = 8, seed: int = 0) -> np.ndarray:
    """(H, W) float32 Smooth Grad-CAM map of the tokens at answer `positions` (see the module docstring)."""
    positions = check_positions(tf, positions)
    if weighting not in ("pooled", "token"):
        raise ValueError(f"weighting must be 'pooled' or 'token', got {weighting!r}")
    if samples < 1:
        raise ValueError(f"samples must be at least 1, got {samples}")
    generator = torch.Generator().manual_seed(int(seed))
    pos = torch.tensor(positions, device=tf.answer_ids.device)
    targets = tf.answer_ids[pos]
    total = torch.zeros(len(tf.image_positions), dtype=torch.float64)
    done = 0
    while done < samples:
        b = min(batch_size, samples - done)
        eps = torch.randn((b, *tf.image.shape), generator=generator).to(tf.image.device)
        images = tf.image[None] + float(noise) * 255.0 * eps
        out = tf(images, hidden_states=True)
        target = out.logits[:, pos].float().gather(-1, targets.expand(b, -1).unsqueeze(-1)).sum()
        hidden = out.hidden_states[layer]
        (grad,) = torch.autograd.grad(target, hidden)
        acts = hidden.detach()[:, tf.image_positions].float()  # (b, K, D)
        grads = grad[:, tf.image_positions].float()  # (b, K, D)
        if weighting == "pooled":
            scores = (acts * grads.mean(dim=1, keepdim=True)).sum(-1)  # (b, K)
        else:
            scores = (acts * grads).sum(-1)
        cams = torch.relu(scores)
        peak = cams.amax(dim=1, keepdim=True)
        lo, hi = scores.amin(dim=1, keepdim=True), scores.amax(dim=1, keepdim=True)
        signed = (scores - lo) / (hi - lo).clamp_min(1e-30)
        total += torch.where(peak > 0, cams / peak.clamp_min(1e-30), signed).sum(0).double().cpu()
        done += b
    cam = (total / samples).reshape(tf.image_grid)
    return grid_to_image(cam, tf.height, tf.width)
