"""Evidence-guided decoding and the logit lens of a ``TransformersAdapter`` model (docs/mitigation.md).

Guided decoding (the EAGLE poster's mitigation): greedy decoding, one token at a time, where before each step
the attention logits of the next token's query over the image tokens I are shifted, in the decoder layers of a
configurable range, by

    z_{t+1,I}^{(l,h)}  <-  z_{t+1,I}^{(l,h)} + lambda^{(l)} * b * log(g_t + eps)

``g_t`` is a global evidence vector over the image tokens, built from the tokens generated so far: the EAGLE
attribution of each new token over the image-token cells (``source: eagle``; one search per token, under the
unguided model) or the attention the token's query paid to the image tokens (``source: attention``; free). It is
normalised to a maximum of 1, so that no evidence (or evidence spread evenly) means no bias. With ``b`` > 0 the
image tokens without evidence lose attention (decoding stays on the evidence); with ``b`` < 0 they gain it
(decoding is pushed away from what was already used). ``draft: true`` seeds ``g_0`` with the evidence of an
unguided draft answer, the only way the first token (a yes/no answer) can be guided at all.

The bias is applied by an attention function registered with transformers' ``AttentionInterface``
(``eagle_guided``: eager attention with an additive term on the last query row), switched on for the language
model only while a guided answer is decoded. No key/value cache: every step re-runs the whole sequence (fine on
the embedded model; on a 3B model a 32-token answer costs 32 full passes).

The logit lens (``LogitLens``): each decoder layer's hidden state read through the final norm and the LM head, for
the whole image, any masked copy of it, and the prompt without the image ("text"), giving the per-layer
log-probabilities that ``core/diagnostics.py`` turns into necessity and sufficiency.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from pydantic import Field

from eagle_pipelines.core.regions import RegionMap
from eagle_pipelines.core.strategies import SearchParams
from eagle_pipelines.models.adapter import teacher_forcing_inputs
from eagle_pipelines.models.base import Answer

ATTENTION_NAME = "eagle_guided"


class GuidanceParams(SearchParams):
    """Evidence-guided decoding (models/guidance.py, docs/mitigation.md): before each greedy step the attention
    logits of the next token over the image tokens get λ·b·log(g_t/max g_t + ε) in the layers [start, end).
    ``source: eagle`` searches each token's evidence with the ``SearchParams`` fields (strategy, its settings,
    batch_size; no memory planning by default)."""

    source: Literal["eagle", "attention"] = Field(
        default="eagle", description="eagle: each generated token's EAGLE attribution over the image-token cells; "
                                     "attention: the attention its query paid to the image tokens")
    strength: float = Field(default=1.0, ge=0, description="λ (0: plain greedy decoding)")
    b: float = Field(default=1.0, description="the bias's scale and sign: > 0 keeps attention on the evidence, "
                                              "< 0 pushes it to image tokens without evidence")
    layers: tuple[int, int] | None = Field(
        default=None, description="[start, end) decoder layers biased; null: the second half (middle to late)")
    heads: list[int] | None = Field(default=None, description="heads biased in those layers; null: all")
    eps: float = Field(default=0.05, gt=0, description="ε in log(g + ε): the floor of the bias")
    weighting: Literal["uniform", "necessity"] = Field(
        default="uniform", description="each token's evidence weighted equally, or by max(N_t, 0) (its necessity "
                                       "at the last layer: prior-driven tokens add no evidence; one text pass each)")
    draft: bool = Field(default=False, description="seed g_0 with an unguided draft answer's evidence (the first "
                                                   "token, e.g. a yes/no answer, is otherwise never guided)")
    memory_budget_mb: float | None = Field(
        default=0, ge=0, allow_inf_nan=False,
        description="peak memory each evidence search may use (MB); 0: no planning; null: what the device has")

    def layer_range(self, n_layers: int) -> tuple[int, int]:
        return tuple(self.layers) if self.layers is not None else (n_layers // 2, n_layers)

    def label(self) -> str:
        """A short name of the setting (tables)."""
        if self.strength == 0 or self.b == 0:
            return "greedy (no guidance)"
        layers = "half" if self.layers is None else f"{self.layers[0]}-{self.layers[1]}"
        extra = "".join([", draft" if self.draft else "", ", necessity" if self.weighting == "necessity" else "",
                         f", heads {self.heads}" if self.heads is not None else ""])
        return f"{self.source} λ={self.strength:g} b={self.b:g} layers {layers}{extra}"


# --- the attention function ---------------------------------------------------------------------------------------
def guided_attention_forward(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """Eager attention plus the guidance term: ``module._eagle_bias`` (B, K) float (or None) is added to the
    logits of the last query row over every key, restricted to the heads in ``module._eagle_heads`` (None: all);
    ``module._eagle_capture`` (a list, or None) receives that row's attention weights (B, H, K) after the
    softmax. Without either it is plain eager attention."""
    groups = getattr(module, "num_key_value_groups", 1)
    if groups > 1:
        key = key.repeat_interleave(groups, dim=1)
        value = value.repeat_interleave(groups, dim=1)
    logits = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            attention_mask = torch.zeros_like(attention_mask, dtype=logits.dtype).masked_fill(
                ~attention_mask, torch.finfo(logits.dtype).min)
        logits = logits + attention_mask[:, :, :, : key.shape[-2]]
    elif query.shape[-2] > 1:  # no mask given: causal over the last q positions of the keys
        q, k = query.shape[-2], key.shape[-2]
        causal = torch.ones(q, k, dtype=torch.bool, device=logits.device).tril(k - q)
        logits = logits.masked_fill(~causal, torch.finfo(logits.dtype).min)
    bias = getattr(module, "_eagle_bias", None)
    if bias is not None:
        heads = getattr(module, "_eagle_heads", None)
        term = torch.zeros_like(logits[:, :, -1, :])  # (B, H, K)
        rows = bias.to(logits.dtype)[:, None, : key.shape[-2]]
        if heads is None:
            term = term + rows
        else:
            term[:, list(heads)] = rows.expand(-1, len(heads), -1)
        logits = torch.cat([logits[:, :, :-1, :], (logits[:, :, -1, :] + term)[:, :, None, :]], dim=2)
    weights = torch.softmax(logits, dim=-1, dtype=torch.float32).to(query.dtype)
    capture = getattr(module, "_eagle_capture", None)
    if capture is not None:
        capture.append(weights[:, :, -1, :].detach())
    out = torch.matmul(weights, value).transpose(1, 2).contiguous()
    return out, weights


def register_guided_attention() -> str:
    """Registers ``eagle_guided`` with transformers' attention and mask interfaces (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, eager_mask

    AttentionInterface.register(ATTENTION_NAME, guided_attention_forward)
    ALL_MASK_ATTENTION_FUNCTIONS.register(ATTENTION_NAME, eager_mask)
    return ATTENTION_NAME


@contextlib.contextmanager
def guided_attention(model):
    """The language model of `model` on ``eagle_guided`` attention for the duration (the vision encoder keeps
    its own); restored afterwards, also on error."""
    register_guided_attention()
    text_config = model.config.get_text_config()
    before = text_config._attn_implementation
    key = next((k for k in model.config.sub_configs if getattr(model.config, k, None) is text_config), None)
    model.set_attn_implementation({key: ATTENTION_NAME} if key else ATTENTION_NAME)
    try:
        yield
    finally:
        model.set_attn_implementation({key: before} if key else before)
        for layer in decoder_layers(model):
            _clear(layer.self_attn)


def decoder_layers(model) -> torch.nn.ModuleList:
    return model.get_decoder().layers


def _clear(attn) -> None:
    attn._eagle_bias = attn._eagle_heads = attn._eagle_capture = None


# --- the image-token grid -----------------------------------------------------------------------------------------
def image_token_grid(adapter, enc: dict) -> tuple[int, int]:
    """(h, w) of the image tokens after merging (row-major in the sequence)."""
    k = int((enc["input_ids"][0] == adapter.model.config.image_token_id).sum())
    if "image_grid_thw" in enc:
        merge = adapter.processor.image_processor.merge_size
        t, gh, gw = (int(v) for v in enc["image_grid_thw"][0])
        grid = (gh // merge, gw // merge)
        if t == 1 and grid[0] * grid[1] == k:
            return grid
    h = max(1, int(round(np.sqrt(k))))
    if k == 0 or k % h:
        raise ValueError(f"{k} image tokens do not make a grid")
    return h, k // h


def token_cells(height: int, width: int, grid: tuple[int, int]) -> RegionMap:
    """The image-token cells as regions: region i·w + j is token (i, j)'s rows i·H/h..(i+1)·H/h, columns likewise,
    so an attribution over these regions is an attribution over the image tokens."""
    h, w = grid
    rows = (np.arange(height) * h) // height
    cols = (np.arange(width) * w) // width
    labels = (rows[:, None] * w + cols[None, :]).astype(np.int32)
    return RegionMap(labels, {"backend": "image_token_cells", "grid": [h, w]})


# --- evidence -----------------------------------------------------------------------------------------------------
def attribution_evidence(attribution) -> np.ndarray:
    """(n,) evidence per region of an EAGLE attribution: its saliency (``remaining``: the share of the search's
    gain still ahead when the region was added; 0 for regions that add nothing) averaged over each region."""
    saliency = attribution.saliency().astype(np.float64)
    labels = attribution.labels
    n = int(labels.max()) + 1
    total = np.bincount(labels.ravel(), weights=saliency.ravel(), minlength=n)
    return total / np.maximum(np.bincount(labels.ravel(), minlength=n), 1)


def evidence_bias(g: np.ndarray | None, strength: float, b: float, eps: float) -> np.ndarray | None:
    """λ·b·log(g/max(g) + ε) over the image tokens, or None when there is no evidence (all zero) or no bias."""
    if g is None or strength == 0 or b == 0:
        return None
    g = np.asarray(g, dtype=np.float64)
    if not np.isfinite(g).all() or g.max() <= 0:
        return None
    return strength * b * np.log(g / g.max() + eps)


@dataclass
class GuidedAnswer:
    """A guided answer and what it cost: ``decode_passes`` (one per step, as plain greedy decoding needs),
    ``evidence_passes`` (EAGLE's masked images, text-only passes and the draft's steps), ``seconds`` (as if no
    evidence had been cached), the evidence vector before each step and the draft's text."""

    answer: Answer
    decode_passes: int
    evidence_passes: int
    seconds: float
    evidence: list = field(default_factory=list)  # (steps, K) g_t before each step (None entries: no evidence)
    draft: str | None = None

    def to_dict(self) -> dict:
        return {"answer": self.answer.to_dict(), "decode_passes": self.decode_passes,
                "evidence_passes": self.evidence_passes, "seconds": self.seconds, "draft": self.draft,
                "evidence": [None if g is None else [round(float(v), 6) for v in g] for g in self.evidence]}


class EvidenceCache:
    """EAGLE evidence per (image, prompt, answer prefix, search settings): the same prefix is explained once
    across guidance settings (the evidence comes from the unguided model). Each entry keeps what it cost
    (passes, seconds) so that cost figures do not depend on the cache."""

    def __init__(self):
        self.entries: dict[str, tuple[np.ndarray, int, float]] = {}
        self.hits = 0

    def key(self, image: np.ndarray, prompt: str, prefix, settings: dict) -> str:
        digest = hashlib.sha1(np.ascontiguousarray(image).tobytes())
        digest.update(repr((prompt, tuple(int(t) for t in prefix), sorted(settings.items()))).encode())
        return digest.hexdigest()


class GuidedDecoder:
    """Greedy decoding of a ``TransformersAdapter`` model with evidence guidance (module docstring)."""

    def __init__(self, adapter, guidance, cache: EvidenceCache | None = None, explain: Callable | None = None):
        """`explain`: the function that makes a token's EAGLE attribution, called as ``explain(adapter, image,
        prompt, params, tokens=..., answer=..., regions=...)`` (``engine.explain_image``); needed by
        ``source: eagle`` only."""
        self.adapter = adapter
        self.explain = explain
        self.guidance = guidance if isinstance(guidance, GuidanceParams) else GuidanceParams.model_validate(
            guidance or {})
        self.cache = cache if cache is not None else EvidenceCache()
        model = adapter.model
        self.layers = decoder_layers(model)
        n = len(self.layers)
        start, end = self.guidance.layer_range(n)
        if not 0 <= start < end <= n:
            raise ValueError(f"guidance.layers {list(self.guidance.layers)} is outside the model's {n} decoder "
                             f"layers; give [start, end) with 0 <= start < end <= {n}")
        heads = self.guidance.heads
        n_heads = getattr(self.layers[0].self_attn, "num_heads", None) or model.config.get_text_config(
            ).num_attention_heads
        if heads is not None and any(h >= n_heads for h in heads):
            raise ValueError(f"guidance.heads {heads}: the model has {n_heads} attention heads per layer")
        self.biased_layers = list(range(start, end))
        tok = adapter.processor.tokenizer
        gen = model.generation_config
        eos = gen.eos_token_id if gen.eos_token_id is not None else tok.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos])
        self.suppress = adapter.vision_token_ids()

    # -- one step ----------------------------------------------------------------------------------------------
    def _step_logits(self, enc: dict, ids: list[int], bias: np.ndarray | None, image_positions: torch.Tensor,
                     capture: bool) -> tuple[torch.Tensor, list]:
        sequence, per_image = teacher_forcing_inputs(enc, ids)
        inputs = {k: v[None] for k, v in sequence.items()}
        inputs.update(per_image)
        inputs["pixel_values"] = enc["pixel_values"]
        length = inputs["input_ids"].shape[1]
        captured: list = []
        row = None
        if bias is not None:
            row = torch.zeros(1, length, dtype=self.adapter.model.dtype, device=self.adapter.device)
            row[0, image_positions] = torch.as_tensor(bias, dtype=row.dtype, device=row.device)
        for i, layer in enumerate(self.layers):
            attn = layer.self_attn
            _clear(attn)
            if row is not None and i in self.biased_layers:
                attn._eagle_bias, attn._eagle_heads = row, self.guidance.heads
            if capture:
                attn._eagle_capture = captured
        try:
            logits = self.adapter.model(**inputs, logits_to_keep=1, use_cache=False).logits[0, -1].float()
        finally:
            for layer in self.layers:
                _clear(layer.self_attn)
        return logits, captured

    def _pick(self, logits: torch.Tensor) -> int:
        masked = logits.clone()
        if self.suppress:
            masked[self.suppress] = -float("inf")
        return int(masked.argmax())

    # -- evidence ----------------------------------------------------------------------------------------------
    def _eagle_evidence(self, image: np.ndarray, prompt: str, ids: list[int], cells: RegionMap
                        ) -> tuple[np.ndarray, int, float]:
        g = self.guidance
        if self.explain is None:
            raise ValueError("guidance source 'eagle' needs the attribution function: GuidedDecoder(..., "
                             "explain=eagle_pipelines.engine.explain_image)")
        settings = {"strategy": g.strategy, "search": repr(sorted(g.search_params().items())), "model":
                    self.adapter.fingerprint, "cells": repr(cells.params)}
        key = self.cache.key(image, prompt, ids, settings)
        if key in self.cache.entries:
            self.cache.hits += 1
            return self.cache.entries[key]
        tok = self.adapter.processor.tokenizer
        prefix = Answer(prompt=prompt, token_ids=tuple(ids), tokens=tuple(tok.convert_ids_to_tokens(ids)),
                        text=tok.decode(ids, skip_special_tokens=True), token_probs=tuple([1.0] * len(ids)),
                        finished=False)
        start = time.perf_counter()
        attribution = self.explain(self.adapter, image, prompt, g, tokens=[len(ids) - 1], answer=prefix,
                                   regions=cells)
        entry = (attribution_evidence(attribution), int(attribution.forward_passes), time.perf_counter() - start)
        self.cache.entries[key] = entry
        return entry

    def _text_logprob(self, prompt: str, ids: list[int]) -> float:
        """log p(last of `ids` | prompt without the image, the ids before it) at the final layer."""
        lens = LogitLens(self.adapter)
        return float(lens.text_logprobs(prompt, ids)[-1, -1])

    # -- decoding ----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, image: np.ndarray, prompt: str, max_new_tokens: int = 32) -> GuidedAnswer:
        """The guided greedy answer to `prompt` about `image` (any size: brought to the model's resolution)."""
        adapter, g = self.adapter, self.guidance
        image = adapter.model_image(np.asarray(image))
        enc = adapter.encode([image], prompt)
        image_positions = (enc["input_ids"][0] == adapter.model.config.image_token_id).nonzero().squeeze(-1)
        grid = image_token_grid(adapter, enc)
        cells = token_cells(image.shape[0], image.shape[1], grid)
        start = time.perf_counter()
        cached_seconds = 0.0  # evidence time taken from the cache: added back, so seconds do not depend on it
        total = np.zeros(len(image_positions))
        evidence_passes, draft_text = 0, None
        active = g.strength != 0 and g.b != 0
        with guided_attention(adapter.model):
            if active and g.draft:
                draft = GuidedDecoder(adapter, g.model_copy(update={"strength": 0.0, "draft": False}),
                                      self.cache, self.explain)
                d_ids, d_ev = draft._decode(image, prompt, enc, image_positions, cells, max_new_tokens, None,
                                            collect=True)
                draft_text = adapter.processor.tokenizer.decode(d_ids, skip_special_tokens=True)
                evidence_passes += len(d_ids) + 1 + d_ev[1]
                cached_seconds += d_ev[2]
                total = total + d_ev[0]
            ids, (ev_total, ev_passes, ev_cached), probs, trace, finished, end, steps = self._decode(
                image, prompt, enc, image_positions, cells, max_new_tokens, total if active else None,
                collect=active, return_all=True)
        evidence_passes += ev_passes
        cached_seconds += ev_cached
        seconds = time.perf_counter() - start + cached_seconds
        tok = adapter.processor.tokenizer
        answer = Answer(prompt=prompt, token_ids=tuple(ids), tokens=tuple(tok.convert_ids_to_tokens(ids)),
                        text=tok.decode(ids, skip_special_tokens=True), token_probs=tuple(probs),
                        finished=finished, end_token_id=end)
        return GuidedAnswer(answer, steps, evidence_passes, seconds, trace, draft_text)

    def _decode(self, image, prompt, enc, image_positions, cells, max_new_tokens, total, collect: bool,
                return_all: bool = False):
        """Greedy steps; `total` (K,) the evidence so far (None: unguided). With `collect`, each new token's
        evidence is added to the total before the next step (and counted)."""
        g = self.guidance
        ids, probs, trace = [], [], []
        running = None if total is None else np.asarray(total, dtype=np.float64).copy()
        collected = np.zeros(len(image_positions))
        passes, cached_seconds, finished, end, steps = 0, 0.0, False, None, 0
        for step in range(max_new_tokens):
            bias = evidence_bias(running, g.strength, g.b, g.eps) if running is not None else None
            trace.append(None if running is None or not running.any() else running / running.max())
            logits, captured = self._step_logits(enc, ids, bias, image_positions,
                                                 capture=collect and g.source == "attention")
            steps += 1
            token = self._pick(logits)
            if token in self.eos_ids:
                finished, end = True, token
                break
            ids.append(token)
            probs.append(float(torch.softmax(logits, -1)[token]))
            if not collect or step + 1 >= max_new_tokens:
                continue
            if g.source == "eagle":
                e, n_passes, secs = self._eagle_evidence(image, prompt, ids, cells)
                passes += n_passes
                cached_seconds += secs  # counted whether computed now or read from the cache
            else:  # attention of this step's query over the image tokens, averaged over heads and layers
                rows = torch.stack([c[0].mean(0) for c in captured])  # (layers, K_all)
                e = rows.mean(0)[image_positions].cpu().numpy().astype(np.float64)
            e = np.clip(e, 0, None)
            if e.sum() > 0:
                e = e / e.sum()
            weight = 1.0
            if g.weighting == "necessity":
                full = float(torch.log_softmax(logits, -1)[token])
                weight = max(full - self._text_logprob(prompt, ids), 0.0)
                passes += 1
            collected = collected + weight * e
            if running is not None:
                running = running + weight * e
        if return_all:
            return ids, (collected, passes, cached_seconds), probs, trace, finished, end, steps
        return ids, (collected, passes, cached_seconds)


def guided_generate(adapter, image, prompt: str, guidance=None, max_new_tokens: int = 32,
                    cache: EvidenceCache | None = None, explain: Callable | None = None) -> GuidedAnswer:
    """One guided answer (``GuidedDecoder``); `guidance` a ``GuidanceParams`` or its dict."""
    return GuidedDecoder(adapter, guidance, cache, explain).generate(image, prompt, max_new_tokens)


# --- the logit lens -----------------------------------------------------------------------------------------------
class LogitLens:
    """Per-layer log-probabilities of answer tokens: each decoder layer's output (before the final norm) read
    through the final norm and the LM head, at the position that predicts each answer token."""

    def __init__(self, adapter):
        self.adapter = adapter
        model = adapter.model
        decoder = model.get_decoder()
        self.layers, self.norm, self.lm_head = decoder.layers, decoder.norm, model.get_output_embeddings()

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    def _run(self, inputs: dict, start: int, answer_ids: list[int]) -> np.ndarray:
        """(B, L, A) log p of each answer token at each layer; answer token t is read at position start + t − 1."""
        captured: list = []

        def grab(_module, _args, output):
            captured.append(output[0] if isinstance(output, tuple) else output)

        handles = [layer.register_forward_hook(grab) for layer in self.layers]
        try:
            with torch.no_grad():
                self.adapter.model(**inputs, use_cache=False, logits_to_keep=1)
                return self._read(captured, start, answer_ids)
        finally:
            for h in handles:
                h.remove()

    def _read(self, captured: list, start: int, answer_ids: list[int]) -> np.ndarray:
        positions = torch.arange(start - 1, start - 1 + len(answer_ids), device=self.adapter.device)
        target = torch.tensor(answer_ids, device=self.adapter.device)
        out = []
        for hidden in captured:  # (B, S, D) per layer
            logp = torch.log_softmax(self.lm_head(self.norm(hidden[:, positions])).float(), dim=-1)
            out.append(logp.gather(-1, target.expand(len(logp), -1)[..., None])[..., 0])
        return torch.stack(out, dim=1).detach().cpu().numpy().astype(np.float64)

    def image_logprobs(self, image: np.ndarray, prompt: str, answer_ids, keep_masks: np.ndarray | None = None
                       ) -> np.ndarray:
        """(1 + M, L, A): the whole image (at model resolution), then each of the M keep-masks (H, W) bool applied
        (the rest black, as EAGLE removes regions)."""
        answer_ids = [int(t) for t in answer_ids]
        images = [image] + ([] if keep_masks is None else
                            [image * m[..., None].astype(image.dtype) for m in keep_masks])
        enc = self.adapter.encode(images, prompt)
        start = enc["input_ids"].shape[1]
        tail = torch.tensor(answer_ids, device=self.adapter.device).expand(len(images), -1)
        inputs = dict(enc)
        for k, fill in (("input_ids", None), ("attention_mask", 1), ("mm_token_type_ids", 0), ("token_type_ids", 0)):
            if k in inputs:
                add = tail if fill is None else torch.full_like(tail, fill)
                inputs[k] = torch.cat([inputs[k], add.to(inputs[k].dtype)], dim=1)
        return self._run(inputs, start, answer_ids)

    def text_logprobs(self, prompt: str, answer_ids) -> np.ndarray:
        """(L, A): the model without the image (the chat prompt with no vision block)."""
        answer_ids = [int(t) for t in answer_ids]
        processor = self.adapter.processor
        messages = [{"role": "user", "content": [{"type": "text", "text": prompt}]}]
        text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        enc = processor.tokenizer([text], return_tensors="pt", add_special_tokens=False)
        enc = {k: v.to(self.adapter.device) for k, v in enc.items()}
        sequence, _ = teacher_forcing_inputs(enc, answer_ids)
        inputs = {k: v[None] for k, v in sequence.items()}
        return self._run(inputs, enc["input_ids"].shape[1], answer_ids)[0]
