"""What every model family's token scorer shares: input checks, chunking into batches, a batch size that fits a
memory budget, and halving the batch on out-of-memory instead of failing.

A family's scorer subclasses ``BatchedTokenScorer`` and implements ``_forward(chunk) -> (b, T) probabilities`` for
one chunk of (b, H, W) boolean keep-masks (see docs/models.md)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from eagle_pipelines.core.memory import PeakMemory, TensorPeak, resident_mb

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
        try:
            import psutil

            available = psutil.virtual_memory().available / 2**20
            rss = psutil.Process().memory_info().rss / 2**20
        except Exception:  # noqa: BLE001 - psutil missing or unsupported here
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

    def _probe(self, example: np.ndarray, b: int) -> tuple[float, float]:
        """(peak memory of the device, peak bytes of the tensors created) of one pass over `b` copies of
        `example`, in MB. Tensors are counted on a CPU only: there the resident set misses what the allocator
        reuses (``TensorPeak``); a CUDA allocator peak already counts them."""
        chunk = np.repeat(example[None], b, axis=0)
        counted = 0.0
        with PeakMemory(self.device) as peak:
            if self.device.type == "cuda":
                self._forward(chunk)
            else:
                try:
                    with TensorPeak() as tensors:
                        self._forward(chunk)
                    counted = tensors.mb
                except (torch.OutOfMemoryError, RuntimeError) as exc:
                    if is_out_of_memory(exc):
                        raise
                    logger.warning("counting tensor memory failed (%s); planning from the resident set only",
                                   exc)
                    self._forward(chunk)
        return peak.mb, counted  # PeakMemory sets peak.mb when its block ends

    def plan_batch(self, example: np.ndarray) -> int:
        """Measures the memory of 1 and 2 masked images and sets the batch size to fit the budget.

        On a GPU: the CUDA allocator's peaks. On a CPU: the larger of the resident-set growth and the growth of
        the bytes the passes' tensors hold (``TensorPeak``), over a base of the resident set (weights, inputs,
        everything the process holds) plus the fixed part of one pass, so a large model on a small machine gets
        a batch that fits, not the maximum."""
        budget = self.memory_budget_mb if self.memory_budget_mb is not None else device_memory_mb(self.device)
        rss = resident_mb() if self.device.type != "cuda" else None
        (peak1, tensors1), (peak2, tensors2) = self._probe(example, 1), self._probe(example, 2)
        per_image = max(peak2 - peak1, tensors2 - tensors1, 0.0)
        base = peak1 - per_image
        if rss is not None:
            base = max(base, rss + tensors1 - per_image)
        chosen = batch_for_budget(base, per_image, budget, self.batch_size)
        self.memory_plan = {"budget_mb": budget, "base_mb": base, "per_image_mb": per_image,
                            "batch_size": chosen, "max_batch_size": self.batch_size}
        if self.device.type != "cuda":
            self.memory_plan.update(per_image_resident_mb=max(peak2 - peak1, 0.0),
                                    per_image_tensors_mb=max(tensors2 - tensors1, 0.0))
        if chosen < self.batch_size:
            logger.info("memory budget %.0f MB: %d masked images per pass (%.1f MB each over %.0f MB)", budget,
                        chosen, per_image, base)
        if budget - base <= 0:
            logger.warning("memory budget %.0f MB is below what the model and one pass already hold (%.0f MB): "
                           "one masked image per pass", budget, base)
        self.batch_size = chosen
        self.planned = True
        return chosen

    @property
    def plan_key(self) -> tuple | None:
        """What the memory plan depends on: scorers with the same key can share one plan (``adopt_plan``); None:
        never shared."""
        return None

    def adopt_plan(self, plan: dict) -> None:
        """Takes the memory plan another scorer of the same ``plan_key`` measured (no probe passes): its batch
        size, never above this scorer's own maximum."""
        self.memory_plan = dict(plan)
        self.batch_size = max(1, min(self.batch_size, int(plan["batch_size"])))
        self.planned = True

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
