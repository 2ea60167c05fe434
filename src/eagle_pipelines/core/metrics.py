"""Faithfulness and localisation metrics, one protocol for every method.

Curves: `area` (n,) is the fraction of the image kept (insertion) or removed (deletion) after step k; `insertion`
and `deletion` (n, T) are the explained tokens' probabilities at each step. The step before the first is the
black image for insertion (= the last deletion point) and the full image for deletion (= the last insertion
point), as in the reference implementation.

- insertion AUC: trapezoid over x = [0] + area, y = [p(black)] + mean_t insertion
- deletion AUC: trapezoid over x = [0] + area, y = [p(full)] + mean_t deletion
- highest confidence: the maximum of the insertion curve (averaged over samples: AHC)
- sensitive-token variants: the same over tokens with p(full) − p(black) > 0.2 only
- Point Game: a hit when the map's maximum inside the object's box (or mask) equals its global maximum
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SENSITIVE_THRESHOLD = 0.2


class MetricError(ValueError):
    """A metric is undefined for this input (e.g. no token to average over); the message says why."""


@dataclass(frozen=True)
class Curves:
    area: np.ndarray  # (n,)
    insertion: np.ndarray  # (n, T)
    deletion: np.ndarray  # (n, T)

    def __post_init__(self):
        if self.insertion.shape != self.deletion.shape or self.insertion.shape[0] != len(self.area):
            raise MetricError(f"curve shapes disagree: area {self.area.shape}, insertion {self.insertion.shape}, "
                              f"deletion {self.deletion.shape}")

    @property
    def full_score(self) -> np.ndarray:
        return self.insertion[-1]

    @property
    def empty_score(self) -> np.ndarray:
        return self.deletion[-1]

    def tokens(self, which: np.ndarray | None) -> np.ndarray:
        index = np.arange(self.insertion.shape[1]) if which is None else np.asarray(which, dtype=int)
        if index.size == 0:
            raise MetricError("no token to average over (empty token set)")
        return index

    def insertion_curve(self, tokens=None) -> tuple[np.ndarray, np.ndarray]:
        t = self.tokens(tokens)
        x = np.concatenate([[0.0], self.area])
        y = np.concatenate([[self.deletion[-1, t].mean()], self.insertion[:, t].mean(axis=1)])
        return x, y

    def deletion_curve(self, tokens=None) -> tuple[np.ndarray, np.ndarray]:
        t = self.tokens(tokens)
        x = np.concatenate([[0.0], self.area])
        y = np.concatenate([[self.insertion[-1, t].mean()], self.deletion[:, t].mean(axis=1)])
        return x, y


def insertion_auc(curves: Curves, tokens=None) -> float:
    return float(np.trapezoid(*reversed(curves.insertion_curve(tokens))))


def deletion_auc(curves: Curves, tokens=None) -> float:
    return float(np.trapezoid(*reversed(curves.deletion_curve(tokens))))


def highest_confidence(curves: Curves, tokens=None) -> float:
    return float(curves.insertion_curve(tokens)[1].max())


def sensitive_tokens(curves: Curves, threshold: float = SENSITIVE_THRESHOLD) -> np.ndarray:
    """Indices of the tokens whose probability the image moves by more than `threshold`."""
    return np.flatnonzero(curves.full_score - curves.empty_score > threshold)


def faithfulness(curves: Curves) -> dict[str, float | None]:
    """All faithfulness metrics of one sample; the sensitive ones are None when no token is sensitive."""
    row: dict[str, float | None] = {
        "insertion_auc": insertion_auc(curves),
        "deletion_auc": deletion_auc(curves),
        "highest_confidence": highest_confidence(curves),
    }
    sensitive = sensitive_tokens(curves)
    for name, fn in (("insertion_auc", insertion_auc), ("deletion_auc", deletion_auc),
                     ("highest_confidence", highest_confidence)):
        row[f"{name}_sensitive"] = fn(curves, sensitive) if sensitive.size else None
    row["n_sensitive_tokens"] = int(sensitive.size)
    return row


def point_game(saliency: np.ndarray, box: tuple[float, float, float, float] | None = None,
               mask: np.ndarray | None = None) -> bool:
    """Hit when the maximum of `saliency` inside the object (COCO box [x, y, w, h], or a boolean mask) equals the
    global maximum. Ties count as hits: any pixel of the object reaching the global maximum is enough."""
    if (box is None) == (mask is None):
        raise MetricError("give the object as a box or as a mask (exactly one)")
    if mask is None:
        x, y, w, h = box
        region = np.zeros(saliency.shape, dtype=bool)
        region[int(np.floor(y)):int(np.ceil(y + h)), int(np.floor(x)):int(np.ceil(x + w))] = True
    else:
        region = np.asarray(mask, dtype=bool)
        if region.shape != saliency.shape:
            raise MetricError(f"mask {region.shape} and map {saliency.shape} differ in size")
    if not region.any():
        raise MetricError("the object covers no pixel of the map")
    return bool(saliency[region].max() >= saliency.max())


PIXEL_TIES = ("stable", "numpy_default")


def pixel_ranking(saliency: np.ndarray, ties: str = "stable") -> np.ndarray:
    """Pixel indices (raveled), highest saliency first. ``stable``: equal values in raster order; ``numpy_default``:
    the reference's ``np.argsort(-mask_flatten)`` on the map as given (numpy's default, unstable sort: the order of
    equal values is whatever that numpy build's sort leaves, e.g. not raster order on a plateau of a 32x32 map)."""
    if ties == "stable":
        return np.argsort(-np.asarray(saliency, dtype=float).ravel(), kind="stable")
    if ties == "numpy_default":
        return np.argsort(-np.asarray(saliency).ravel())
    raise MetricError(f"pixel ties must be one of {PIXEL_TIES}, got {ties!r}")


def pixel_order_masks(saliency: np.ndarray, steps: int, ties: str = "stable") -> tuple[np.ndarray, np.ndarray]:
    """The pixel protocol: rank pixels by saliency (highest first, ties as `ties` says: ``pixel_ranking``) and mark
    the top i/steps of them for i = 1..steps. Returns keep masks (steps, H, W) and the exact area fractions."""
    if steps < 1:
        raise MetricError(f"steps must be positive, got {steps}")
    flat = np.asarray(saliency, dtype=float).ravel()
    order = pixel_ranking(saliency, ties)
    rank = np.empty_like(order)
    rank[order] = np.arange(flat.size)
    counts = np.round(np.arange(1, steps + 1) / steps * flat.size).astype(int)
    masks = rank[None, :] < counts[:, None]
    return masks.reshape(steps, *saliency.shape), counts / flat.size
