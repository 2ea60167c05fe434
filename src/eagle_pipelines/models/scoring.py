"""What every model family's token scorer shares: input checks, chunking into batches, a batch size that fits a
memory budget, and halving the batch on out-of-memory instead of failing.

A family's scorer subclasses ``BatchedTokenScorer`` and implements ``_forward(chunk) -> (b, T) probabilities`` for
one chunk of (b, H, W) boolean keep-masks (see docs/models.md)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from eagle_pipelines.core.memory import PeakMemory

logger = logging.getLogger(__name__)

#: fraction of the room above the base memory the batches plan to fill; the rest absorbs measurement noise and
#: allocator slack
SAFETY = 0.8


def device_memory_mb(device: torch.device) -> float:
    """What the device has for us: on CUDA the free memory plus what this process already holds; on CPU the
    memory the kernel reports available plus this process's resident set."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return (free + torch.cuda.memory_allocated(device)) / 2**20
    available = rss = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) / 1024
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024
    except OSError:
        pass
    if available is None:
        return float("inf")  # unknown: rely on the out-of-memory back-off
    return available + (rss or 0.0)


def batch_for_budget(base_mb: float, per_image_mb: float, budget_mb: float, max_batch: int) -> int:
    """The largest batch (1..max_batch) whose activations, b·per_image, fill at most SAFETY of the room between
    the base memory (weights, inputs) and the budget."""
    if per_image_mb <= 0:
        return max_batch
    room = SAFETY * (budget_mb - base_mb)
    return int(max(1, min(max_batch, room // per_image_mb)))


def is_out_of_memory(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in text or "can't allocate memory" in text


class BatchedTokenScorer:
    """Base of the model families' TokenScorers.

    Args:
        batch_size: the most masked images per forward pass.
        memory_budget_mb: peak memory the scoring may reach (CUDA allocator peak on a GPU, resident set on a CPU);
            ``None`` means what the device has (``device_memory_mb``), ``0`` turns the planning off. Before the
            first real batch, two probe passes (1 and 2 images) measure the memory one more image costs, and the
            batch size is lowered to fit the budget. A chunk that still runs out of memory is retried at half
            the size (the smaller size is kept for later calls).
    """

    target_positions: tuple[int, ...]
    height: int
    width: int
    device: torch.device

    def __init__(self, batch_size: int = 32, memory_budget_mb: float | None = None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.batch_size = int(batch_size)
        self.memory_budget_mb = memory_budget_mb
        self.planned = memory_budget_mb == 0 or batch_size == 1
        self.memory_plan: dict = {}

    def _forward(self, chunk: np.ndarray) -> np.ndarray:  # pragma: no cover - implemented by the families
        raise NotImplementedError

    def plan_batch(self, example: np.ndarray) -> int:
        """Measures the memory of 1 and 2 masked images and sets the batch size to fit the budget."""
        budget = self.memory_budget_mb if self.memory_budget_mb is not None else device_memory_mb(self.device)
        peaks = []
        for b in (1, 2):
            with PeakMemory(self.device) as peak:
                self._forward(np.repeat(example[None], b, axis=0))
            peaks.append(peak.mb)
        per_image = max(peaks[1] - peaks[0], 0.0)
        base = peaks[0] - per_image
        chosen = batch_for_budget(base, per_image, budget, self.batch_size)
        self.memory_plan = {"budget_mb": budget, "base_mb": base, "per_image_mb": per_image,
                            "batch_size": chosen, "max_batch_size": self.batch_size}
        if chosen < self.batch_size:
            logger.info("memory budget %.0f MB: %d masked images per pass (%.1f MB each over %.0f MB)", budget,
                        chosen, per_image, base)
        self.batch_size = chosen
        self.planned = True
        return chosen

    @torch.no_grad()
    def __call__(self, keep_masks: np.ndarray) -> np.ndarray:
        """(B, T) probabilities of the explained tokens for (B, H, W) keep-masks, in chunks of `batch_size`."""
        keep_masks = np.asarray(keep_masks, dtype=bool)
        if keep_masks.ndim != 3 or keep_masks.shape[1:] != (self.height, self.width):
            raise ValueError(f"masks are {keep_masks.shape[1:]}, the model image is {(self.height, self.width)}")
        if not self.planned and len(keep_masks) > 1:
            self.plan_batch(keep_masks[0])
        out, lo = [], 0
        while lo < len(keep_masks):
            chunk = keep_masks[lo:lo + self.batch_size]
            try:
                out.append(np.asarray(self._forward(chunk)))
            except (torch.OutOfMemoryError, RuntimeError) as exc:
                if not is_out_of_memory(exc) or self.batch_size == 1:
                    raise
                self.batch_size = max(1, self.batch_size // 2)
                logger.warning("out of memory at %d masked images per pass; continuing with %d", len(chunk),
                               self.batch_size)
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                continue
            lo += len(chunk)
        return np.concatenate(out).astype(np.float64)
