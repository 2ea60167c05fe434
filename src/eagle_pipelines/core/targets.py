"""Which answer tokens to explain: all of them (sentence level), given positions, or the tokens of given words
(word level), found through the decoded text so that multi-token words of BPE tokenizers work too."""

from __future__ import annotations

import re
from collections.abc import Sequence


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
