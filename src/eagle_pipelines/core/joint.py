"""Joint attribution: one EAGLE ordering over image regions ∪ prompt units (words of the user's prompt).

The candidate set is the n_r image regions followed by the n_p prompt units: candidate ``i < n_r`` is region i,
candidate ``n_r + j`` is prompt unit j. A keep-row of the search (B, n_r + n_p) keeps the regions and units it
marks and removes the others, so every strategy of the registry (``core/strategies.py``) searches the joint set
unchanged through ``JointScorer``; the answer stays teacher-forced as in the image-only search.

Prompt units are the words of the user's prompt (maximal runs of word characters, ``\\w+``) as the tokenizer
splits them, found inside the chat template's sequence; the template's own tokens (system prompt, role names,
vision and end markers) and the prompt's punctuation are never candidates and are always kept.

Removal rule (docs/method.md, "Joint attribution"): a removed unit's tokens are each replaced by the tokenizer's
pad token (``NEUTRAL``: its pad token, else its unknown token, else its end-of-sequence token), keeping the count,
the positions and the attention mask. This is the text analogue of the image's zero fill (a removed region is
black, not cut out): the sequence keeps its length, so the image tokens, the rotary positions of every other
token and the teacher-forced answer positions are those of the full input, and only the word's content is gone.
Dropping the tokens would shift every later position (a change the objective would attribute to the word) and
give the batch's rows different lengths.

Per explained token: the joint order, the insertion/deletion curves over the joint set (``joint_auc``), the
modality share (``modality_share``: the share of the positive insertion gains brought by prompt units vs regions)
and N_t (``core/influence.py``) over the regions' area, a prompt step adding no area.
"""

from __future__ import annotations

import logging
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from eagle_pipelines.core.attribution import record_dict, save_record
from eagle_pipelines.core.influence import influence_scores
from eagle_pipelines.core.search import CountingScorer, SearchTrace

#: a word of the prompt: a maximal run of word characters
WORD = re.compile(r"\w+")
#: prompt_units values: "words" (every word of the prompt), or a list of words/phrases of the prompt
UNIT_MODES = ("words",)
IMAGE, PROMPT = "image", "prompt"
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PromptUnit:
    """One prompt unit: its text, its character span in the prompt, and its tokens' positions in the templated
    sequence with their ids."""

    text: str
    start: int
    end: int
    positions: tuple[int, ...]
    token_ids: tuple[int, ...]


def neutral_token_id(tokenizer) -> int:
    """The token that replaces a removed unit's tokens: the tokenizer's pad token, else its unknown token, else
    its end-of-sequence token."""
    for name in ("pad_token_id", "unk_token_id", "eos_token_id"):
        value = getattr(tokenizer, name, None)
        if value is not None:
            return int(value)
    raise ValueError("the tokenizer has no pad, unknown or end-of-sequence token to replace removed prompt words by")


def prompt_span(tokenizer, sequence_ids, prompt: str) -> tuple[int, list[tuple[int, int]]]:
    """(where the user's prompt starts in `sequence_ids`, the character offsets of its tokens): the prompt's own
    tokens found as one run in the templated sequence (the last occurrence: the template's text comes first)."""
    enc = tokenizer(prompt, add_special_tokens=False, return_offsets_mapping=True)
    words, offsets = list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]
    ids = [int(i) for i in sequence_ids]
    if not words:
        raise ValueError(f"the prompt {prompt!r} has no tokens to attribute")
    for at in range(len(ids) - len(words), -1, -1):
        if ids[at:at + len(words)] == words:
            return at, offsets
    raise ValueError(f"the prompt {prompt!r} is not found as its own tokens in the chat template's sequence (the "
                     f"tokenizer merges it with the template's text); prompt units need it tokenised apart")


def _spans(prompt: str, units) -> list[tuple[int, int]]:
    """Character spans of the requested units: every word (``"words"``) or each given word/phrase (its first
    whole-word occurrence, case-insensitive). A unit not in the prompt is a ValueError naming it."""
    if isinstance(units, str):
        if units not in UNIT_MODES:
            raise ValueError(f"prompt_units must be one of {list(UNIT_MODES)} or a list of words/phrases of the "
                             f"prompt; got {units!r}")
        return [m.span() for m in WORD.finditer(prompt)]
    if not isinstance(units, (list, tuple)) or not all(isinstance(u, str) for u in units):
        raise ValueError(f"prompt_units must be 'words' or a list of words/phrases of the prompt; got {units!r}")
    spans = []
    for unit in units:
        if not unit.strip():
            raise ValueError(f"prompt_units holds an empty unit: {list(units)!r}")
        found = re.search(r"(?<!\w)" + re.escape(unit.strip()) + r"(?!\w)", prompt, flags=re.IGNORECASE)
        if found is None:
            raise ValueError(f"prompt unit {unit!r} is not in the prompt {prompt!r}; give words or phrases of the "
                             f"prompt, or prompt_units='words'")
        if any(found.start() < e and s < found.end() for s, e in spans):
            raise ValueError(f"prompt unit {unit!r} overlaps another unit of {list(units)!r}; give each word once")
        spans.append(found.span())
    return spans


def prompt_units(tokenizer, sequence_ids, prompt: str, units="words") -> list[PromptUnit]:
    """The prompt units of `prompt` inside the templated `sequence_ids`: each unit's tokens are those whose
    characters overlap it (a token spanning two units merges them). Units without a token (none in a word-level
    vocabulary) are left out; the template's tokens and the prompt's punctuation are never units."""
    check_prompt_text(prompt)
    start, offsets = prompt_span(tokenizer, sequence_ids, prompt)
    ids = [int(i) for i in sequence_ids]
    groups: list[list] = []  # [s, e, positions]
    for s, e in sorted(_spans(prompt, units)):
        tokens = [start + k for k, (a, b) in enumerate(offsets) if a < e and s < b and b > a]
        if not tokens:
            continue
        if groups and set(tokens) & set(groups[-1][2]):  # a token shared by two units: one unit
            groups[-1] = [groups[-1][0], e, sorted(set(groups[-1][2]) | set(tokens))]
        else:
            groups.append([s, e, tokens])
    return [PromptUnit(prompt[s:e], s, e, tuple(p), tuple(ids[q] for q in p)) for s, e, p in groups]


def check_prompt_text(prompt) -> None:
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(f"prompt must be a non-empty string to attribute its words; got {prompt!r}")


def removed_ids(base_ids: np.ndarray, units: list[PromptUnit], keep_units: np.ndarray, neutral: int) -> np.ndarray:
    """`base_ids` with the tokens of each unit not kept replaced by `neutral` (same count, same positions)."""
    ids = np.array(base_ids, copy=True)
    for unit, kept in zip(units, np.asarray(keep_units, dtype=bool)):
        if not kept:
            ids[list(unit.positions)] = neutral
    return ids


class JointScorer:
    """Keep-rows (B, n_r + n_p) over regions ∪ prompt units -> (B, T) probabilities of the explained tokens.

    `scorer` is a teacher-forced pixel scorer holding its sequence inputs in ``scorer.sequence["input_ids"]``
    (``models/adapter.py: TeacherForcedScorer``); `regions` a RegionMap (``masks(keep)``). Rows are grouped by
    their prompt-unit pattern: each group is scored with that pattern's input ids (``removed_ids``)."""

    def __init__(self, scorer, regions, units: list[PromptUnit], neutral: int):
        sequence = getattr(scorer, "sequence", None)
        if not isinstance(sequence, dict) or "input_ids" not in sequence:
            raise ValueError(f"prompt units need a model scored with its token ids (a transformers checkpoint); "
                             f"{type(scorer).__name__} scores without them")
        self.scorer, self.regions, self.units, self.neutral = scorer, regions, list(units), int(neutral)
        self.n_image = int(regions.n_regions)
        self.n = self.n_image + len(self.units)
        self.base = sequence["input_ids"]

    def input_ids(self, keep_units: np.ndarray):
        """The sequence's input ids with the units not in `keep_units` removed (same type as the scorer's)."""
        base = self.base
        ids = removed_ids(base.detach().cpu().numpy() if hasattr(base, "detach") else np.asarray(base),
                          self.units, keep_units, self.neutral)
        if hasattr(base, "new_tensor"):
            return base.new_tensor(ids)
        return ids

    def __call__(self, keep: np.ndarray) -> np.ndarray:
        keep = np.asarray(keep, dtype=bool)
        masks = self.regions.masks(keep[:, :self.n_image])
        if not self.units:
            return np.asarray(self.scorer(masks), dtype=np.float64)
        text = keep[:, self.n_image:]
        patterns, group = np.unique(text, axis=0, return_inverse=True)
        group = np.asarray(group).reshape(-1)
        out = None
        sequence = self.scorer.sequence
        try:
            for g, pattern in enumerate(patterns):
                rows = np.flatnonzero(group == g)
                self.scorer.sequence = {**sequence, "input_ids": self.input_ids(pattern)}
                probs = np.asarray(self.scorer(masks[rows]), dtype=np.float64)
                if out is None:
                    out = np.empty((len(keep), probs.shape[1]))
                out[rows] = probs
        finally:
            self.scorer.sequence = sequence
        return out


def modality_of(order: np.ndarray, n_image: int) -> list[str]:
    """Each step's modality: ``image`` for a region (id < n_image), ``prompt`` for a prompt unit."""
    return [IMAGE if int(i) < n_image else PROMPT for i in order]


def modality_share(insertion: np.ndarray, empty_score: np.ndarray, modality: list[str]) -> dict[str, np.ndarray]:
    """Per token, the share of the insertion curve's positive gains (p(keep S_k) − p(keep S_{k−1}), S_0 the empty
    set) brought by prompt units and by regions; NaN for a token whose curve never rises."""
    curve = np.concatenate([np.asarray(empty_score, dtype=float)[None], np.asarray(insertion, dtype=float)])
    gains = np.maximum(np.diff(curve, axis=0), 0.0)  # (N, T)
    is_prompt = np.array([m == PROMPT for m in modality], dtype=bool)
    total = gains.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        prompt = np.where(total > 0, gains[is_prompt].sum(axis=0) / total, np.nan)
    return {PROMPT: prompt, IMAGE: np.where(total > 0, 1.0 - prompt, np.nan)}


def joint_auc(curve: np.ndarray, start: np.ndarray) -> np.ndarray:
    """(T,) area under [start] + curve over the joint steps 0..N on x in [0, 1] (trapezoids, step 1/N): insertion
    with `start` the empty input's p, deletion with the full input's."""
    y = np.concatenate([np.asarray(start, dtype=float)[None], np.asarray(curve, dtype=float)])
    return np.trapezoid(y, dx=1.0 / (len(y) - 1), axis=0)


def joint_area(order: np.ndarray, regions, n_image: int) -> np.ndarray:
    """(N,) cumulative image area of each joint prefix (a prompt unit adds none)."""
    sizes = np.bincount(np.asarray(regions.labels).ravel(), minlength=n_image) / np.asarray(regions.labels).size
    return np.cumsum([sizes[i] if i < n_image else 0.0 for i in np.asarray(order)])


JOINT_ARRAYS = ("order", "insertion", "deletion", "objective", "area", "full_score", "empty_score", "labels",
                "prompt_share", "influence")


@dataclass
class JointAttribution:
    """The joint record: `order` over regions (ids < n_image) and prompt units (n_image + j), each step's
    `modality`, the curves over the joint set, and per token the prompt's share of the insight gain beside N_t
    (`influence`, over the regions' area)."""

    order: np.ndarray  # (N,)
    insertion: np.ndarray  # (N, T) p(y_t | keep order[:k+1])
    deletion: np.ndarray  # (N, T) p(y_t | remove order[:k+1])
    objective: np.ndarray  # (N,)
    area: np.ndarray  # (N,) cumulative image area (prompt steps add none)
    full_score: np.ndarray  # (T,) whole image, whole prompt
    empty_score: np.ndarray  # (T,) black image, every unit replaced
    labels: np.ndarray = field(repr=False)
    prompt_share: np.ndarray = None  # (T,)
    influence: np.ndarray = None  # (T,) N_t
    n_image: int = 0
    units: list = field(default_factory=list)  # PromptUnit dicts
    modality: list = field(default_factory=list)
    removal: str = "pad"
    neutral_token_id: int = -1
    target_positions: list = field(default_factory=list)
    target_token_ids: list = field(default_factory=list)
    target_words: list = field(default_factory=list)
    answer: str = ""
    prompt: str = ""
    lambda1: float = 1.0
    lambda2: float = 1.0
    strategy: str = "pooled"
    search_params: dict = field(default_factory=dict)
    forward_passes: int = 0
    seconds: float = 0.0
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        if not self.modality:
            self.modality = modality_of(self.order, self.n_image)
        if self.prompt_share is None:
            self.prompt_share = modality_share(self.insertion, self.empty_score, self.modality)[PROMPT]
        if self.influence is None:
            self.influence = influence_scores(self.area, self.insertion, self.empty_score)

    @property
    def n_units(self) -> int:
        return len(self.units)

    def step_names(self) -> list[str]:
        """Each step as ``region <i>`` or the prompt unit's text in quotes."""
        return [f"region {int(i)}" if i < self.n_image else repr(self.units[int(i) - self.n_image]["text"])
                for i in self.order]

    def unit_ranks(self) -> dict[str, int]:
        """Each prompt unit's rank in the joint order (1 = first)."""
        return {self.units[int(i) - self.n_image]["text"]: k + 1 for k, i in enumerate(self.order)
                if i >= self.n_image}

    def aucs(self) -> dict[str, float]:
        """Mean over tokens of the joint insertion and deletion AUC (``joint_auc``)."""
        return {"insertion_auc": float(joint_auc(self.insertion, self.empty_score).mean()),
                "deletion_auc": float(joint_auc(self.deletion, self.full_score).mean())}

    def region_order(self) -> np.ndarray:
        """The regions in their joint order."""
        return np.array([int(i) for i in self.order if i < self.n_image])

    def row(self) -> dict:
        """The summary row (eagle-explain's summary.csv)."""
        ranks = self.unit_ranks()
        first = next((name for name, m in zip(self.step_names(), self.modality) if m == PROMPT), "")
        return {"answer": self.answer, "explained": " ".join(self.target_words), "regions": self.n_image,
                "prompt_units": self.n_units, "strategy": self.strategy, **self.aucs(),
                "prompt_share": float(np.nanmean(self.prompt_share)) if np.isfinite(self.prompt_share).any()
                else float("nan"),
                "mean_influence": float(np.mean(self.influence)), "first_step": self.step_names()[0],
                "first_prompt_unit": first.strip("'"), "first_unit_rank": min(ranks.values(), default=0),
                "forward_passes": self.forward_passes, "seconds": self.seconds}

    def summary_lines(self) -> list[str]:
        """What eagle-explain prints for one joint attribution."""
        row = self.row()
        ranks = self.unit_ranks()
        lines = [f"answer: {self.answer}",
                 f"explained: {row['explained']!r} ({len(self.target_positions)} tokens), {self.n_image} regions + "
                 f"{self.n_units} prompt units, {self.strategy}: {self.forward_passes} forward passes in "
                 f"{self.seconds:.1f} s",
                 "joint order (first 8): " + ", ".join(self.step_names()[:8]),
                 "prompt units by rank: " + ", ".join(f"{w!r} {k}" for w, k in sorted(ranks.items(),
                                                                                     key=lambda x: x[1])),
                 f"insertion AUC {row['insertion_auc']:.3f}, deletion AUC {row['deletion_auc']:.3f} (joint steps)"]
        lines.append("per token: prompt share of the insight gain, N_t (influence over the image's area): " + ", ".join(
            f"{t}: {p:.2f}, {n:.3f}" for t, p, n in zip(self.target_words, self.prompt_share, self.influence)))
        return lines

    def plot(self, image=None):
        """The regions' ranks in the joint order over the image, the prompt with its words coloured by rank, and
        the joint insertion/deletion curves with the prompt steps marked."""
        import matplotlib.pyplot as plt

        from eagle_pipelines.core.images import as_rgb

        n = len(self.order)
        rank = np.empty(n)
        rank[self.order] = np.arange(n)
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.6))
        heat = 1.0 - rank[:self.n_image][self.labels] / max(n - 1, 1)
        if image is not None:
            axes[0].imshow(as_rgb(image) if as_rgb(image).shape[:2] == self.labels.shape else heat, cmap="gray")
        axes[0].imshow(heat, cmap="inferno", alpha=0.6 if image is not None else 1.0, vmin=0, vmax=1)
        axes[0].axis("off")
        cmap = plt.get_cmap("inferno")
        x, words = 0.0, []
        for unit in self.units:
            words.append((unit["text"], 1.0 - rank[self.n_image + self.units.index(unit)] / max(n - 1, 1)))
        title = "  ".join(f"{w} ({int(round((1 - v) * max(n - 1, 1))) + 1})" for w, v in words)
        axes[0].set_title(f"joint ranks (bright = early); prompt: {title}", fontsize=8)
        for w, v in words:
            axes[0].text(x, -0.08, w, transform=axes[0].transAxes, fontsize=11, weight="bold",
                         color=cmap(0.15 + 0.75 * v))
            x += 0.03 * (len(w) + 1)
        steps = np.arange(n + 1) / n
        ins = np.concatenate([[self.empty_score.mean()], self.insertion.mean(axis=1)])
        dele = np.concatenate([[self.full_score.mean()], self.deletion.mean(axis=1)])
        auc = self.aucs()
        axes[1].plot(steps, ins, color="#1b7837", lw=2, label=f"insertion (AUC {auc['insertion_auc']:.3f})")
        axes[1].plot(steps, dele, color="#762a83", lw=2, ls="--", label=f"deletion (AUC {auc['deletion_auc']:.3f})")
        prompt_steps = [k + 1 for k, m in enumerate(self.modality) if m == PROMPT]
        axes[1].scatter(steps[prompt_steps], ins[prompt_steps], color="#e08214", zorder=3, label="prompt unit")
        axes[1].set_xlabel("joint steps (regions and prompt units) inserted / deleted", fontsize=9)
        axes[1].set_ylabel("mean p(explained tokens)", fontsize=9)
        axes[1].set_ylim(0, 1.02)
        axes[1].legend(fontsize=8)
        fig.tight_layout()
        return fig

    def to_dict(self) -> dict:
        return record_dict(self, JOINT_ARRAYS)

    def save(self, path: str | Path) -> None:
        """``<path>.npz`` (arrays) and ``<path>.json`` (the rest, marked ``joint``), as Attribution.save."""
        save_record(path, self, JOINT_ARRAYS, {"joint": True, **self.to_dict()})

    @classmethod
    def load(cls, path: str | Path) -> JointAttribution:
        import json

        path = Path(path)
        with np.load(path.with_suffix(".npz"), allow_pickle=False) as data:
            arrays = {name: data[name] for name in JOINT_ARRAYS}
        meta = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
        meta.pop("joint", None)
        return cls(**arrays, **meta)


#: strategies that rank the candidates by their single-candidate scores and place most of them by that rank alone
SINGLES_RANKED = ("pooled", "windowed", "lazy")


def singles_ranked(params, n: int) -> bool:
    """Whether `params`' strategy places candidates by their single-candidate rank over a set of `n` (``pooled``
    with a pool smaller than n, ``windowed`` short of greedy, ``lazy``), instead of re-scoring every candidate."""
    from eagle_pipelines.core.search import pool_size_for_budget, windowed_depth

    if params.strategy not in SINGLES_RANKED:
        return False
    settings = params.search_params()
    if params.strategy == "pooled":
        size = settings["pool_size"]
        return min(n, size if size is not None else pool_size_for_budget(n, settings["budget"])) < n
    if params.strategy == "windowed":
        depth = settings["depth"]
        depth = windowed_depth(n, settings["top"], settings["bottom"], settings["budget"]) if depth is None \
            else min(depth, n - 1)
        return settings["top"] < n - 1 or depth < n - 1
    return True


def joint_search(joint: JointScorer, params, progress=None) -> tuple[SearchTrace, int]:
    """Runs the strategy of `params` (a ``SearchParams``) over the joint set; (trace, forward passes).

    A strategy that ranks by single candidates (``singles_ranked``) over a set with prompt units is logged as a
    warning: a question's words and its object's regions act together, each worthless (or pulling the answer
    away) alone, so the singles rank them last and such a strategy places them there (docs/method.md, "Joint
    attribution": pooled's insertion AUC 0.11 where greedy's is 0.87)."""
    if joint.units and singles_ranked(params, joint.n):
        from eagle_pipelines.core.search import efficient_passes, greedy_passes

        logger.warning("%s ranks the joint set's %d candidates (%d regions + %d prompt units) by each one alone, "
                       "which misses a question's words and object (they count only together) and places them "
                       "last; strategy='greedy' (%d forward passes) or 'efficient' (%d) re-score every "
                       "candidate (docs/method.md, 'Joint attribution')", params.strategy, joint.n, joint.n_image,
                       len(joint.units), greedy_passes(joint.n),
                       efficient_passes(joint.n, **params.efficient.model_dump()))
    counting = CountingScorer(joint, joint.n)
    trace = params.spec.search(counting, lambda1=params.lambda1, lambda2=params.lambda2,
                               **params.search_params(), progress=progress)
    return trace, counting.forward_passes


def joint_record(trace: SearchTrace, joint: JointScorer, passes: int, **record) -> JointAttribution:
    """The JointAttribution of a joint search's `trace` (`record`: targets, answer, prompt, settings, meta)."""
    order = np.asarray(trace.order)
    return JointAttribution(
        order=order, insertion=trace.insertion, deletion=trace.deletion, objective=trace.objective,
        area=joint_area(order, joint.regions, joint.n_image), full_score=trace.insertion[-1].copy(),
        empty_score=trace.deletion[-1].copy(), labels=joint.regions.labels, n_image=joint.n_image,
        units=[asdict(u) for u in joint.units], neutral_token_id=joint.neutral, forward_passes=passes, **record)


def check_prompt_units(prompt, units) -> None:
    """`units` against `prompt` before any work: the prompt non-empty, with at least one word for ``"words"``,
    each given unit a word or phrase of it (a ValueError naming the unit otherwise); an empty list is no units
    (the joint search is then the image-only search)."""
    check_prompt_text(prompt)
    if not _spans(prompt, units) and isinstance(units, str):  # an empty list: no units, the image-only search
        raise ValueError(f"the prompt {prompt!r} has no words to attribute (prompt_units={units!r})")


def explain_joint(tokenizer, scorer, regions, prompt: str, units, params, progress=None, **record
                  ) -> JointAttribution:
    """The joint search of `scorer`'s answer (a teacher-forced pixel scorer) over `regions` ∪ the prompt units
    `units` of `prompt` (``"words"`` or a list of words/phrases), with the validated search settings `params`;
    `record` as ``joint_record``'s."""
    import time

    found = prompt_units(tokenizer, np.asarray(_ids(scorer))[:scorer.prompt_length], prompt, units)
    joint = JointScorer(scorer, regions, found, neutral_token_id(tokenizer))
    passes = params.spec.passes(joint.n, **params.search_params())
    logger.info("%s search over %d regions + %d prompt units (%s): %s%d forward passes", params.strategy,
                joint.n_image, len(found), ", ".join(repr(u.text) for u in found),
                "" if params.spec.exact else "at least ", passes)
    start = time.perf_counter()
    trace, passes = joint_search(joint, params, progress)
    return joint_record(trace, joint, passes, prompt=prompt, lambda1=params.lambda1, lambda2=params.lambda2,
                        strategy=params.strategy, search_params=params.search_params(),
                        seconds=time.perf_counter() - start, **record)


def _ids(scorer):
    ids = getattr(scorer, "sequence", {}).get("input_ids") if isinstance(getattr(scorer, "sequence", None),
                                                                          dict) else None
    if ids is None:
        raise ValueError(f"prompt units need a model scored with its token ids (a transformers checkpoint); "
                         f"{type(scorer).__name__} scores without them")
    return ids.detach().cpu().numpy() if hasattr(ids, "detach") else ids


# --- the pipelines' option and the joint record's views -------------------------------------------------------------
#: the pipelines' option (``params:eagle_mmvp.prompt_units``, ``params:eagle_repope.prompt_units``): ``none`` (the
#: image-only search, the default) or ``words`` (every word of each question's prompt joins the candidates)
PIPELINE_UNITS = ("none", "words")


def is_joint(record) -> bool:
    return isinstance(record, JointAttribution)


def units_fingerprint(prompt_units: str) -> dict:
    """What the pipelines' option adds to an attribution's fingerprint: nothing for ``none`` (the image-only items
    keep the fingerprints they always had), the units and the removal rule otherwise; so switching the option
    reruns the items, and an image-only item is never read as a joint one or the other way round."""
    if prompt_units not in PIPELINE_UNITS:
        raise ValueError(f"prompt_units must be one of {list(PIPELINE_UNITS)}; got {prompt_units!r}")
    return {} if prompt_units == "none" else {"prompt_units": prompt_units, "removal": "pad"}


def pipeline_units(prompt_units: str):
    """The option as ``explain(prompt_units=...)`` takes it: None for ``none``."""
    units_fingerprint(prompt_units)
    return None if prompt_units == "none" else prompt_units


def load_record(path: str | Path):
    """An attribution saved at `path` (``<path>.npz`` + ``<path>.json``): a JointAttribution when its JSON says
    ``"joint": true``, else an ``Attribution``."""
    import json

    from eagle_pipelines.core.attribution import Attribution

    path = Path(path)
    try:
        joint = json.loads(path.with_suffix(".json").read_text(encoding="utf-8")).get("joint") is True
    except (OSError, ValueError, AttributeError):
        joint = False  # Attribution.load names what is wrong with the file
    return JointAttribution.load(path) if joint else Attribution.load(path)


def _unit_steps(record: JointAttribution) -> dict[int, int]:
    """Prompt unit j -> its step (0-based) in the joint order."""
    return {int(i) - record.n_image: k for k, i in enumerate(record.order) if i >= record.n_image}


def unit_gains(record: JointAttribution) -> np.ndarray:
    """(n_units, T): each unit's step on the insertion curve per token, p(keep S_k) − p(keep S_{k−1})."""
    curve = np.concatenate([np.asarray(record.empty_score, dtype=float)[None], np.asarray(record.insertion, float)])
    steps = _unit_steps(record)
    return np.array([curve[steps[j] + 1] - curve[steps[j]] for j in range(record.n_units)]).reshape(
        record.n_units, curve.shape[1])


def joint_summary(record: JointAttribution) -> dict:
    """What a view of the joint record carries (``image_view``'s ``meta["joint"]``; the explorers read it): the
    prompt, each unit with its character span, its rank in the joint order (1 = first) and its insertion gain per
    token, the joint steps, the regions, and per token the prompt's share of the insertion gains."""
    steps, gains = _unit_steps(record), unit_gains(record)
    return {"prompt": record.prompt, "steps": int(len(record.order)), "n_regions": int(record.n_image),
            "removal": record.removal,
            "units": [{"text": u["text"], "start": int(u["start"]), "end": int(u["end"]), "rank": steps[j] + 1,
                       "gain": [round(float(g), 4) for g in gains[j]]} for j, u in enumerate(record.units)],
            "prompt_share": [None if not np.isfinite(p) else round(float(p), 4) for p in record.prompt_share],
            **record.aucs()}


def image_view(record):
    """The record as an image ``Attribution`` for what draws or removes regions (figures, maps, correction by
    removal): the regions in their joint order; the curves, objective and area at the image steps of the joint
    order (so with the prompt units ranked before each region kept, the others removed: not image-only curves,
    which the evaluation recomputes); N_t as the joint record's; ``meta["joint"]``: ``joint_summary``. An
    ``Attribution`` is returned as it is."""
    if not is_joint(record):
        return record
    from eagle_pipelines.core.attribution import Attribution

    image = np.array([m == IMAGE for m in record.modality], dtype=bool)
    return Attribution(
        order=record.region_order(), insertion=record.insertion[image], deletion=record.deletion[image],
        objective=record.objective[image], area=record.area[image], full_score=record.full_score,
        empty_score=record.empty_score, labels=record.labels, target_positions=list(record.target_positions),
        target_token_ids=list(record.target_token_ids), target_words=list(record.target_words),
        answer=record.answer, prompt=record.prompt, lambda1=record.lambda1, lambda2=record.lambda2,
        strategy=record.strategy, search_params=dict(record.search_params), forward_passes=record.forward_passes,
        seconds=record.seconds, meta={**record.meta, "joint": joint_summary(record)}, influence=record.influence)


def joint_row(record: JointAttribution) -> dict:
    """The evaluation's row of a joint record (protocol ``joint``): the faithfulness metrics of its own curves
    over the joint steps (x = k/N: a prompt unit is one step like a region, so the AUCs are ``aucs()``'s), and the
    prompt's mean share of the insertion gains (``prompt_share``)."""
    from eagle_pipelines.core.metrics import Curves, faithfulness

    n = len(record.order)
    curves = Curves(np.arange(1, n + 1) / n, np.asarray(record.insertion), np.asarray(record.deletion))
    x, ins = curves.insertion_curve()
    share = np.asarray(record.prompt_share, dtype=float)
    return {"method": "eagle", "protocol": "joint", **faithfulness(curves), "eval_seconds": 0.0,
            "prompt_share": float(np.nanmean(share)) if np.isfinite(share).any() else float("nan"),
            "prompt_units": record.n_units,
            "curve": {"x": x.tolist(), "insertion": ins.tolist(), "deletion": curves.deletion_curve()[1].tolist()}}
