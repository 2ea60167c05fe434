"""The Attribution record: the order of all regions with its per-token insertion and deletion curves.

Arrays go to ``.npz``, everything else to ``.json`` beside it (``save`` / ``load``).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from eagle_pipelines.core.influence import influence_scores

ARRAYS = ("order", "insertion", "deletion", "objective", "area", "full_score", "empty_score", "influence",
          "labels")


@dataclass
class Attribution:
    order: np.ndarray  # (n,) region ids, most important first
    insertion: np.ndarray  # (n, T) p(y_t | keep order[:k+1])
    deletion: np.ndarray  # (n, T) p(y_t | remove order[:k+1])
    objective: np.ndarray  # (n,) λ1·mean insertion + λ2·(1 − mean deletion) of each prefix
    area: np.ndarray  # (n,) cumulative area fraction of each prefix
    full_score: np.ndarray  # (T,) p with the whole image (= insertion[-1])
    empty_score: np.ndarray  # (T,) p with a black image (= deletion[-1])
    labels: np.ndarray = field(repr=False)  # (H, W) int32 region label map at model resolution
    target_positions: list[int] = field(default_factory=list)
    target_token_ids: list[int] = field(default_factory=list)
    target_words: list[str] = field(default_factory=list)
    answer: str = ""
    prompt: str = ""
    lambda1: float = 1.0
    lambda2: float = 1.0
    strategy: str = "greedy"
    search_params: dict = field(default_factory=dict)
    forward_passes: int = 0
    seconds: float = 0.0
    peak_memory_mb: float = 0.0
    meta: dict = field(default_factory=dict)
    influence: np.ndarray = field(default=None, repr=False)  # (T,)

    def __post_init__(self):
        if self.influence is None:
            self.influence = influence_scores(self.area, self.insertion, self.empty_score)

    @property
    def n_regions(self) -> int:
        return len(self.order)

    def saliency(self, style: str = "remaining") -> np.ndarray:
        """(H, W) float32 map in [0, 1] for display, constant on each region and non-increasing along the order
        (earlier regions are brighter). Scoring uses the order itself, not this map.

        With Δ_k = objective[k] − objective[k−1] (the empty set's objective before the first step):

        - ``remaining`` (default): region k gets 1 − Σ_{j<k} max(Δ_j, 0) / Σ_j max(Δ_j, 0), the share of the
          search's gain still ahead when it was added. The first region is 1; a region added after the decisive
          ones is dark, a region that lowers the objective (a hallucination's trigger, for the counter token)
          adds nothing, and the second half of an object whose halves only count together stays bright.
        - ``reference``: the paper's code, −Σ_{j≤k}|Δ_j| min-max normalised. The first region's own gain drops
          out of the normalisation, so after one decisive region the next one is painted nearly as bright as it,
          whatever it holds.
        """
        start = self.lambda1 * self.empty_score.mean() + self.lambda2 * (1.0 - self.full_score.mean())
        gains = np.diff(np.concatenate([[start], self.objective]))
        if style == "remaining":
            gains = np.maximum(gains, 0.0)
            total = gains.sum()
            score = 1.0 - np.concatenate([[0.0], np.cumsum(gains)[:-1]]) / total if total > 0 else None
        elif style == "reference":
            score = -np.cumsum(np.abs(gains))
            span = score.max() - score.min()
            score = (score - score.min()) / span if span > 0 else None
        else:
            raise ValueError(f"saliency style must be 'remaining' or 'reference', not {style!r}")
        if score is None:  # no gain anywhere: fall back to rank order
            score = 1.0 - np.arange(len(self.order)) / max(len(self.order) - 1, 1)
        per_region = np.empty(len(self.order))
        per_region[self.order] = score
        return per_region[self.labels].astype(np.float32)

    def to_dict(self) -> dict:
        """The JSON part (everything but the arrays)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ARRAYS}

    def save(self, path: str | Path) -> None:
        """Writes ``<path>.npz`` and ``<path>.json`` atomically (temporary files, then rename)."""
        path = Path(path)
        arrays = {name: np.asarray(getattr(self, name)) for name in ARRAYS}
        atomic_write(path.with_suffix(".npz"), lambda f: np.savez_compressed(f, **arrays))
        text = json.dumps(self.to_dict(), indent=1, default=_json_default)
        atomic_write(path.with_suffix(".json"), lambda f: f.write(text.encode()))

    @classmethod
    def load(cls, path: str | Path) -> Attribution:
        path = Path(path)
        with np.load(path.with_suffix(".npz")) as data:
            arrays = {name: data[name] for name in ARRAYS}
        meta = json.loads(path.with_suffix(".json").read_text())
        return cls(**arrays, **meta)

    def plot(self, image=None, token_labels: list[str] | None = None):
        """A figure: saliency over the image (any form `explain` takes, shown at the model's resolution),
        insertion/deletion curves, per-token influence."""
        from eagle_pipelines.core.plotting import plot_attribution

        return plot_attribution(self, image, token_labels)


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if hasattr(value, "__dataclass_fields__"):
        return asdict(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def atomic_write(path: Path, write) -> None:
    """Writes through `write(file)` into a hidden temporary file beside `path`, then renames it into place, so
    a reader never sees a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
