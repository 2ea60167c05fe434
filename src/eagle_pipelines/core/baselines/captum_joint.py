"""Captum's peer of EAGLE-joint: ``LLMAttribution(FeatureAblation)`` over image regions ∪ prompt units.

Captum 0.9 attributes one interpretable input at a time: ``ImageMaskInput`` (segments of an image, fed through a
``processor_fn`` with a fixed prompt) or ``TextTemplateInput`` (segments of a text). ``TextImageInput`` is the
thinnest joint of the two: its features are the ``ImageMaskInput``'s (our superpixel label map, baseline
(0, 0, 0): a removed region is black, EAGLE's zero fill) followed by the ``TextTemplateInput``'s (the prompt as
a template whose values are the prompt units' words), and its model input is the processor's encoding of the
perturbed image with the perturbed prompt. ``JointLLMAttribution`` is ``LLMAttribution`` accepting it.

Text removal rule (``text_baseline``):

- ``"neutral"`` (default): each removed unit's value is replaced by the neutral token's text once per token of
  the unit (the pad token, ``core/joint.py: neutral_token_id``), so the encoded ids are exactly ``removed_ids``
  (EAGLE-joint's rule: same count, same positions). Every perturbed encoding is checked against ``removed_ids``
  and a mismatch (a tokenizer that merges the pad text with its neighbours) is a ValueError, never a silently
  different input.
- ``"empty"``: Captum's own default, the value replaced by ``""``: the word is cut out and later tokens shift.

The model is the family's ``llm_module`` (``models/adapter.py: TransformersCaptumModule``), run by Captum in
sequence mode (one pass per perturbation, the answer teacher-forced): n_regions + n_units + 1 passes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from PIL import Image

from eagle_pipelines.core.baselines.common import check_positions
from eagle_pipelines.core.joint import PromptUnit, removed_ids
from eagle_pipelines.extras import require

_captum = require("captum.attr", "Captum's joint feature ablation (core/baselines/captum_joint.py)")
FeatureAblation, LLMAttribution = _captum.FeatureAblation, _captum.LLMAttribution
InterpretableInput, ImageMaskInput, TextTemplateInput = (_captum.InterpretableInput, _captum.ImageMaskInput,
                                                         _captum.TextTemplateInput)

TEXT_BASELINES = ("neutral", "empty")


class TextImageInput(InterpretableInput):
    """Captum interpretable input over an ``ImageMaskInput``'s segments followed by a ``TextTemplateInput``'s
    values; its model input is ``processor_fn(perturbed image, perturbed text)``. `check(model_input,
    keep_text)`, when given, sees every perturbed model input with the text features' keep-row."""

    def __init__(self, image: ImageMaskInput, text: TextTemplateInput,
                 processor_fn: Callable[[Image.Image, str], dict], check: Callable | None = None):
        self.image, self.text, self.processor_fn, self.check = image, text, processor_fn, check
        self.n_image = image.n_itp_features
        self.n_itp_features = self.n_image + text.n_itp_features
        self.values = [*image.values, *text.values]

    def to_tensor(self) -> torch.Tensor:
        return torch.ones(1, self.n_itp_features)

    def to_model_input(self, perturbed_tensor: torch.Tensor | None = None) -> dict:
        if perturbed_tensor is None:
            perturbed_tensor = self.to_tensor()
        image = self.image.to_model_input(perturbed_tensor[:, :self.n_image])
        text = self.text.to_model_input(perturbed_tensor[:, self.n_image:])
        model_input = self.processor_fn(image, text)
        if self.check is not None:
            self.check(model_input, perturbed_tensor[0, self.n_image:].detach().cpu().numpy() != 0)
        return model_input


class JointLLMAttribution(LLMAttribution):
    """``LLMAttribution`` that also takes a ``TextImageInput``."""

    SUPPORTED_INPUTS = (*LLMAttribution.SUPPORTED_INPUTS, TextImageInput)


def prompt_template(prompt: str, units: Sequence[PromptUnit]) -> tuple[str, list[str]]:
    """(`prompt` as a ``str.format`` template with one ``{}`` per unit, the units' words as its values)."""
    parts, at = [], 0
    for unit in sorted(units, key=lambda u: u.start):
        parts += [prompt[at:unit.start].replace("{", "{{").replace("}", "}}"), "{}"]
        at = unit.end
    parts.append(prompt[at:].replace("{", "{{").replace("}", "}}"))
    return "".join(parts), [prompt[u.start:u.end] for u in sorted(units, key=lambda u: u.start)]


def text_image_input(tf, labels: np.ndarray, units: Sequence[PromptUnit], neutral: int,
                     text_baseline: Literal["neutral", "empty"] = "neutral") -> TextImageInput:
    """The ``TextImageInput`` of a teacher-forced pass `tf` (``TeacherForcedPass``: its image at model
    resolution, its prompt, ``adapter.encode``): regions of `labels` (0..n-1) with a black baseline, then the
    prompt `units` (``core/joint.py: prompt_units``) removed by `text_baseline` (module docstring)."""
    if text_baseline not in TEXT_BASELINES:
        raise ValueError(f"text_baseline must be one of {list(TEXT_BASELINES)}; got {text_baseline!r}")
    labels = np.asarray(labels)
    if labels.shape != (tf.height, tf.width):
        raise ValueError(f"the superpixel map is {labels.shape}, the model image is {(tf.height, tf.width)}")
    ids = np.unique(labels)
    if not np.array_equal(ids, np.arange(len(ids))):
        raise ValueError(f"the superpixel map's labels must be 0..n-1 (a RegionMap's); got {ids.tolist()[:8]}...")
    units = sorted(units, key=lambda u: u.start)
    if not units:
        raise ValueError("no prompt units to attribute: the joint input needs at least one (core/joint.py)")
    image = Image.fromarray(np.clip(tf.image.detach().cpu().numpy().round(), 0, 255).astype(np.uint8))
    image_input = ImageMaskInput(image=image, mask=torch.as_tensor(labels.astype(np.int64)), baseline=(0, 0, 0))
    template, values = prompt_template(tf.prompt, units)
    tok = tf.tokenizer
    check = None
    if text_baseline == "neutral":
        pad = tok.convert_ids_to_tokens(int(neutral))
        baselines = [pad * len(u.token_ids) for u in units]
        base = tf.input_ids[:tf.answer_start].detach().cpu().numpy()

        def check(model_input: dict, keep_text: np.ndarray) -> None:
            seen = model_input["input_ids"][0].detach().cpu().numpy()
            want = removed_ids(base, units, keep_text, int(neutral))
            if seen.shape != want.shape or not np.array_equal(seen, want):
                removed = [u.text for u, k in zip(units, keep_text) if not k]
                raise ValueError(f"Captum's template text with {removed} replaced by {pad!r} does not encode as the "
                                 f"pad-token removal rule (core/joint.py: removed_ids) for this tokenizer; use "
                                 f"text_baseline='empty' (Captum's cut-out rule) or a word-level unit split")
    else:
        baselines = None  # Captum's default: ""
    text_input = TextTemplateInput(template, values=values, baselines=baselines)
    return TextImageInput(image_input, text_input, lambda img, text: tf.adapter.encode([np.asarray(img)], text),
                          check)


@dataclass(frozen=True)
class JointCaptumResult:
    """Captum's FeatureAblation over regions ∪ prompt units: `attributions` (N,) of the joint candidates
    (regions 0..n_image-1, then the units), summed over the explained tokens; `token_attr` (T, N) per explained
    token; `forward_passes` the model passes it took."""

    attributions: np.ndarray
    token_attr: np.ndarray
    n_image: int
    forward_passes: int

    def order(self) -> np.ndarray:
        """The candidates by decreasing attribution (ties: the lower index first)."""
        return np.argsort(-self.attributions, kind="stable")


def joint_feature_ablation(tf, positions: Sequence[int], labels: np.ndarray, units: Sequence[PromptUnit],
                           neutral: int, attr_target: Literal["log_prob", "prob"] = "log_prob",
                           text_baseline: Literal["neutral", "empty"] = "neutral") -> JointCaptumResult:
    """Captum's ``LLMAttribution(FeatureAblation)`` over the regions of `labels` and the prompt `units` of the
    teacher-forced pass `tf`, towards the explained answer `positions` (Captum's `attr_target`: the drop of the
    log-probability, or of the probability, when the feature alone is removed)."""
    positions = check_positions(tf, positions)
    inp = text_image_input(tf, labels, units, neutral, text_baseline)
    passes = [0]

    def count(_module, _args, kwargs):
        passes[0] += int(kwargs["input_ids"].shape[0]) if "input_ids" in kwargs else 1

    handle = tf.llm_module.model.register_forward_pre_hook(count, with_kwargs=True)
    try:
        attribution = JointLLMAttribution(FeatureAblation(tf.llm_module), tf.tokenizer, attr_target=attr_target)
        target = tf.answer_ids[: positions[-1] + 1].detach().cpu()
        with torch.no_grad():
            result = attribution.attribute(inp, target=target, forward_in_tokens=False)
    finally:
        handle.remove()
    per_token = result.token_attr.detach().double().cpu().numpy()[positions]  # (T, N)
    return JointCaptumResult(per_token.sum(axis=0), per_token, inp.n_image, passes[0])
