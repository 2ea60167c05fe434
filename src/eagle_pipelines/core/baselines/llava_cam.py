"""LLaVA-CAM: Grad-CAM on the language model's activations at the image tokens, with SmoothGrad.

For each of ``samples`` noisy copies of the image (Gaussian noise of standard deviation ``noise`` × 255 added in
pixel space; with ``noisy_uint8`` each copy is then clipped to 0..255 and truncated to whole pixel values, as the
reference's ``np.clip(...).astype(np.uint8)`` does), the target is the sum of the explained tokens' logits
(teacher-forced); A are the activations at the K image tokens (K, D) and G their gradients (with
``relu_gradients``, ReLU(G), as the reference applies before pooling). ``weighting="pooled"`` is Grad-CAM
(Selvaraju et al.) as LLaVA-CAM applies it (Zhang et al. 2024, "From Redundancy to Relevance"): channel weights
w = the token-mean of G, map ReLU(A · w). ``weighting="token"`` weights each token by its own gradient,
ReLU(Σ_d A·G) (gradient × activation), which localises where one global channel weighting cannot (LLM hidden
states are not spatial feature maps). Each copy's map is divided by its maximum (a copy whose map is blank, every
token's score at most 0, contributes its signed scores min-max normalised instead, so that the map still ranks
the tokens); the copies are averaged, laid out on the token grid and resized to the image.

Which activations:

- ``layer`` set: the output of ``submodule`` of decoder layer ``layer`` (``tf.decoder_layers[layer]``, numbered
  from 0 as the checkpoint does), read with a forward hook. The EAGLE reference hooks
  ``layers[32].post_attention_layernorm`` for Qwen2.5-VL-3B and InternVL3.5-4B and ``layers[13]`` for
  LLaVA-1.5-7B (conf/paper/globals.yml); ``submodule: ""`` hooks the layer's own output.
- ``layer`` null (our default): ``hidden_states[hidden_state]`` of the pass (0 = embeddings, -1 = the last layer's
  output); the default -2 is the input of the last decoder layer: in a causal decoder the last layer's output at an
  image token feeds only that token's own logits, so its gradient from the answer's logits is exactly zero there
  and Grad-CAM on it would be blank (the same holds for any submodule of the last layer after its attention).

Differences from the reference that remain (docs/baselines.md): it adds the noise to the photo at its original
size before the processor resizes it; we add it to the model-resolution image.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, PositiveInt

from eagle_pipelines.core.baselines.common import capture_output, check_positions, decoder_submodule, grid_to_image


class LlavaCamParams(BaseModel):
    """Smooth Grad-CAM on the LM activations at the image tokens (reference: a decoder layer's
    post_attention_layernorm output, 50 samples, noise 0.1, ReLU on the gradients, uint8 noisy images)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    layer: int | None = Field(
        default=None, description="decoder layer whose `submodule` output is hooked (0-based as "
                                  "language_model.layers[i], negative from the end; reference: 32 for "
                                  "Qwen2.5-VL-3B and InternVL3.5-4B, 13 for LLaVA-1.5); null: "
                                  "hidden_states[hidden_state]")
    submodule: str = Field(default="post_attention_layernorm",
                           description="submodule of decoder layer `layer` whose output is hooked; '' = the layer's "
                                       "own output (unused when layer is null)")
    hidden_state: int = Field(default=-2, description="with layer null: hidden state index (0 embeddings, -1 last "
                                                      "layer output; -2 the input of the last layer, the deepest "
                                                      "with gradients at image tokens)")
    samples: PositiveInt = Field(default=4, description="noisy copies averaged (SmoothGrad; reference: 50)")
    noise: float = Field(default=0.15, ge=0, description="noise standard deviation, fraction of the pixel range "
                                                         "(reference: 0.1)")
    noisy_uint8: bool = Field(default=False, description="clip each noisy copy to 0..255 and truncate it to whole "
                                                         "pixel values, as the reference's uint8 images")
    relu_gradients: bool = Field(default=False, description="ReLU on the gradients before they weight the "
                                                            "activations (reference: yes)")
    weighting: Literal["pooled", "token"] = Field(
        default="pooled", description="pooled: Grad-CAM's channel weights (LLaVA-CAM); token: each token's own "
                                      "gradient x activation")
    batch_size: PositiveInt = 8
    seed: int = 0


def noisy_copies(image: torch.Tensor, count: int, noise: float, generator: torch.Generator,
                 uint8: bool = False) -> torch.Tensor:
    """(count, H, W, 3) copies of the (H, W, 3) 0..255 `image` plus Gaussian noise of std `noise` × 255; with
    `uint8`, clipped to 0..255 and truncated to whole values (NumPy's ``astype(np.uint8)`` after ``np.clip``)."""
    eps = torch.randn((count, *image.shape), generator=generator).to(image.device)
    images = image[None] + float(noise) * 255.0 * eps
    return images.clamp(0.0, 255.0).floor() if uint8 else images


def llava_cam(tf, positions: Sequence[int], *, layer: int | None = None,
              submodule: str = "post_attention_layernorm", hidden_state: int = -2, samples: int = 10,
              noise: float = 0.15, noisy_uint8: bool = False, relu_gradients: bool = False, weighting: str = "pooled",
              batch_size: int = 8, seed: int = 0) -> np.ndarray:
    """(H, W) float32 Smooth Grad-CAM map of the tokens at answer `positions` (see the module docstring)."""
    positions = check_positions(tf, positions)
    if weighting not in ("pooled", "token"):
        raise ValueError(f"weighting must be 'pooled' or 'token', got {weighting!r}")
    if samples < 1:
        raise ValueError(f"samples must be at least 1, got {samples}")
    module = None if layer is None else decoder_submodule(tf, layer, submodule, "llava_cam.layer")
    generator = torch.Generator().manual_seed(int(seed))
    pos = torch.tensor(positions, device=tf.answer_ids.device)
    targets = tf.answer_ids[pos]
    total = torch.zeros(len(tf.image_positions), dtype=torch.float64)
    done = 0
    while done < samples:
        b = min(batch_size, samples - done)
        images = noisy_copies(tf.image, b, noise, generator, noisy_uint8)
        if module is None:
            out = tf(images, hidden_states=True)
            acts = out.hidden_states[hidden_state]
        else:
            with capture_output(module) as captured:
                out = tf(images)
            if len(captured) != 1:
                raise RuntimeError(f"llava_cam: decoder layer {layer}'s {submodule or 'output'} ran "
                                   f"{len(captured)} times in one pass; hook a module that runs once")
            acts = captured[0]
        target = out.logits[:, pos].float().gather(-1, targets.expand(b, -1).unsqueeze(-1)).sum()
        (grad,) = torch.autograd.grad(target, acts)
        scores = cam_scores(acts.detach()[:, tf.image_positions], grad[:, tf.image_positions], weighting,
                            relu_gradients)
        cams = torch.relu(scores)
        peak = cams.amax(dim=1, keepdim=True)
        lo, hi = scores.amin(dim=1, keepdim=True), scores.amax(dim=1, keepdim=True)
        signed = (scores - lo) / (hi - lo).clamp_min(1e-30)
        total += torch.where(peak > 0, cams / peak.clamp_min(1e-30), signed).sum(0).double().cpu()
        done += b
    cam = (total / samples).reshape(tf.image_grid)
    return grid_to_image(cam, tf.height, tf.width)


def cam_scores(acts: torch.Tensor, grads: torch.Tensor, weighting: str = "pooled",
               relu_gradients: bool = False) -> torch.Tensor:
    """(B, K) Grad-CAM scores before the ReLU from activations and gradients (B, K, D) at the image tokens:
    pooled, A · mean_k(G) (channel weights); token, Σ_d A·G. `relu_gradients`: G -> ReLU(G) first."""
    acts, grads = acts.float(), grads.float()
    if relu_gradients:
        grads = torch.relu(grads)
    if weighting == "pooled":
        return (acts * grads.mean(dim=1, keepdim=True)).sum(-1)
    return (acts * grads).sum(-1)
