"""The small interface every model family implements (see docs/models.md)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class Answer:
    """A generated answer: the new token ids (without the end-of-turn token), their decoded text, the
    probability the model gave each token when it chose it, and whether generation ended by itself."""

    prompt: str
    token_ids: tuple[int, ...]
    tokens: tuple[str, ...]
    text: str
    token_probs: tuple[float, ...]
    finished: bool

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Answer:
        return cls(prompt=data["prompt"], token_ids=tuple(int(t) for t in data["token_ids"]),
                   tokens=tuple(data["tokens"]), text=data["text"],
                   token_probs=tuple(float(p) for p in data["token_probs"]), finished=bool(data["finished"]))


@runtime_checkable
class VisionLanguageModel(Protocol):
    """What the pipelines need from a model: answer a prompt about an image (greedy, deterministic)."""

    name: str

    def generate(self, image: np.ndarray, prompt: str, max_new_tokens: int = 32) -> Answer: ...

    def generate_batch(self, images: list[np.ndarray], prompt: str, max_new_tokens: int = 32) -> list[Answer]: ...

    def save(self, path: str) -> None: ...
