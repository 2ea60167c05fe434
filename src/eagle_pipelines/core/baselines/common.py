"""Helpers the baselines share: token grids to pixel maps, Gaussian blur, argument checks."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F


def check_positions(tf, positions: Sequence[int]) -> list[int]:
    """The explained answer positions as a sorted list of ints, checked against the answer's length."""
    positions = sorted({int(p) for p in positions})
    n = len(tf.answer_ids)
    if not positions:
        raise ValueError("no tokens to explain: positions is empty")
    if positions[0] < 0 or positions[-1] >= n:
        raise ValueError(f"token positions {positions} outside the answer of {n} tokens")
    return positions


def grid_to_image(grid_map: torch.Tensor | np.ndarray, height: int, width: int) -> np.ndarray:
    """An (h, w) map over the image tokens, bilinearly resized to the (H, W) image (the tokens tile the image
    evenly), as float32."""
    t = torch.as_tensor(np.asarray(grid_map, dtype=np.float32) if not torch.is_tensor(grid_map) else grid_map)
    t = t.detach().float().cpu()[None, None]
    out = F.interpolate(t, size=(height, width), mode="bilinear", align_corners=False)[0, 0]
    return out.numpy().astype(np.float32)


def gaussian_kernel1d(sigma: float, size: int) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    k = torch.exp(-(x ** 2) / (2 * sigma ** 2))
    return k / k.sum()


def gaussian_blur(image: torch.Tensor, kernel_size: int, sigma: float) -> torch.Tensor:
    """(H, W, C) float image blurred with a separable Gaussian (reflect padding, clamped to the image size)."""
    kernel_size = int(kernel_size) | 1
    k = gaussian_kernel1d(sigma, kernel_size).to(image.device)
    x = image.permute(2, 0, 1)[None].float()  # (1, C, H, W)
    c = x.shape[1]
    for dim in (2, 3):
        pad = min(kernel_size // 2, x.shape[dim] - 1)
        weight = k[kernel_size // 2 - pad: kernel_size // 2 + pad + 1]
        weight = weight / weight.sum()
        if dim == 2:
            x = F.conv2d(F.pad(x, (0, 0, pad, pad), mode="reflect"), weight.view(1, 1, -1, 1).repeat(c, 1, 1, 1),
                         groups=c)
        else:
            x = F.conv2d(F.pad(x, (pad, pad, 0, 0), mode="reflect"), weight.view(1, 1, 1, -1).repeat(c, 1, 1, 1),
                         groups=c)
    return x[0].permute(1, 2, 0)


def blur_kernel_size(height: int, width: int, per_224: int = 51) -> int:
    """IGOS's blur (kernel 51, sigma 50 on 224-pixel images) scaled to the image: an odd kernel size."""
    return max(3, int(math.ceil(min(height, width) / 224 * per_224)) | 1)


#: (smallest width, kernel size) of the EAGLE reference's IGOS++ blur, widest first (baselines/IGOS_pp/utils.py,
#: ``get_kernel_size``, applied to the PIL size's first entry, the width); its sigma is the kernel size - 1
REFERENCE_BLUR_KERNELS = ((2000, 501), (800, 301), (500, 201), (0, 101))


def reference_blur_kernel(width: int) -> int:
    """The reference's IGOS++ blur kernel for an image `width` pixels wide: 501 from 2000 px, 301 from 800, 201
    from 500, else 101."""
    return next(k for least, k in REFERENCE_BLUR_KERNELS if width >= least)


def decoder_submodule(tf, layer: int, submodule: str | None, setting: str = "layer"):
    """The module ``tf.decoder_layers[layer]`` or its (dotted) `submodule` of it, with errors naming `setting`."""
    layers = tf.decoder_layers
    n = len(layers)
    if not -n <= int(layer) < n:
        raise ValueError(f"{setting} {layer} is outside the model's {n} decoder layers (0..{n - 1}); pick one of them")
    module = layers[int(layer)]
    for name in (submodule or "").split(".") if submodule else ():
        if not hasattr(module, name):
            children = sorted(child for child, _ in module.named_children())
            raise ValueError(f"decoder layer {layer} ({type(layers[int(layer)]).__name__}) has no submodule "
                             f"{submodule!r}; its submodules: {children}")
        module = getattr(module, name)
    return module


@contextmanager
def capture_output(module: torch.nn.Module) -> Iterator[list]:
    """Records the output of `module` (its first element when it returns a tuple) at every forward pass inside the
    block, in order; the tensors stay in the autograd graph, so a target can be differentiated with respect to
    them (what a forward hook plus ``retain_grad`` gives Grad-CAM code)."""
    captured: list = []

    def hook(_module, _args, output):
        captured.append(output[0] if isinstance(output, tuple) else output)

    handle = module.register_forward_hook(hook)
    try:
        yield captured
    finally:
        handle.remove()


def normalise(values: np.ndarray) -> np.ndarray:
    """Min-max to [0, 1]; a constant array becomes zeros."""
    values = np.asarray(values, dtype=np.float64)
    span = values.max() - values.min() if values.size else 0.0
    return (values - values.min()) / span if span > 0 else np.zeros_like(values)
