"""vLLM as a fast local backend (``load_model(path, backend="vllm")``, a GPU): answers and teacher-forced scoring
by an in-process ``vllm.LLM`` engine, everything else (the image the model sees, the photo grid, the tokenizer)
by the checkpoint's own processor through its family's adapter class (docs/api.md).

Scoring is exact teacher forcing: each masked copy is one request of the chat-formatted prompt's token ids (one
image placeholder, which vLLM expands) followed by the answer's own ids, with
``SamplingParams(max_tokens=1, prompt_logprobs=0)``: vLLM returns the log-probability of every prompt token, the
answer's at the end. The prompt and the image are rendered by vLLM once per scorer; each masked copy's engine input
is composed from that rendering (``VllmTokenScorer``): vLLM's processor runs three times per scorer, not once per
copy. vLLM batches the copies itself (continuous batching, paged attention).

``vllm`` is imported only when an engine is built: this module imports without it. vLLM pins its own torch and
transformers, so it usually lives in an environment of its own (``deploy/vllm_server.py: ensure_venv``); this
project's package then runs from ``src/`` on that environment's Python.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import numpy as np

from eagle_pipelines.models.base import Answer

logger = logging.getLogger(__name__)


def _pil(image: np.ndarray):
    from PIL import Image

    return Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8))


class VllmAdapter:
    """A checkpoint run by ``vllm.LLM`` behind the adapter interface (``generate``/``generate_batch``, ``scorer``,
    ``model_image``, ``photo_grid``, ``resolution_spec``, ``name``/``fingerprint``, ``processor``).

    `geometry` is an instance of the checkpoint's family adapter holding only its processor (no weights): it
    decides the image the model sees exactly as the transformers backend does, so regions, masks and ground truth
    are the same. No model internals: the gradient and activation baselines need the transformers backend."""

    def __init__(self, llm, geometry, name: str, fingerprint: str):
        self.llm = llm
        self.geometry = geometry
        self.processor = geometry.processor
        self.family = geometry.family
        self.name = name
        self.fingerprint = fingerprint

    @classmethod
    def from_pretrained(cls, path: str | Path, family: str = "auto", dtype: str = "auto", name: str | None = None,
                        **llm_options) -> VllmAdapter:
        """Builds the engine for the local checkpoint `path` (never downloads). `llm_options` go to ``vllm.LLM``
        (e.g. ``gpu_memory_utilization``, ``max_model_len``, ``enforce_eager``)."""
        from eagle_pipelines.models.adapter import checkpoint_fingerprint
        from eagle_pipelines.models.registry import family_for_checkpoint

        try:
            from vllm import LLM
        except ImportError:
            raise ImportError("backend 'vllm' needs vLLM installed in this environment (pip install vllm; on a "
                              "CPU, deploy/vllm_server.py: ensure_venv builds one; docs/api.md)") from None
        family_cls = family_for_checkpoint(path, family)
        geometry = family_cls.__new__(family_cls)  # the family's processor logic without loading its weights
        geometry.processor = family_cls.load_processor(path)
        geometry.model = None
        geometry.name = name or Path(path).name
        geometry.fingerprint = checkpoint_fingerprint(path)
        options = {"limit_mm_per_prompt": {"image": 1}, "seed": 0, **llm_options}
        start = time.perf_counter()
        llm = LLM(model=str(path), tokenizer=str(path), dtype=dtype, **options)
        logger.info("vLLM engine for '%s' ready in %.0f s", geometry.name, time.perf_counter() - start)
        return cls(llm, geometry, name=geometry.name, fingerprint=f"vllm-{geometry.fingerprint}")

    @property
    def device(self):
        import torch

        return torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def save(self, path) -> None:
        raise NotImplementedError("the vLLM backend does not save checkpoints; use the transformers backend")

    # -- the image the model sees: the family's own processor logic ---------------------------------------------
    def model_image(self, image: np.ndarray, resample=None) -> np.ndarray:
        return self.geometry.model_image(image, resample=resample)

    def source_pixels(self, height: int, width: int) -> np.ndarray:
        return self.geometry.source_pixels(height, width)

    def photo_grid(self, height: int, width: int):
        return self.geometry.photo_grid(height, width)

    def resolution_spec(self) -> dict:
        return self.geometry.resolution_spec()

    # -- prompts -----------------------------------------------------------------------------------------------
    def prompt_ids(self, prompt: str) -> list[int]:
        """The chat-formatted prompt's token ids with one image placeholder (vLLM expands it to the image's
        tokens), ready for the answer."""
        self.geometry.check_prompt(prompt)
        text = self.geometry.chat_prompt(prompt)
        return list(self.processor.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _eos_ids(self) -> set[int]:
        tok = self.processor.tokenizer
        ids = {tok.eos_token_id} if tok.eos_token_id is not None else set()
        config = getattr(self.llm.llm_engine, "generation_config_fields", None) or {}
        eos = config.get("eos_token_id") if isinstance(config, dict) else None
        ids |= set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        return {int(i) for i in ids if i is not None}

    # -- generation --------------------------------------------------------------------------------------------
    def generate(self, image: np.ndarray, prompt: str, max_new_tokens: int = 32):
        return self.generate_batch([image], prompt, max_new_tokens=max_new_tokens)[0]

    def generate_batch(self, images: list[np.ndarray], prompt: str, max_new_tokens: int = 32) -> list:
        """Greedy answers with each chosen token's probability (vLLM's raw log-probabilities)."""
        from vllm import SamplingParams

        ids = self.prompt_ids(prompt)
        prompts = [{"prompt_token_ids": ids, "multi_modal_data": {"image": _pil(self.model_image(im))}}
                   for im in images]
        params = SamplingParams(max_tokens=int(max_new_tokens), temperature=0.0, logprobs=0)
        tok = self.processor.tokenizer
        eos = self._eos_ids()
        answers = []
        for out in self.llm.generate(prompts, params, use_tqdm=False):
            gen = out.outputs[0]
            tokens, probs, finished, end = [], [], False, None
            for step, t in enumerate(gen.token_ids):
                if t in eos:
                    finished, end = True, int(t)
                    break
                tokens.append(int(t))
                probs.append(math.exp(gen.logprobs[step][t].logprob))
            if gen.finish_reason == "stop" and end is None and len(tokens) < max_new_tokens:
                finished = True
            answers.append(Answer(prompt=prompt, token_ids=tuple(tokens),
                                  tokens=tuple(tok.convert_ids_to_tokens(tokens)),
                                  text=tok.decode(tokens, skip_special_tokens=True), token_probs=tuple(probs),
                                  finished=finished, end_token_id=end))
        return answers

    # -- scoring -----------------------------------------------------------------------------------------------
    def scorer(self, image: np.ndarray, prompt: str, answer_ids, target_positions, batch_size: int = 256,
               compose: str = "pixel_values", memory_budget_mb: float | None = None) -> VllmTokenScorer:
        """A TokenScorer for `image` (at model resolution) teacher-forcing `prompt` + `answer_ids` in vLLM.
        `batch_size`: masked copies handed to the engine per call (it schedules them itself). `compose` (the
        engine's, as for the other adapters): ``"pixel_values"`` (`image` at model resolution) composes each
        masked copy's processed pixels from one rendering of the image where the family's processor allows it,
        else hands every copy to vLLM's processor (``VllmTokenScorer``'s ``"auto"``); ``"processor"`` always
        does the latter. `memory_budget_mb` has no effect (vLLM manages its own memory)."""
        return VllmTokenScorer(self.llm, image, self.prompt_ids(prompt), answer_ids, target_positions,
                               batch_size=batch_size, compose="auto" if compose == "pixel_values" else compose,
                               patch_index=self.geometry.patch_index)


class VllmTokenScorer:
    """(B, H, W) keep-masks -> (B, T) teacher-forced probabilities of the target tokens, from vLLM's
    ``prompt_logprobs`` of prompt + answer for every masked copy (removed pixels black).

    ``compose="pixel_values"`` (what the default ``"auto"`` picks where it can) renders the prompt with the whole
    image and with a black one once through vLLM's own renderer (its processor, the placeholder expansion), then
    makes each masked copy's engine input from them: its processed pixels are picked entry by entry from the two
    (``patch_index``: the pixel each entry comes from; exact while the image is at model resolution, which the
    constructor checks against the renderer on a masked copy), and its multimodal hash is the image's digest with
    the mask's (vLLM's encoder cache is keyed by it). The copies go to the engine (``LLMEngine.add_request``)
    without vLLM processing, hashing and parsing each of them (a fifth of the scorer's CPU time on the embedded
    model, docs/api.md). ``compose="processor"`` hands vLLM every masked copy as an array (``LLM.generate``);
    ``compose="auto"`` is ``"pixel_values"`` where the checks pass (one image of ``pixel_values`` that
    ``patch_index`` covers, equal to the processor's on a masked copy), else ``"processor"`` (both exact; the log
    says which)."""

    def __init__(self, llm, image: np.ndarray, prompt_ids: list[int], answer_ids, target_positions,
                 batch_size: int = 256, compose: str = "auto", patch_index=None):
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        if compose not in ("auto", "pixel_values", "processor"):
            raise ValueError(f"compose must be 'auto', 'pixel_values' or 'processor', got {compose!r}")
        self.llm = llm
        self.image = np.ascontiguousarray(image)
        self.height, self.width = self.image.shape[:2]
        self.answer_ids = [int(t) for t in answer_ids]
        self.target_positions = tuple(int(t) for t in target_positions)
        if not self.target_positions:
            raise ValueError("no tokens to explain: target_positions is empty")
        if min(self.target_positions) < 0 or max(self.target_positions) >= len(self.answer_ids):
            raise ValueError(f"target positions {self.target_positions} outside the answer of "
                             f"{len(self.answer_ids)} tokens")
        self.ids = list(prompt_ids) + self.answer_ids
        self.batch_size = max(1, int(batch_size))
        self.compose = compose
        self.memory_plan: dict = {}
        # detokenize=False: the log-probabilities are read by token id, so vLLM need not turn every prompt
        # token of every copy into text; flat_logprobs: vLLM keeps them in flat lists, not one dict and Logprob
        # object per prompt token; FINAL_ONLY: one output per request, when it is finished
        self.params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0, detokenize=False,
                                     flat_logprobs=True, output_kind=RequestOutputKind.FINAL_ONLY)
        if compose != "processor":
            try:
                if patch_index is None:
                    raise ValueError("compose='pixel_values' needs the family's patch_index; use "
                                     "compose='processor'")
                self._prepare_composition(patch_index(self.height, self.width))
                self.compose = "pixel_values"
            except ValueError as error:
                if compose == "pixel_values":
                    raise
                logger.info("vLLM scorer: every masked copy through vLLM's processor (%s)", error)
                self.compose = "processor"

    # -- composing the engine inputs of masked copies -------------------------------------------------------------
    def _render(self, image: np.ndarray) -> dict:
        """vLLM's engine input for prompt + answer with `image` (its processor and placeholder expansion)."""
        # skip_mm_cache: the processed pixels themselves, never a reference to an item vLLM's cache holds
        return self.llm.renderer.render_cmpl([{"prompt_token_ids": self.ids, "multi_modal_data": {"image": image}}],
                                             skip_mm_cache=True)[0]

    @staticmethod
    def _pixel_elem(engine_input: dict):
        """The one image's processed pixels (``pixel_values``) of a rendered engine input."""
        items = engine_input.get("mm_kwargs", {}).get("image", [])
        if (engine_input.get("type") != "multimodal" or len(items) != 1 or items[0] is None
                or "pixel_values" not in items[0]):
            raise ValueError("vLLM rendered no single image with pixel_values for this model; use "
                             "compose='processor'")
        return items[0]["pixel_values"]

    def _prepare_composition(self, index: np.ndarray) -> None:
        import hashlib

        import torch

        self.base = self._render(self.image)
        full = self._pixel_elem(self.base)
        black = self._pixel_elem(self._render(np.zeros_like(self.image))).data
        if tuple(index.shape) != tuple(full.data.shape) or full.data.shape != black.shape:
            raise ValueError(f"pixel index {tuple(index.shape)} does not match vLLM's pixel values "
                             f"{tuple(full.data.shape)}; use compose='processor'")
        self.pixel_elem, self.full, self.black = full, full.data, black
        self.index = torch.from_numpy(np.ascontiguousarray(index))
        self.digest = hashlib.blake2b(self.image.tobytes() + repr(self.image.shape).encode() + repr(self.ids).encode(),
                                      digest_size=16).hexdigest()
        # the composition must be what vLLM's processor makes of a masked copy, to the bit
        probe = np.random.default_rng(0).random((1, self.height, self.width)) > 0.5
        rendered = self._pixel_elem(self._render(self.image * probe[0][..., None].astype(self.image.dtype))).data
        if not torch.equal(self._pixels(probe)[0], rendered):
            raise ValueError("vLLM's processor does not map this image pixel by pixel (is it at model resolution? "
                             "pass model_image(image)); use compose='processor'")

    def _pixels(self, keep_masks: np.ndarray):
        """(B, N, D) processed pixels of the masked copies: each entry the full image's or the black one's."""
        import torch

        flat = torch.from_numpy(np.ascontiguousarray(keep_masks.reshape(len(keep_masks), -1)))
        return torch.where(flat[:, self.index], self.full.unsqueeze(0), self.black.unsqueeze(0))

    def _engine_inputs(self, keep_masks: np.ndarray) -> list[dict]:
        import hashlib
        import time as _time
        from dataclasses import replace

        from vllm.multimodal.inputs import MultiModalKwargsItem, MultiModalKwargsItems

        pixels = self._pixels(keep_masks)
        (item,) = self.base["mm_kwargs"]["image"]
        others = {k: v for k, v in item.items() if k != "pixel_values"}
        now = _time.time()
        inputs = []
        for mask, pv in zip(keep_masks, pixels):
            mask_digest = hashlib.blake2b(np.packbits(mask).tobytes(), digest_size=16).hexdigest()
            kwargs = MultiModalKwargsItem({"pixel_values": replace(self.pixel_elem, data=pv), **others})
            inputs.append({**self.base, "mm_kwargs": MultiModalKwargsItems({"image": [kwargs]}),
                           "mm_hashes": {"image": [f"eagle-{self.digest}-{mask_digest}"]}, "arrival_time": now})
        return inputs

    def _run(self, inputs: list[dict]) -> list:
        """Adds `inputs` to the engine and steps it until all are finished; their outputs in order."""
        import uuid

        engine = self.llm.llm_engine
        tag = uuid.uuid4().hex
        ids = [f"eagle-{tag}-{k}" for k in range(len(inputs))]
        added: list[str] = []
        done: dict = {}
        try:
            for rid, inp in zip(ids, inputs):
                engine.add_request(rid, inp, self.params)
                added.append(rid)
            while engine.has_unfinished_requests():
                for out in engine.step():
                    if out.finished:
                        done[out.request_id] = out
        except BaseException:
            engine.abort_request([r for r in added if r not in done], internal=True)
            raise
        missing = [r for r in ids if r not in done]
        if missing:
            raise RuntimeError(f"vLLM finished {len(done)} of {len(ids)} scoring requests")
        return [done[r] for r in ids]

    def __call__(self, keep_masks: np.ndarray) -> np.ndarray:
        keep_masks = np.asarray(keep_masks, dtype=bool)
        if keep_masks.ndim != 3 or keep_masks.shape[1:] != (self.height, self.width):
            raise ValueError(f"masks are {keep_masks.shape[1:]}, the model image is {(self.height, self.width)}")
        n = len(self.answer_ids)
        out = np.zeros((len(keep_masks), len(self.target_positions)))
        for lo in range(0, len(keep_masks), self.batch_size):
            chunk = keep_masks[lo:lo + self.batch_size]
            if self.compose == "pixel_values":
                results = self._run(self._engine_inputs(chunk))
            else:
                # the masked copies go in as arrays: vLLM hands them to its image processor as they are
                prompts = [{"prompt_token_ids": self.ids,
                            "multi_modal_data": {"image": self.image * m[..., None].astype(self.image.dtype)}}
                           for m in chunk]
                results = self.llm.generate(prompts, self.params, use_tqdm=False)
            for k, result in enumerate(results):
                logprobs = result.prompt_logprobs
                answer = logprobs[len(logprobs) - n:]
                tail = list(result.prompt_token_ids[-n:])
                if tail != self.answer_ids:
                    raise RuntimeError(f"vLLM's prompt ends with {tail}, not the answer {self.answer_ids}")
                out[lo + k] = [math.exp(answer[t][self.answer_ids[t]].logprob) for t in self.target_positions]
        return out


def timing_sets(masks: np.ndarray, repeat: int) -> list[np.ndarray]:
    """`repeat` sets of masked copies for timing a scorer: `masks` itself first, then its mirror images (left-right,
    up-down, both; then again), so that no repeat is served from vLLM's multimodal processor cache: in a search
    every masked copy is new."""
    flips = [masks, masks[:, :, ::-1], masks[:, ::-1, :], masks[:, ::-1, ::-1]]
    return [np.ascontiguousarray(flips[r % 4]) for r in range(max(1, int(repeat)))]


def score_file(masks_file: str | Path, model_dir: str | Path, out_file: str | Path, repeat: int = 1,
               composes: tuple[str, ...] | list[str] = ("pixel_values",), **llm_options) -> dict:
    """Builds the engine for `model_dir`, generates the answer for the image in `masks_file` (an .npz with
    ``image``, ``prompt``, ``answer_ids``, ``positions``, ``masks``) and scores its masks with a scorer of each of
    `composes`; writes and returns the probabilities (of ``masks``; ``probs``: the first compose's,
    ``probs_by_compose``: each one's), the answer and the timings of the first compose (engine start; scoring
    s/image after one warm-up call, the best of `repeat`, each on copies not scored before: ``timing_sets``).
    What the tests and benchmarks/api.py run in the vLLM environment
    (``python -m eagle_pipelines.models.vllm_backend``)."""
    import json

    data = np.load(masks_file)
    prompt = str(data["prompt"])
    start = time.perf_counter()
    model = VllmAdapter.from_pretrained(model_dir, **llm_options)
    engine_seconds = time.perf_counter() - start
    image = model.model_image(data["image"])
    answer = model.generate(image, prompt)
    answer_ids, positions = [int(t) for t in data["answer_ids"]], [int(t) for t in data["positions"]]
    masks = data["masks"]
    seconds, cpu_seconds, by_compose = float("inf"), float("inf"), {}
    for compose in composes:
        scorer = VllmTokenScorer(model.llm, image, model.prompt_ids(prompt), answer_ids, positions,
                                 compose=compose, patch_index=model.geometry.patch_index)
        scorer(~masks[: min(4, len(masks))])  # warm-up (copies the timings do not see again)
        if compose != composes[0]:
            by_compose[compose] = scorer(masks).tolist()
            continue
        for masks_r in timing_sets(masks, repeat):  # the best of `repeat` timings
            start, cpu = time.perf_counter(), time.process_time()
            out = scorer(masks_r)
            seconds = min(seconds, time.perf_counter() - start)
            cpu_seconds = min(cpu_seconds, time.process_time() - cpu)
            by_compose.setdefault(compose, out.tolist())
    engine_core = getattr(getattr(model.llm, "llm_engine", None), "engine_core", None)
    if engine_core is not None:  # stop the engine process now, not in the interpreter's teardown
        engine_core.shutdown()
    result = {"probs": by_compose[composes[0]], "probs_by_compose": by_compose, "answer_ids": list(answer.token_ids),
              "end_token_id": answer.end_token_id, "answer_probs": list(answer.token_probs),
              "engine_seconds": engine_seconds, "scoring_seconds": seconds,
              "seconds_per_image": seconds / max(1, len(masks)), "cpu_seconds": cpu_seconds,
              "cpu_seconds_per_image": cpu_seconds / max(1, len(masks)), "compose": composes[0]}
    partial = Path(out_file).with_name(Path(out_file).name + ".partial")
    partial.write_text(json.dumps(result))
    partial.replace(out_file)  # a result file that exists is a whole one
    return result


if __name__ == "__main__":  # python -m eagle_pipelines.models.vllm_backend MASKS.npz MODEL_DIR OUT.json [LLM options]
    import json
    import sys

    logging.basicConfig(level=logging.INFO)
    options = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {}
    score_file(sys.argv[1], sys.argv[2], sys.argv[3], **options)
    # score_file has shut the engine down and written the result; the interpreter's own teardown can still abort
    # in vLLM's C++ threads ("terminate called without an active exception", SIGABRT, seen in CI), so leave
    # without it.
    import gc
    import os

    gc.collect()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
