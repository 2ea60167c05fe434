"""The Attribution record: the order of all regions with its per-token insertion and deletion curves.

Arrays go to ``.npz``, everything else to ``.json`` beside it (``save`` / ``load``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from eagle_pipelines.core.influence import influence_scores
from eagle_pipelines.core.plotting import plot_attribution
from eagle_pipelines.files import atomic_write


class CorruptAttributionError(ValueError):
    """A saved Attribution whose files are truncated, damaged or incomplete; the message names the file."""


ARRAYS = ("order", "insertion", "deletion", "objective", "area", "full_score", "empty_score", "influence",
          "labels")


@dataclass
class Attribution:
    order: np.ndarray  # (n,) region ids, most important first
    insertion: np.ndarray  # (n, T) p(y_t | keep order[:k+1])
    deletion: np.ndarray  # (n, T) p(y_t | remove order[:k+1])
    objective: np.ndarray  # (n,) the search's recorded score of each prefix: λ1·mean insertion + λ2·(1 − mean
                           # deletion); strategy `efficient` records insertion + 1 − deletion (no λ), as the reference
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
        l1, l2 = (1.0, 1.0) if self.strategy == "efficient" else (self.lambda1, self.lambda2)  # as recorded
        start = l1 * self.empty_score.mean() + l2 * (1.0 - self.full_score.mean())
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
        return record_dict(self, ARRAYS)

    def save(self, path: str | Path) -> None:
        """Writes ``<path>.npz`` and ``<path>.json`` atomically (temporary files, then rename)."""
        save_record(path, self, ARRAYS, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> Attribution:
        """Reads ``<path>.npz`` and ``<path>.json``. A missing file is a FileNotFoundError; a truncated, corrupt
        or incomplete pair is a ``CorruptAttributionError`` (a ValueError) naming the file and what is wrong."""
        path = Path(path)
        npz, meta_file = path.with_suffix(".npz"), path.with_suffix(".json")
        for file in (npz, meta_file):
            if not file.is_file():
                raise FileNotFoundError(f"attribution file '{file}' does not exist")
        try:
            with np.load(npz, allow_pickle=False) as data:
                missing = [name for name in ARRAYS if name not in data.files]
                if missing:
                    raise CorruptAttributionError(f"'{npz}' lacks the arrays {missing}")
                arrays = {name: data[name] for name in ARRAYS}
        except CorruptAttributionError:
            raise
        except Exception as exc:  # noqa: BLE001 - zip, zlib, pickle and format errors all mean a damaged file
            raise CorruptAttributionError(f"'{npz}' cannot be read ({type(exc).__name__}: {exc})") from None
        try:
            meta = json.loads(meta_file.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CorruptAttributionError(f"'{meta_file}' is not valid JSON ({exc})") from None
        known = {f.name for f in fields(cls)} - set(ARRAYS)
        if not isinstance(meta, dict) or set(meta) - known:
            extra = sorted(set(meta) - known) if isinstance(meta, dict) else type(meta).__name__
            raise CorruptAttributionError(f"'{meta_file}' is not an Attribution record (unexpected: {extra})")
        wrong = _inconsistent(arrays, meta)
        if wrong:
            raise CorruptAttributionError(f"'{npz}' and '{meta_file.name}' do not make an Attribution: {wrong}")
        try:
            return cls(**arrays, **meta)
        except Exception as exc:  # noqa: BLE001 - arrays that do not fit together
            raise CorruptAttributionError(f"'{path}' does not make an Attribution ({type(exc).__name__}: "
                                          f"{exc})") from None

    def plot(self, image=None, token_labels: list[str] | None = None):
        """A figure: saliency over the image (any form `explain` takes, shown at the model's resolution),
        insertion/deletion curves, per-token influence."""
        return plot_attribution(self, image, token_labels)


def _inconsistent(arrays: dict, meta: dict) -> str:
    """What does not fit together in a loaded Attribution's arrays and record ('' when all does)."""
    order = arrays["order"]
    if order.ndim != 1 or not np.issubdtype(order.dtype, np.integer):
        return f"order is {order.dtype} of shape {order.shape}, not (n,) integers"
    n = len(order)
    if not np.array_equal(np.sort(order), np.arange(n)):
        return f"order is not a permutation of the {n} regions"
    t = len(meta.get("target_positions", []))
    shapes = {"insertion": (n, t), "deletion": (n, t), "objective": (n,), "area": (n,), "full_score": (t,),
              "empty_score": (t,), "influence": (t,)}
    for name, shape in shapes.items():
        if arrays[name].shape != shape:
            return f"{name} is {arrays[name].shape}, expected {shape} (n={n} regions, T={t} tokens)"
    labels = arrays["labels"]
    if labels.ndim not in (2, 3) or labels.size == 0 or labels.min() < 0 or labels.max() >= n:  # 3: a clip's
        return f"labels of shape {labels.shape} are not a map of the {n} regions"
    return ""


def record_dict(record, arrays: tuple[str, ...]) -> dict:
    """A dataclass record's fields but `arrays`: what goes to its ``.json``."""
    return {f.name: getattr(record, f.name) for f in fields(record) if f.name not in arrays}


def save_record(path: str | Path, record, arrays: tuple[str, ...], meta: dict) -> None:
    """Writes `record`'s fields named in `arrays` to ``<path>.npz`` and `meta` to ``<path>.json``, each atomically
    (a temporary file, then rename); the .json last, so it marks a finished pair (``Attribution``,
    ``JointAttribution``)."""
    path = Path(path)
    data = {name: np.asarray(getattr(record, name)) for name in arrays}
    atomic_write(path.with_suffix(".npz"), lambda f: np.savez_compressed(f, **data))
    text = json.dumps(meta, indent=1, default=_json_default)
    atomic_write(path.with_suffix(".json"), lambda f: f.write(text.encode()))


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if hasattr(value, "__dataclass_fields__"):
        return asdict(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")
