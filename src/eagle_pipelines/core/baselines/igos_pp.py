"""IGOS++: integrated-gradient optimisation of a coarse mask against a blurred baseline (Khorram et al., 2021).

Two coarse masks (``size`` × ``size``, 1 = keep) are optimised jointly, bilinearly upsampled to the image. With
``phi(a, b, m) = a·m + b·(1 − m)`` and ``score`` the sum of the explained tokens' log-probabilities
(teacher-forced), the deletion term integrates the score along the path ``phi(image, base, α·m)`` and the
insertion term along ``phi(base, image, α·m)`` (α = 1/n .. 1, ``ig_steps`` = n points, Gaussian noise on each
point). The objective, minimised by Nesterov-accelerated gradient steps (learning rate ``lr``, momentum
i/(i + ``momentum``)) with the masks clamped to [0, 1]:

    del(m_del·m_ins) − ins(m_del·m_ins) + del(m_del) − ins(m_ins)        (halved)
    + l1 · mean|1 − m| + tv · bilateral TV(m) + l2_i · Σ(1 − m)²   with m = m_del·m_ins

The saliency is 1 − m_del·m_ins. All 4·n path images of an iteration go through one batched pass (chunked by
``batch_size``).

Settings that follow the EAGLE reference (baselines/IGOS_pp/*, used by the paper environment; docs/baselines.md):

- ``baseline``: ``blur`` (its Qwen-VL code) or ``mean``, the image whose pixel values are all zero, i.e. the
  processor's mean colour (its InternVL and LLaVA code: ``pixel_values * 0``).
- ``blur_kernel``: ``scaled`` (ours: IGOS's kernel 51 / sigma 50 on a 224-pixel image, scaled to the image) or
  ``by_width`` (the reference: kernel 101, 201 from 500 px wide, 301 from 800, 501 from 2000; sigma kernel − 1).
- ``l2_decay``: the l2 weight at iteration i is ``l2·e^(−γ·i)`` (``exponential``) or, as the reference reassigns
  ``L2 = L2·e^(−γ·i)`` every iteration, ``l2·e^(−γ·i(i+1)/2)`` (``compounding``).
- ``tv``: the reference's bilateral TV norm is halved inside (``0.5·(…)``) and weighted 10: ``tv: 5`` here.
- ``keyword_threshold``: when the explained positions are the whole answer (sentence level), explain only the
  "keywords": the tokens whose log p(image) − log p(baseline) exceeds the threshold (reference: 1); when none
  does, the one token whose probability drops most, p(image) − p(baseline).
- ``align_corners``: how the coarse masks are upsampled (the reference: False, half-pixel centres).
- ``objective``: ``paper`` (the IGOS++ paper, ours) integrates the insertion terms along ``phi(base, image, α·m)``
  (from the baseline towards the image); ``reference`` puts all four integrated-gradient calls on the deletion
  path ``phi(image, base, α·m)``, as the EAGLE reference's ``iGOS_pp`` does (baselines/IGOS_pp/IGOS_pp.py: its
  four ``integrated_gradient(..., image, ..., baseline, ...)`` calls; the insertion terms only change sign).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import ConfigDict, Field, PositiveInt

from eagle_pipelines.core.parity import ParitySwitches
from eagle_pipelines.core.baselines.common import (
    blur_kernel_size,
    check_positions,
    gaussian_blur,
    reference_blur_kernel,
)


IGOS_OBJECTIVES = ("paper", "reference")


class IgosParams(ParitySwitches):
    """IGOS++ (paper's MLLM settings: size 32, iterations 5, ig_steps 10)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    parity_switches = ("objective",)

    size: PositiveInt = Field(default=32, description="side of the coarse mask")
    iterations: PositiveInt = 2
    ig_steps: PositiveInt = Field(default=2, description="points of each integrated-gradient path")
    l1: float = Field(default=1.0, ge=0)
    l2: float = Field(default=0.1, ge=0)
    tv: float = Field(default=10.0, ge=0, description="weight of the bilateral total variation (the reference's "
                                                      "10 x its halved norm = 5)")
    gamma: float = Field(default=1.0, ge=0, description="decay of the l2 weight per iteration")
    l2_decay: Literal["exponential", "compounding"] = Field(
        default="exponential", description="l2 weight at iteration i: exponential l2*exp(-gamma*i); compounding "
                                           "l2*exp(-gamma*i*(i+1)/2), the reference's L2 = L2*exp(-gamma*i)")
    lr: float = Field(default=10.0, gt=0)
    momentum: float = Field(default=5.0, gt=0)
    noise: float = Field(default=0.05, ge=0, description="noise on the path images, fraction of the pixel range")
    baseline: Literal["blur", "mean"] = Field(
        default="blur", description="blur: the blurred image; mean: the processor's mean colour (all-zero pixel "
                                    "values; the reference's InternVL and LLaVA code)")
    blur_kernel: Literal["scaled", "by_width"] = Field(
        default="scaled", description="scaled: kernel 51 / sigma 50 per 224 px of the shorter side; by_width: the "
                                      "reference's 101, 201 from 500 px wide, 301 from 800, 501 from 2000 (sigma "
                                      "kernel - 1)")
    keyword_threshold: float | None = Field(
        default=None, description="sentence level (all answer tokens): explain only the tokens with log p(image) - "
                                  "log p(baseline) above it (reference: 1; none above: the largest probability "
                                  "drop); null: every token")
    align_corners: bool = Field(default=True, description="bilinear upsampling of the coarse masks with aligned "
                                                          "corners (the reference: false)")
    objective: Literal["paper", "reference"] = Field(
        default="paper", description="paper: insertion terms on the baseline->image path (the IGOS++ paper); "
                                     "reference: all four integrated-gradient terms on the image->baseline path, "
                                     "as the EAGLE reference's code")
    batch_size: PositiveInt = 64
    seed: int = 0


def _upscale(masks: torch.Tensor, height: int, width: int, align_corners: bool = True) -> torch.Tensor:
    return F.interpolate(masks, size=(height, width), mode="bilinear", align_corners=align_corners)


def bilateral_tv(image01: torch.Tensor, mask: torch.Tensor, up: torch.Tensor, beta: float = 2.0,
                 sigma: float = 7e-4) -> torch.Tensor:
    """Total variation of the coarse mask plus the image-weighted (bilateral) variation of the upsampled mask.
    `image01`: (H, W, 3) in [0, 1]; `mask`: (1, 1, s, s); `up`: (1, 1, H, W). The default sigma is IGOS's 0.01
    in CLIP-normalised units (pixel differences divided by ~0.27). Not halved (the reference's norm is half of it)."""
    m = mask[0, 0]
    tv = (m[:-1] - m[1:]).abs().pow(beta).mean() + (m[:, :-1] - m[:, 1:]).abs().pow(beta).mean()
    u = up[0, 0]
    wy = torch.exp(-((image01[:-1] - image01[1:]).mean(-1) ** 2) / sigma)
    wx = torch.exp(-((image01[:, :-1] - image01[:, 1:]) ** 2).mean(-1) / sigma)
    bil = (wy * (u[:-1] - u[1:]).abs().pow(beta)).mean() + (wx * (u[:, :-1] - u[:, 1:]).abs().pow(beta)).mean()
    return tv + bil


def l2_weight(l2: float, gamma: float, iteration: int, decay: str = "exponential") -> float:
    """The l2 weight at `iteration` (0-based): ``l2·e^(−γ·i)``, or ``compounding``, the reference's running
    product ``l2·e^(−γ·0)·e^(−γ·1)···e^(−γ·i) = l2·e^(−γ·i(i+1)/2)``."""
    if decay == "exponential":
        return l2 * math.exp(-gamma * iteration)
    if decay == "compounding":
        return l2 * math.exp(-gamma * iteration * (iteration + 1) / 2)
    raise ValueError(f"igos_pp.l2_decay must be 'exponential' or 'compounding', got {decay!r}")


def blur_settings(height: int, width: int, rule: str = "scaled") -> tuple[int, float]:
    """(kernel size, sigma) of the blurred baseline of a `height` × `width` image under `rule` (sigma = kernel − 1
    under both): ``scaled`` IGOS's 51 per 224 pixels of the shorter side, ``by_width`` the reference's table."""
    if rule == "scaled":
        k = blur_kernel_size(height, width)
    elif rule == "by_width":
        k = reference_blur_kernel(width)
    else:
        raise ValueError(f"igos_pp.blur_kernel must be 'scaled' or 'by_width', got {rule!r}")
    return k, k - 1.0


def baseline_image(tf, baseline: str = "blur", blur_kernel: str = "scaled") -> torch.Tensor:
    """The (H, W, 3) baseline IGOS++ moves the image towards: the blurred image, or (``mean``) the image of the
    processor's mean colour, whose pixel values are all zero."""
    if baseline == "blur":
        k, sigma = blur_settings(tf.height, tf.width, blur_kernel)
        return gaussian_blur(tf.image, k, sigma)
    if baseline == "mean":
        mean = torch.as_tensor(tf.pixel_mean, dtype=torch.float32, device=tf.image.device)
        return mean.view(1, 1, 3).expand(tf.height, tf.width, 3).clone()
    raise ValueError(f"igos_pp.baseline must be 'blur' or 'mean', got {baseline!r}")


def select_keywords(logp_image: np.ndarray, logp_baseline: np.ndarray, threshold: float = 1.0) -> list[int]:
    """Indices of the tokens whose log-probability falls by more than `threshold` from the image to the baseline
    (log p(image) − log p(baseline) > threshold); when none does, the one whose probability falls most
    (argmax of p(image) − p(baseline)), as the reference's ``find_keywords``."""
    logp_image, logp_baseline = np.asarray(logp_image, np.float64), np.asarray(logp_baseline, np.float64)
    chosen = np.flatnonzero(logp_image - logp_baseline > threshold).tolist()
    return chosen or [int(np.argmax(np.exp(logp_image) - np.exp(logp_baseline)))]


def _token_log_probs(tf, images: torch.Tensor, pos: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(B, P) log-probabilities of the answer tokens `targets` at answer positions `pos` for each image."""
    logp = torch.log_softmax(tf(images).logits[:, pos].float(), dim=-1)
    return logp.gather(-1, targets.expand(len(images), -1).unsqueeze(-1)).squeeze(-1)


def keyword_positions(tf, positions: Sequence[int], base: torch.Tensor, threshold: float) -> list[int]:
    """The answer positions among `positions` that ``select_keywords`` keeps, the image against `base`."""
    positions = list(positions)
    pos = torch.tensor(positions, device=tf.answer_ids.device)
    with torch.no_grad():
        logp = _token_log_probs(tf, torch.stack([tf.image, base.to(tf.image.dtype)]), pos, tf.answer_ids[pos])
    logp = logp.double().cpu().numpy()
    return [positions[i] for i in select_keywords(logp[0], logp[1], threshold)]


def regularisation(image01: torch.Tensor, m: torch.Tensor, height: int, width: int, l1: float, tv: float,
                   weight_l2: float, align_corners: bool = True) -> torch.Tensor:
    """l1 · mean|1 − m| + tv · bilateral TV(m) + weight_l2 · Σ(1 − m)² of the (1, 1, s, s) keep mask `m`."""
    return (l1 * (1 - m).abs().mean() + tv * bilateral_tv(image01, m, _upscale(m, height, width, align_corners))
            + weight_l2 * ((1 - m) ** 2).sum())


def igos_pp(tf, positions: Sequence[int], *, size: int = 32, iterations: int = 5, ig_steps: int = 10,
            l1: float = 1.0, l2: float = 0.1, tv: float = 10.0, gamma: float = 1.0,
            l2_decay: str = "exponential", lr: float = 10.0, momentum: float = 5.0, noise: float = 0.05,
            baseline: str = "blur", blur_kernel: str = "scaled", keyword_threshold: float | None = None,
            align_corners: bool = True, objective: str = "paper", batch_size: int = 64,
            seed: int = 0) -> np.ndarray:
    """(H, W) float32 IGOS++ saliency (1 − the optimised keep mask) of the tokens at answer `positions`."""
    positions = check_positions(tf, positions)
    if objective not in IGOS_OBJECTIVES:
        raise ValueError(f"igos_pp.objective must be one of {IGOS_OBJECTIVES}, got {objective!r}")
    if min(size, iterations, ig_steps) < 1:
        raise ValueError(f"size, iterations and ig_steps must be positive, got {size}, {iterations}, {ig_steps}")
    l2_weight(l2, gamma, 0, l2_decay)  # checks the decay's name before any pass
    generator = torch.Generator().manual_seed(int(seed))
    h, w, device = tf.height, tf.width, tf.image.device
    image = tf.image
    base = baseline_image(tf, baseline, blur_kernel)
    if keyword_threshold is not None and positions == list(range(len(tf.answer_ids))):
        positions = keyword_positions(tf, positions, base, keyword_threshold)
    pos = torch.tensor(positions, device=tf.answer_ids.device)
    targets = tf.answer_ids[pos]
    alphas = torch.linspace(1.0 / ig_steps, 1.0, ig_steps, device=device).view(-1, 1, 1, 1)

    def upscale(masks: torch.Tensor) -> torch.Tensor:
        return _upscale(masks, h, w, align_corners)

    def path(start: torch.Tensor, end: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        """phi(start, end, α·m) for every α: (n, H, W, 3), with noise."""
        m = (alphas * up[0, 0][None, ..., None])  # (n, H, W, 1)
        points = start[None] * m + end[None] * (1 - m)
        eps = torch.randn(points.shape, generator=generator).to(device)
        return points + float(noise) * 255.0 * eps

    mask_del = torch.ones((1, 1, size, size), device=device, requires_grad=True)
    mask_ins = torch.ones((1, 1, size, size), device=device, requires_grad=True)
    theta_del = torch.zeros_like(mask_del)
    theta_ins = torch.zeros_like(mask_ins)
    image01 = image / 255.0
    deletion, insertion = (image, base), ((base, image) if objective == "paper" else (image, base))
    paths = (deletion, insertion, deletion, insertion)  # the four terms: del(m), ins(m), del(m_del), ins(m_ins)
    for i in range(iterations):
        up_del, up_ins = upscale(mask_del), upscale(mask_ins)
        both = up_del * up_ins
        images = torch.cat([path(*ends, mask) for ends, mask in zip(paths, (both, both, up_del, up_ins))])
        n = ig_steps
        signs = torch.cat([torch.full((n,), s, device=device) for s in (1.0, -1.0, 1.0, -1.0)])
        objective = 0.0
        for lo in range(0, len(images), batch_size):
            chunk = images[lo:lo + batch_size]
            per_image = _token_log_probs(tf, chunk, pos, targets).sum(dim=1)
            objective = objective + (signs[lo:lo + batch_size] * per_image).sum() / n
        objective = objective / 2
        reg = regularisation(image01, mask_del * mask_ins, h, w, l1, tv, l2_weight(l2, gamma, i, l2_decay),
                             align_corners)
        grad_del, grad_ins = torch.autograd.grad(objective + reg, [mask_del, mask_ins])
        with torch.no_grad():
            e = i / (i + momentum)
            new_del = mask_del - lr * grad_del
            new_ins = mask_ins - lr * grad_ins
            mask_del.copy_((new_del + e * (new_del - theta_del)).clamp(0, 1))
            mask_ins.copy_((new_ins + e * (new_ins - theta_ins)).clamp(0, 1))
            theta_del, theta_ins = new_del, new_ins
    with torch.no_grad():
        saliency = 1 - upscale(mask_del * mask_ins)[0, 0]
    return saliency.float().cpu().numpy().astype(np.float32)
