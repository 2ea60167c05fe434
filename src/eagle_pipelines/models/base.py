"""The small interface every model family implements (see docs/models.md)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np


def checked_targets(answer_ids, target_positions) -> tuple[list[int], tuple[int, ...]]:
    """The answer's ids as ints and the target positions as a tuple, refused when empty or outside the answer (a
    TokenScorer's arguments)."""
    answer_ids = [int(t) for t in answer_ids]
    positions = tuple(int(t) for t in target_positions)
    if not positions:
        raise ValueError("no tokens to explain: target_positions is empty")
    if min(positions) < 0 or max(positions) >= len(answer_ids):
        raise ValueError(f"target positions {positions} outside the answer of {len(answer_ids)} tokens")
    return answer_ids, positions


@dataclass(frozen=True)
class Answer:
    """A generated answer: the new token ids (without the end-of-turn token), their decoded text, the
    probability the model gave each token when it chose it, whether generation ended by itself and, if so, the
    id of the end-of-turn token it ended with."""

    prompt: str
    token_ids: tuple[int, ...]
    tokens: tuple[str, ...]
    text: str
    token_probs: tuple[float, ...]
    finished: bool
    end_token_id: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Answer:
        return cls(prompt=data["prompt"], token_ids=tuple(int(t) for t in data["token_ids"]),
                   tokens=tuple(data["tokens"]), text=data["text"],
                   token_probs=tuple(float(p) for p in data["token_probs"]), finished=bool(data["finished"]),
                   end_token_id=None if data.get("end_token_id") is None else int(data["end_token_id"]))


@runtime_checkable
class VisionLanguageModel(Protocol):
    """What the pipelines need from a model: answer a prompt about an image (greedy, deterministic)."""

    name: str

    def generate(self, image: np.ndarray, prompt: str, max_new_tokens: int = 32) -> Answer: ...

    def generate_batch(self, images: list[np.ndarray], prompt: str, max_new_tokens: int = 32) -> list[Answer]: ...

    def save(self, path: str) -> None: ...


# -- model internals for the gradient and activation baselines (docs/baselines.md) ---------------------------------
@dataclass
class TeacherForcedOutput:
    """What one differentiable teacher-forced pass returns.

    ``logits``: (B, A, V) float logits at the answer positions: ``logits[:, t]`` is the distribution the model
    gives answer token ``t`` (it is read at sequence position ``answer_start + t - 1``).
    ``hidden_states``: ``None`` unless asked for; else a tuple of (B, L, D) tensors over the whole sequence:
    index 0 the input embeddings (image features already merged in), index ``l`` the output of decoder layer
    ``l`` (1..n_layers), all *before* the final norm, so that ``head(hidden_states[-1])`` gives the model's
    logits. They stay in the autograd graph (differentiate a target with respect to them)."""

    logits: Any
    hidden_states: tuple | None = None


@runtime_checkable
class TeacherForcedPass(Protocol):
    """One image (at model resolution), one prompt and one answer, ready for differentiable passes.

    Built by ``ModelInternals.teacher_forced``. Attributes (torch tensors on the model's device):

    - ``height``, ``width``: the model-resolution image size; ``image`` (H, W, 3) float32 in 0..255, the intact
      image as a tensor.
    - ``input_ids`` (L,): prompt (with the expanded image placeholders) + answer ids; ``answer_ids`` (A,);
      ``answer_start``: the sequence position of answer token 0.
    - ``image_positions`` (K,): sequence positions of the image tokens, row-major over ``image_grid``;
      ``image_grid``: (h, w) of the image tokens after any merging (h·w = K), covering the image the way the
      tokens do (token (i, j) sees the pixels of rows i·H/h .. (i+1)·H/h, columns likewise).
    - ``context_positions`` (C,): sequence positions of the prompt's own text tokens (the user's words, no
      template or special tokens), in order: the context whose influence TAM's causal inference removes.
    - ``decoder_layers``: the language model's decoder layers (an ``nn.ModuleList``, numbered from 0 as the
      checkpoint numbers them, i.e. ``decoder_layers[i]`` is ``language_model.layers[i]``). Forward hooks on a
      layer or one of its submodules (e.g. ``decoder_layers[32].post_attention_layernorm``, the module LLaVA-CAM's
      reference code hooks) see the passes of ``__call__``; what they capture stays in the autograd graph.
    - ``pixel_mean`` (3,): the pixel value (0..255 per channel) the processor normalises to zero, i.e. its
      ``image_mean`` in pixel units (0 where it does not normalise): an image of it has all-zero pixel values.

    Methods:

    - ``__call__(images, hidden_states=False) -> TeacherForcedOutput`` for ``images`` (B, H, W, 3) float in
      0..255 (any dtype; kept as given up to the model's dtype): the model teacher-forced on the prompt +
      answer for each image, differentiable with respect to ``images`` (the processor's rescale, normalisation
      and patch layout are composed with torch ops, so that on the intact image the logits equal those of the
      processor's own ``pixel_values`` up to float rounding).
    - ``head(hidden) -> logits``: the final norm and the LM head for (..., D) hidden states of the last layer.
    - For Captum's ``LLMAttribution`` (the black-box peer): ``llm_module`` (an ``nn.Module`` whose ``forward``
      takes the processor's inputs for one image with answer ids appended to ``input_ids`` and returns an object
      with ``.logits`` over the sequence, the Hugging Face convention; it rebuilds whatever per-token inputs the
      family needs for the longer sequence), ``llm_inputs(image: PIL.Image) -> dict`` (the processor's inputs
      of one model-resolution image with the prompt) and ``tokenizer``.

    A family implements it with its processor's math (normalisation, patch layout) and its model's modules
    (decoder layers for hooks, final norm, LM head); the baselines in ``core/baselines`` use nothing else.
    """

    height: int
    width: int
    image: Any
    input_ids: Any
    answer_ids: Any
    answer_start: int
    image_positions: Any
    image_grid: tuple[int, int]
    context_positions: Any
    decoder_layers: Any
    pixel_mean: Any
    tokenizer: Any
    llm_module: Any

    def __call__(self, images, hidden_states: bool = False) -> TeacherForcedOutput: ...

    def head(self, hidden): ...

    def llm_inputs(self, image) -> dict: ...


@runtime_checkable
class ModelInternals(Protocol):
    """A model family that exposes its internals to the gradient and activation baselines (LLaVA-CAM, IGOS++,
    TAM, Captum): ``teacher_forced(image, prompt, answer_ids)`` with ``image`` (H, W, 3) uint8 at the model's
    resolution (``model_image``) returns a ``TeacherForcedPass``."""

    def model_image(self, image: np.ndarray) -> np.ndarray: ...

    def teacher_forced(self, image: np.ndarray, prompt: str, answer_ids) -> TeacherForcedPass: ...
