"""IGOS++: integrated-gradient optimisation of a coarse mask against a blurred baseline (Khorram et al., 2021).

Two coarse masks (``size`` × ``size``, 1 = keep) are optimised jointly, bilinearly upsampled to the image. With
``phi(a, b, m) = a·m + b·(1 − m)`` and ``score`` the sum of the explained tokens' log-probabilities
(teacher-forced), the deletion term integrates the score along the path ``phi(image, blur, α·m)`` and the
insertion term along ``phi(blur, image, α·m)`` (α = 1/n .. 1, ``ig_steps`` = n points, Gaussian noise on each
point). The objective, minimised by Nesterov-accelerated gradient steps (learning rate ``lr``, momentum
i/(i + ``momentum``)) with the masks clamped to [0, 1]:

    del(m_del·m_ins) − ins(m_del·m_ins) + del(m_del) − ins(m_ins)        (halved)
    + l1 · mean|1 − m| + tv · bilateral TV(m) + l2 · e^(−γ·i) · Σ(1 − m)²   with m = m_del·m_ins

The saliency is 1 − m_del·m_ins. All 4·n path images of an iteration go through one batched pass (chunked by
``batch_size``). The blurred baseline: IGOS's Gaussian (kernel 51, sigma 50 on a 224-pixel image) scaled to
the image. The MLLM settings of the EAGLE paper's IGOS++ runs: size 32, 5 iterations, 10 steps, l1 1, l2 0.1,
tv 10, lr 10, momentum 5 (docs/baselines.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, PositiveInt

from eagle_pipelines.core.baselines.common import blur_kernel_size, check_positions, gaussian_blur


class IgosParams(BaseModel):
    """IGOS++ (paper's MLLM settings: size 32, iterations 5, ig_steps 10)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    size: PositiveInt = Field(default=32, description="side of the coarse mask")
    iterations: PositiveInt = 2
    ig_steps: PositiveInt = Field(default=2, description="points of each integrated-gradient path")
    l1: float = Field(default=1.0, ge=0)
    l2: float = Field(default=0.1, ge=0)
    tv: float = Field(default=10.0, ge=0, description="weight of the bilateral total variation")
    gamma: float = Field(default=1.0, ge=0, description="decay of the l2 weight per iteration")
    lr: float = Field(default=10.0, gt=0)
    momentum: float = Field(default=5.0, gt=0)
    noise: float = Field(default=0.05, ge=0, description="noise on the path images, fraction of the pixel range")
    batch_size: PositiveInt = 64
    seed: int = 0


def _upscale(masks: torch.Tensor, height: int, width: int) -> torch.Tensor:
    return F.interpolate(masks, size=(height, width), mode="bilinear", align_corners=True)


def bilateral_tv(image01: torch.Tensor, mask: torch.Tensor, up: torch.Tensor, beta: float = 2.0,
                 sigma: float = 7e-4) -> torch.Tensor:
    """Total variation of the coarse mask plus the image-weighted (bilateral) variation of the upsampled mask.
    `image01`: (H, W, 3) in [0, 1]; `mask`: (1, 1, s, s); `up`: (1, 1, H, W). The default sigma is IGOS's 0.01
    in CLIP-normalised units (pixel differences divided by ~0.27)."""
    m = mask[0, 0]
    tv = (m[:-1] - m[1:]).abs().pow(beta).mean() + (m[:, :-1] - m[:, 1:]).abs().pow(beta).mean()
    u = up[0, 0]
    wy = torch.exp(-((image01[:-1] - image01[1:]).mean(-1) ** 2) / sigma)
    wx = torch.exp(-((image01[:, :-1] - image01[:, 1:]) ** 2).mean(-1) / sigma)
    bil = (wy * (u[:-1] - u[1:]).abs().pow(beta)).mean() + (wx * (u[:, :-1] - u[:, 1:]).abs().pow(beta)).mean()
    return tv + bil


def igos_pp(tf, positions: Sequence[int], *, size: int = 32, iterations: int = 5, ig_steps: int = 10,
            l1: float = 1.0, l2: float = 0.1, tv: float = 10.0, gamma: float = 1.0, lr: float = 10.0,
            momentum: float = 5.0, noise: float = 0.05, batch_size: int = 64, seed: int = 0) -> np.ndarray:
    """(H, W) float32 IGOS++ saliency (1 − the optimised keep mask) of the tokens at answer `positions`."""
    positions = check_positions(tf, positions)
    if min(size, iterations, ig_steps) < 1:
        raise ValueError(f"size, iterations and ig_steps must be positive, got {size}, {iterations}, {ig_steps}")
    generator = torch.Generator().manual_seed(int(seed))
    h, w, device = tf.height, tf.width, tf.image.device
    image = tf.image
    k = blur_kernel_size(h, w)
    blurred = gaussian_blur(image, k, k - 1.0)
    pos = torch.tensor(positions, device=tf.answer_ids.device)
    targets = tf.answer_ids[pos]
    alphas = torch.linspace(1.0 / ig_steps, 1.0, ig_steps, device=device).view(-1, 1, 1, 1)

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
    for i in range(iterations):
        up_del, up_ins = _upscale(mask_del, h, w), _upscale(mask_ins, h, w)
        both = up_del * up_ins
        images = torch.cat([path(image, blurred, both), path(blurred, image, both), path(image, blurred, up_del),
                            path(blurred, image, up_ins)])
        n = ig_steps
        signs = torch.cat([torch.full((n,), s, device=device) for s in (1.0, -1.0, 1.0, -1.0)])
        objective = 0.0
        for lo in range(0, len(images), batch_size):
            chunk = images[lo:lo + batch_size]
            logp = torch.log_softmax(tf(chunk).logits[:, pos].float(), dim=-1)
            per_image = logp.gather(-1, targets.expand(len(chunk), -1).unsqueeze(-1)).sum(dim=(1, 2))
            objective = objective + (signs[lo:lo + batch_size] * per_image).sum() / n
        objective = objective / 2
        m = mask_del * mask_ins
        weight_l2 = l2 * float(np.exp(-gamma * i))
        reg = (l1 * (1 - m).abs().mean() + tv * bilateral_tv(image01, m, _upscale(m, h, w))
               + weight_l2 * ((1 - m) ** 2).sum())
        grad_del, grad_ins = torch.autograd.grad(objective + reg, [mask_del, mask_ins])
        with torch.no_grad():
            e = i / (i + momentum)
            new_del = mask_del - lr * grad_del
            new_ins = mask_ins - lr * grad_ins
            mask_del.copy_((new_del + e * (new_del - theta_del)).clamp(0, 1))
            mask_ins.copy_((new_ins + e * (new_ins - theta_ins)).clamp(0, 1))
            theta_del, theta_ins = new_del, new_ins
    with torch.no_grad():
        saliency = 1 - _upscale(mask_del * mask_ins, h, w)[0, 0]
    return saliency.float().cpu().numpy().astype(np.float32)
