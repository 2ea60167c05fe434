"""Which answer tokens to explain: all of them (sentence level), given positions, or the tokens of given words
(word level), found through the decoded text so that multi-token words of BPE tokenizers work too."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence


def token_char_spans(decode, token_ids: Sequence[int]) -> tuple[str, list[tuple[int, int]]]:
    """The decoded answer and each token's [start, end) character span in it (by decoding growing prefixes)."""
    spans, previous = [], ""
    for k in range(len(token_ids)):
        text = decode(list(token_ids[: k + 1]))
        spans.append((len(previous), len(text)))
        previous = text
    return previous, spans


def phrase_positions(decode, token_ids: Sequence[int], phrase: str, occurrence: int = 0) -> list[int]:
    """Positions of the tokens that spell the `occurrence`-th whole-word match of `phrase` (empty if absent)."""
    text, spans = token_char_spans(decode, token_ids)
    matches = list(re.finditer(r"(?<!\w)" + re.escape(phrase) + r"(?!\w)", text))
    if occurrence >= len(matches):
        return []
    start, end = matches[occurrence].span()
    return [k for k, (s, e) in enumerate(spans) if s < end and e > start and text[s:e].strip()]


def resolve_targets(decode, token_ids: Sequence[int], tokens=None) -> list[int]:
    """`tokens`: None (every answer token), a list of positions, or a list of words/phrases (each matched
    at its first occurrence). Raises ValueError naming what is not in the answer."""
    n = len(token_ids)
    if n == 0:
        raise ValueError("the answer is empty: there is no token to explain")
    if tokens is None:
        return list(range(n))
    if isinstance(tokens, str):
        tokens = [tokens]
    positions: list[int] = []
    for item in tokens:
        if isinstance(item, (int,)) and not isinstance(item, bool):
            if not 0 <= item < n:
                raise ValueError(f"token position {item} is outside the answer of {n} tokens")
            found = [item]
        else:
            found = phrase_positions(decode, token_ids, str(item))
            if not found:
                raise ValueError(f"'{item}' does not occur in the answer {decode(list(token_ids))!r}")
        positions.extend(p for p in found if p not in positions)
    return sorted(positions)


# --- the reference's word-level rule (its coco_single_target_once lists; docs/paper.md#word-level) ----------------
def literal_match(text: str, name: str) -> tuple[int, int] | None:
    """[start, end) of the first occurrence of `name` in `text`, ignoring case, as a plain substring (no word
    boundary: "bus" is found in "busy", "cup" in "cups"); None when absent. The reference's rule: all 306 entries
    of its Qwen2.5-VL-3B list (and 298/298, 77/77 of its 7B and LLaVA lists) have their category so in the
    sentence, 301 of 306 case-sensitively (benchmarks/word_list_agreement.py)."""
    start = text.lower().find(name.lower())
    return None if start < 0 or not name else (start, start + len(name))


def literal_position(decode, token_ids: Sequence[int], name: str) -> int | None:
    """The answer position of the token where `name`'s first literal match (``literal_match``) begins."""
    text, spans = token_char_spans(decode, token_ids)
    found = literal_match(text, name)
    if found is None:
        return None
    start = found[0]
    return next(k for k, (s, e) in enumerate(spans) if e > start)


def per_category_selection(candidates: Sequence[tuple[str, Sequence[int]]], sentences: Mapping[int, str],
                           quota: int = 4) -> list[tuple[int, str]]:
    """The reference's word-level sample: for each category in order, walk its candidate images in order and
    keep those whose answer (``sentences``: image id -> text; an image without one is passed over) contains the
    category name (``literal_match``), until `quota` are kept; each image is kept once, for the first category
    that takes it. Returns (image id, category) pairs in selection order."""
    if quota < 1:
        raise ValueError(f"the per-category quota must be at least 1, got {quota}")
    used: set[int] = set()
    chosen: list[tuple[int, str]] = []
    for name, image_ids in candidates:
        taken = 0
        for image_id in image_ids:
            if taken >= quota:
                break
            if image_id in used or image_id not in sentences:
                continue
            if literal_match(sentences[image_id], name) is not None:
                used.add(image_id)
                chosen.append((image_id, name))
                taken += 1
    return chosen
