"""Per-token influence: how much a token's probability rises as image regions are inserted.

For token t, with x = [0] + area and y = [p_t(black image)] + insertion curve, influence = ∫ y dx − min(y).
High: the token depends on visual evidence. Low: it is already likely from a black image (a language prior, or
the generated prefix)."""

from __future__ import annotations

import numpy as np


def influence_scores(area: np.ndarray, insertion: np.ndarray, empty_score: np.ndarray) -> np.ndarray:
    """(T,) influence of each explained token from the (n,) area and (n, T) insertion curves."""
    x = np.concatenate([[0.0], np.asarray(area, dtype=float)])
    y = np.concatenate([np.asarray(empty_score, dtype=float)[None], np.asarray(insertion, dtype=float)])
    return np.trapezoid(y, x, axis=0) - y.min(axis=0)
