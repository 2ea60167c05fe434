"""How much the image adds to each generated token, layer by layer (the EAGLE poster's diagnostics;
docs/mitigation.md).

For answer token y_t and decoder layer L (its hidden state read through the final norm and the LM head: the logit
lens), with "full" the whole image, "text" the model without the image (the prompt with no vision block) and
"part" the image with only the token's top-k EAGLE regions kept (the rest black, as EAGLE removes regions):

    necessity    N_t^L = log p_L(y_t | full) − log p_L(y_t | text)
    sufficiency  S_t^L = (log p_L(y_t | part) − log p_L(y_t | text)) / (log p_L(y_t | full) − log p_L(y_t | text) + ε)

N_t near 0 (below ``prior_threshold`` nats at the last layer): the token comes as readily without the image, so
it is prior-driven. S_t near 1: the top-k regions carry what the image adds; near 0 or negative: they do not.
S is a ratio: where N_t is near 0 it is unstable and means little (the table flags those tokens as prior-driven).

The model-side passes come from a lens (``models/guidance.py: LogitLens``) and the attributions from
``explain``; this module only holds the arithmetic, the record and its figure (no model, no Kedro).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from eagle_pipelines.core.hallucination import parse_yes_no
from eagle_pipelines.files import atomic_write

ARRAYS = ("logp_full", "logp_text", "logp_part")


def necessity(logp_full: np.ndarray, logp_text: np.ndarray) -> np.ndarray:
    """N = log p(full) − log p(text), elementwise."""
    return np.asarray(logp_full, dtype=np.float64) - np.asarray(logp_text, dtype=np.float64)


def sufficiency(logp_part: np.ndarray, logp_full: np.ndarray, logp_text: np.ndarray, eps: float = 1e-3
                ) -> np.ndarray:
    """S = (log p(part) − log p(text)) / (log p(full) − log p(text) + ε), elementwise."""
    text = np.asarray(logp_text, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):  # N + ε = 0: inf or nan, as the formula gives
        part, full = np.asarray(logp_part, dtype=np.float64), np.asarray(logp_full, dtype=np.float64)
        return (part - text) / (full - text + eps)


@dataclass
class Diagnostics:
    """Necessity and sufficiency of one answer's tokens at every decoder layer.

    Arrays are (L, T): layers 1..L (the outputs of the decoder layers; the last one read through the final norm
    and LM head is the model's own distribution), answer tokens 0..T−1."""

    logp_full: np.ndarray
    logp_text: np.ndarray
    logp_part: np.ndarray
    tokens: list[str] = field(default_factory=list)
    token_ids: list[int] = field(default_factory=list)
    part_regions: list[list[int]] = field(default_factory=list)  # per token: its top-k EAGLE regions
    part_area: list[float] = field(default_factory=list)  # per token: the fraction of the image they cover
    top_k: int = 3
    eps: float = 1e-3
    prior_threshold: float = 0.5
    prompt: str = ""
    answer: str = ""
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        for name in ARRAYS:
            setattr(self, name, np.asarray(getattr(self, name), dtype=np.float64))
        shape = self.logp_full.shape
        if self.logp_full.ndim != 2 or any(getattr(self, n).shape != shape for n in ARRAYS):
            raise ValueError(f"log-probabilities must all be (layers, tokens); got "
                             f"{[getattr(self, n).shape for n in ARRAYS]}")
        if self.tokens and len(self.tokens) != shape[1]:
            raise ValueError(f"{len(self.tokens)} tokens for {shape[1]} columns")

    @property
    def n_layers(self) -> int:
        return self.logp_full.shape[0]

    @property
    def necessity(self) -> np.ndarray:
        """(L, T) N_t per layer."""
        return necessity(self.logp_full, self.logp_text)

    @property
    def sufficiency(self) -> np.ndarray:
        """(L, T) S_t per layer."""
        return sufficiency(self.logp_part, self.logp_full, self.logp_text, self.eps)

    def prior_driven(self) -> np.ndarray:
        """(T,) bool: N_t at the last layer below ``prior_threshold`` (the token comes without the image too)."""
        return self.necessity[-1] < self.prior_threshold

    def table(self) -> list[dict]:
        """One row per token: N_t and S_t at the last layer, the top-k regions, prior-driven or not."""
        n, s, prior = self.necessity[-1], self.sufficiency[-1], self.prior_driven()
        return [{"position": t, "token": self.tokens[t] if self.tokens else str(t),
                 "p_full": float(np.exp(self.logp_full[-1, t])), "p_text": float(np.exp(self.logp_text[-1, t])),
                 "p_part": float(np.exp(self.logp_part[-1, t])), "necessity": float(n[t]),
                 "sufficiency": float(s[t]),
                 "top_regions": self.part_regions[t] if self.part_regions else [],
                 "part_area": self.part_area[t] if self.part_area else None, "prior_driven": bool(prior[t])}
                for t in range(self.logp_full.shape[1])]

    # -- files ---------------------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """Everything as JSON values (arrays as nested lists)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        for name in ARRAYS:
            out[name] = out[name].tolist()
        return out

    @classmethod
    def from_dict(cls, data: dict) -> Diagnostics:
        known = {f.name for f in fields(cls)}
        extra = sorted(set(data) - known)
        if extra:
            raise ValueError(f"not a Diagnostics record (unexpected keys {extra})")
        return cls(**data)

    def save(self, path: str | Path) -> None:
        """Writes ``<path>.json`` atomically."""
        path = Path(path).with_suffix(".json")
        text = json.dumps(self.to_dict(), indent=1)
        atomic_write(path, lambda f: f.write(text.encode()))

    @classmethod
    def load(cls, path: str | Path) -> Diagnostics:
        path = Path(path).with_suffix(".json")
        try:
            return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (json.JSONDecodeError, UnicodeDecodeError, TypeError, ValueError) as exc:
            raise ValueError(f"'{path}' is not a readable Diagnostics record ({exc})") from None

    def plot(self, ax_n=None, ax_s=None, title: str | None = None):
        return plot_diagnostics(self, ax_n, ax_s, title)


def top_regions(attribution, k: int) -> list[int]:
    """The first `k` regions of an attribution's order."""
    return [int(r) for r in np.asarray(attribution.order)[:k]]


def diagnose(lens, image: np.ndarray, prompt: str, answer_ids, tokens: list[str],
             explain_token: Callable[[int], object], top_k: int = 3, eps: float = 1e-3,
             prior_threshold: float = 0.5, answer: str = "", meta: dict | None = None) -> Diagnostics:
    """Necessity and sufficiency of every answer token at every layer.

    `lens` gives per-layer log-probabilities (``image_logprobs(image, prompt, ids, keep_masks)`` → (1 + M, L, T),
    ``text_logprobs(prompt, ids)`` → (L, T); ``models/guidance.py: LogitLens``); `explain_token(t)` returns the
    EAGLE attribution of answer token t (its ``labels`` at `image`'s resolution). "part" for token t keeps its
    top-k regions. Passes: one with the image, one without, one per token for its part."""
    answer_ids = [int(t) for t in answer_ids]
    if not answer_ids:
        raise ValueError("the answer is empty: no tokens to diagnose")
    masks, regions, areas = [], [], []
    for t in range(len(answer_ids)):
        attribution = explain_token(t)
        top = top_regions(attribution, top_k)
        mask = np.isin(attribution.labels, top)
        if mask.shape != image.shape[:2]:
            raise ValueError(f"token {t}: the attribution's label map {mask.shape} is not at the image's "
                             f"resolution {image.shape[:2]}")
        masks.append(mask)
        regions.append(top)
        areas.append(float(mask.mean()))
    with_image = lens.image_logprobs(image, prompt, answer_ids, np.stack(masks))  # (1 + T, L, T)
    text = lens.text_logprobs(prompt, answer_ids)
    part = np.stack([with_image[1 + t, :, t] for t in range(len(answer_ids))], axis=1)  # (L, T)
    return Diagnostics(logp_full=with_image[0], logp_text=text, logp_part=part, tokens=list(tokens),
                       token_ids=answer_ids, part_regions=regions, part_area=areas, top_k=top_k, eps=eps,
                       prior_threshold=prior_threshold, prompt=prompt, answer=answer, meta=dict(meta or {}))


def plot_diagnostics(diag: Diagnostics, ax_n=None, ax_s=None, title: str | None = None):
    """Two heat maps, tokens × layers: N_t (diverging around 0; prior-driven tokens' labels in red) and S_t
    (clipped to [−1, 2]), each cell its value in a readable font, each colour bar in its own column beside its map
    (constrained layout: never over the cells), the title wrapped to the figure's width. Returns the figure."""
    import textwrap

    import matplotlib.pyplot as plt

    t = diag.logp_full.shape[1]
    if ax_n is None or ax_s is None:
        width = max(8.0, 2 * (1.6 + 0.62 * t) + 1.2)
        fig, (ax_n, ax_s) = plt.subplots(1, 2, figsize=(width, 1.9 + 0.42 * diag.n_layers + 0.9), squeeze=True,
                                         layout="constrained")
    else:
        fig = ax_n.figure
    n = diag.necessity
    span = max(float(np.abs(n).max()), 1e-6)
    layers = [str(i + 1) for i in range(diag.n_layers)]
    labels = diag.tokens or [str(i) for i in range(t)]
    prior = diag.prior_driven()
    for ax, values, name, kwargs in (
            (ax_n, n, "necessity N (nats)", {"cmap": "RdBu_r", "vmin": -span, "vmax": span}),
            (ax_s, np.clip(diag.sufficiency, -1, 2), f"sufficiency S (top-{diag.top_k} regions)",
             {"cmap": "viridis", "vmin": -1, "vmax": 2})):
        im = ax.imshow(values, aspect="auto", origin="lower", **kwargs)
        ax.set_xticks(range(t), labels, rotation=45, ha="right", fontsize=10)
        for tick, p in zip(ax.get_xticklabels(), prior):
            if p:
                tick.set_color("red")
        ax.set_yticks(range(diag.n_layers), layers, fontsize=10)
        ax.set_ylabel("layer", fontsize=10)
        ax.set_xlabel("answer token (red: prior-driven)", fontsize=9)
        ax.set_title(name, fontsize=11)
        cmap, norm = im.get_cmap(), im.norm
        for (i, j), v in np.ndenumerate(values):
            r, g, b, _ = cmap(norm(v))
            ax.text(j, i, f"{v:.1f}", ha="center", va="center", fontsize=9,
                    color="black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white")
        bar = fig.colorbar(im, ax=ax, location="right", shrink=0.9, pad=0.02)
        bar.ax.tick_params(labelsize=9)
    if title:
        chars = max(30, int(fig.get_figwidth() * 72 / (0.62 * 10)))
        fig.suptitle("\n".join(textwrap.wrap(title, chars)), fontsize=10)
    if fig.get_layout_engine() is None:
        fig.tight_layout()
    return fig


# --- the mitigation's measurements (eagle_mitigation) ------------------------------------------------------------
def objects_named(text: str, categories: list[str]) -> set[str]:
    """The category names ("red circle") a caption names, as whole words."""
    import re

    words = re.findall(r"[a-z]+", text.lower())
    pairs = {f"{a} {b}" for a, b in zip(words, words[1:])}
    return {c for c in categories if c in pairs}


def setting_metrics(rows: list[dict], companion: str, categories: list[str]) -> dict:
    """One guidance setting's figures over its answers (`rows`: kind, text, label, objects (present names),
    decode_passes, evidence_passes, seconds):

    - ``hallucination_rate_biased``: share of biased questions ("Is there a <companion>?", label no) read as yes;
    - ``accuracy_unbiased``: share of control questions read as their label;
    - ``companion_rate_captions``: share of biased images' captions that name the companion;
    - ``object_hallucination_captions``: share of biased images' captions that name any absent object;
    - ``exact_match_biased_captions``, ``exact_match_unbiased_captions``: caption equal to the reference;
    - cost: mean ``decode_passes``, ``evidence_passes`` and ``seconds`` per answer."""
    def share(values):
        return float(np.mean(values)) if len(values) else float("nan")

    by_kind: dict[str, list[dict]] = {}
    for r in rows:
        by_kind.setdefault(r["kind"], []).append(r)
    biased_q, control_q = by_kind.get("biased_question", []), by_kind.get("control_question", [])
    biased_c, unbiased_c = by_kind.get("biased_caption", []), by_kind.get("unbiased_caption", [])

    def absent_named(r):
        present = set(filter(None, str(r["objects"]).split(";")))
        return bool(objects_named(r["text"], categories) - present)

    return {
        "n_biased_questions": len(biased_q), "n_control_questions": len(control_q),
        "n_biased_captions": len(biased_c), "n_unbiased_captions": len(unbiased_c),
        "hallucination_rate_biased": share([parse_yes_no(r["text"]) == "yes" for r in biased_q]),
        "accuracy_unbiased": share([parse_yes_no(r["text"]) == r["label"] for r in control_q]),
        "companion_rate_captions": share([companion in objects_named(r["text"], categories) for r in biased_c]),
        "object_hallucination_captions": share([absent_named(r) for r in biased_c]),
        "exact_match_biased_captions": share([r["text"] == r["label"] for r in biased_c]),
        "exact_match_unbiased_captions": share([r["text"] == r["label"] for r in unbiased_c]),
        "decode_passes": share([r["decode_passes"] for r in rows]),
        "evidence_passes": share([r["evidence_passes"] for r in rows]),
        "seconds_per_answer": share([r["seconds"] for r in rows]),
    }


def best_setting(table: list[dict], max_drop: float = 0.02) -> dict | None:
    """The guided setting (rows after the first, the unguided baseline) with the lowest hallucination rate on
    biased questions, then the fewest companions and absent objects in captions, among those that lower neither
    unbiased accuracy nor unbiased caption exact match by more than `max_drop` and improve on the baseline in at
    least one hallucination figure. None when no setting qualifies (guidance did not help)."""
    if len(table) < 2:
        return None
    base = table[0]
    keys = ("hallucination_rate_biased", "companion_rate_captions", "object_hallucination_captions")

    def value(row, key):
        v = row[key]
        return float("inf") if v is None or not np.isfinite(v) else v

    ok = [r for r in table[1:]
          if all(not np.isfinite(base[k]) or r[k] >= base[k] - max_drop - 1e-12
                 for k in ("accuracy_unbiased", "exact_match_unbiased_captions"))
          and any(value(r, k) < value(base, k) for k in keys)]
    if not ok:
        return None
    return min(ok, key=lambda r: tuple(value(r, k) for k in keys) + (r["seconds_per_answer"],))
