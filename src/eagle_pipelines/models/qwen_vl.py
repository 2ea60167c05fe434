"""Adapter for the Qwen-VL family (Qwen2-VL, Qwen2.5-VL, Qwen3-VL): the embedded toy model and real checkpoints
share this code."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from eagle_pipelines.models.base import Answer
from eagle_pipelines.models.registry import family_for_checkpoint, register_family, resolve_dtype
from eagle_pipelines.models.scoring import BatchedTokenScorer


def checkpoint_fingerprint(path: str | Path) -> str:
    """A short id of a checkpoint folder's content: its config and the head and size of each weight file."""
    digest = hashlib.sha1()
    folder = Path(path)
    for file in sorted(folder.glob("*.json")) + sorted(folder.glob("*.safetensors")):
        if file.name in ("quality.json",):
            continue
        digest.update(file.name.encode())
        digest.update(str(file.stat().st_size).encode())
        with open(file, "rb") as f:
            digest.update(f.read(1 << 20))
    return digest.hexdigest()[:12]


@register_family("qwen_vl", model_types=("qwen2_vl", "qwen2_5_vl", "qwen3_vl"))
class QwenVLAdapter:
    """Wraps a Qwen-VL ``...ForConditionalGeneration`` model and its processor behind ``VisionLanguageModel``."""

    family = "qwen_vl"

    def __init__(self, model, processor, name: str = "qwen_vl", fingerprint: str = ""):
        self.model = model.eval()
        self.processor = processor
        self.name = name
        self.fingerprint = fingerprint or name

    # -- loading and saving ------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path: str | Path, dtype: str = "float32", device: str = "cpu",
                        device_map: str | None = None, name: str | None = None) -> QwenVLAdapter:
        """Loads model and processor from a local folder (never downloads)."""
        from transformers import AutoModelForImageTextToText

        from eagle_pipelines.models.processing import load_qwen_vl_processor

        family_for_checkpoint(path, cls.family)  # a Qwen-VL checkpoint, or a clear error naming the family
        processor = load_qwen_vl_processor(path)
        target = ("cuda" if torch.cuda.is_available() else "cpu") if device_map else device
        kwargs = {"local_files_only": True, "dtype": resolve_dtype(dtype, target)}
        if device_map:
            kwargs["device_map"] = device_map
        model = AutoModelForImageTextToText.from_pretrained(path, **kwargs)
        if not device_map:
            model = model.to(device)
        return cls(model, processor, name=name or Path(path).name, fingerprint=checkpoint_fingerprint(path))

    def save(self, path: str | Path) -> None:
        Path(path).mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(path)
        self.processor.save_pretrained(path)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # -- inputs ------------------------------------------------------------------------------------------------
    def chat_prompt(self, prompt: str) -> str:
        from eagle_pipelines.models.processing import image_chat_prompt

        return image_chat_prompt(self.processor, prompt)

    def check_prompt(self, prompt: str) -> None:
        """Fails when a word-level tokenizer (the embedded model's) does not know a word of the prompt."""
        tok = self.processor.tokenizer
        if tok.unk_token_id is None:
            return
        unknown = [w for w in prompt.replace("?", " ?").replace(".", " .").replace(",", " ,").split()
                   if tok.convert_tokens_to_ids(w) == tok.unk_token_id]
        if unknown:
            raise ValueError(f"The model '{self.name}' does not know the words {unknown} of the prompt "
                             f"{prompt!r}; use its training prompts, or retrain it (kedro run --pipeline=toy_model).")

    def encode(self, images: list[np.ndarray], prompt: str) -> dict[str, torch.Tensor]:
        self.check_prompt(prompt)
        text = self.chat_prompt(prompt)
        tok = self.processor.tokenizer
        old_side, tok.padding_side = tok.padding_side, "left"
        try:
            enc = self.processor(images=list(images), text=[text] * len(images), padding=True, return_tensors="pt")
        finally:
            tok.padding_side = old_side
        return {k: v.to(self.device) for k, v in enc.items()}

    def vision_token_ids(self) -> list[int]:
        """Placeholder tokens of images and videos: never generated as part of an answer."""
        tok = self.processor.tokenizer
        names = ["<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>"]
        ids = [tok.convert_tokens_to_ids(n) for n in names]
        return [i for i in ids if i is not None and i != tok.unk_token_id]

    # -- generation --------------------------------------------------------------------------------------------
    def generate(self, image: np.ndarray, prompt: str, max_new_tokens: int = 32) -> Answer:
        return self.generate_batch([image], prompt, max_new_tokens=max_new_tokens)[0]

    @torch.no_grad()
    def generate_batch(self, images: list[np.ndarray], prompt: str, max_new_tokens: int = 32) -> list[Answer]:
        """Greedy answers for a batch of images sharing one prompt, with each chosen token's probability."""
        enc = self.encode(images, prompt)
        out = self.model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                  suppress_tokens=self.vision_token_ids(), output_logits=True,
                                  return_dict_in_generate=True)
        new = out.sequences[:, enc["input_ids"].shape[1]:]
        # probabilities of the raw next-token distribution, as teacher-forced scoring computes them
        probs = torch.stack([torch.softmax(s.float(), dim=-1) for s in out.logits], dim=1)  # (B, steps, V)
        tok = self.processor.tokenizer
        eos = self.model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos])
        answers = []
        for b in range(new.shape[0]):
            ids, p, finished = [], [], False
            for step, t in enumerate(new[b].tolist()):
                if t in eos_ids:
                    finished = True
                    break
                ids.append(t)
                p.append(float(probs[b, step, t]))
            answers.append(Answer(
                prompt=prompt, token_ids=tuple(ids), tokens=tuple(tok.convert_ids_to_tokens(ids)),
                text=tok.decode(ids, skip_special_tokens=True), token_probs=tuple(p), finished=finished,
            ))
        return answers

    # -- scoring (EAGLE's inner loop) -------------------------------------------------------------------------
    def model_image(self, image: np.ndarray) -> np.ndarray:
        """`image` resized to the resolution the model sees (the processor's smart resize), so that masks,
        superpixels and the processor work on the same pixels and the processor resizes nothing more."""
        from PIL import Image
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

        ip = self.processor.image_processor
        h, w = image.shape[:2]
        th, tw = smart_resize(h, w, factor=ip.patch_size * ip.merge_size, min_pixels=ip.size["shortest_edge"],
                              max_pixels=ip.size["longest_edge"])
        if (th, tw) == (h, w):
            return np.ascontiguousarray(image)
        return np.asarray(Image.fromarray(image).resize((tw, th), Image.Resampling.BICUBIC))

    def resolution_spec(self) -> dict:
        """What decides the model-resolution image (cache keys of superpixels)."""
        ip = self.processor.image_processor
        return {"min_pixels": ip.size["shortest_edge"], "max_pixels": ip.size["longest_edge"],
                "factor": ip.patch_size * ip.merge_size}

    def patch_index(self, height: int, width: int) -> np.ndarray:
        """For each entry of ``pixel_values`` (N, C·T·p·p), the flat index of the pixel it comes from.

        Derived from the image processor itself (an image whose values are pixel indices, passed through
        without rescaling or normalisation), so it follows whatever patch layout the processor uses."""
        index = np.arange(height * width, dtype=np.float32).reshape(height, width)
        out = self.processor.image_processor(images=[np.repeat(index[..., None], 3, axis=2)], do_resize=False,
                                             do_rescale=False, do_normalize=False, return_tensors="np")
        return np.rint(out["pixel_values"]).astype(np.int64)

    def scorer(self, image: np.ndarray, prompt: str, answer_ids: list[int] | tuple[int, ...],
               target_positions: list[int] | tuple[int, ...], batch_size: int = 32,
               compose: str = "pixel_values", memory_budget_mb: float | None = None) -> QwenVLTokenScorer:
        """A TokenScorer for `image` (at model resolution) teacher-forcing `prompt` + `answer_ids`."""
        return QwenVLTokenScorer(self, image, prompt, answer_ids, target_positions, batch_size, compose,
                                 memory_budget_mb)

    # -- internals for the gradient and activation baselines (models/base.py: ModelInternals) ------------------
    def teacher_forced(self, image: np.ndarray, prompt: str, answer_ids) -> QwenVLTeacherForced:
        """A differentiable teacher-forced pass over `image` (at model resolution) + `prompt` + `answer_ids`."""
        return QwenVLTeacherForced(self, image, prompt, answer_ids)


class QwenVLTokenScorer(BatchedTokenScorer):
    """Teacher-forced probabilities of the explained answer tokens for batches of masked copies of one image.

    Removed pixels are zero (black). With ``compose="pixel_values"`` the masked ``pixel_values`` are composed
    directly from the processed full and black images (exact, since the processor works per pixel and the
    image is already at model resolution); ``compose="processor"`` re-runs the image processor per masked copy
    (the reference path). Batching and the memory budget: ``BatchedTokenScorer``."""

    def __init__(self, adapter: QwenVLAdapter, image: np.ndarray, prompt: str, answer_ids, target_positions,
                 batch_size: int = 32, compose: str = "pixel_values", memory_budget_mb: float | None = None):
        super().__init__(batch_size, memory_budget_mb)
        if compose not in ("pixel_values", "processor"):
            raise ValueError(f"compose must be 'pixel_values' or 'processor', got {compose!r}")
        answer_ids = [int(t) for t in answer_ids]
        self.target_positions = tuple(int(t) for t in target_positions)
        if not self.target_positions:
            raise ValueError("no tokens to explain: target_positions is empty")
        if min(self.target_positions) < 0 or max(self.target_positions) >= len(answer_ids):
            raise ValueError(f"target positions {self.target_positions} outside the answer of "
                             f"{len(answer_ids)} tokens")
        self.adapter, self.image, self.prompt, self.compose = adapter, image, prompt, compose
        self.device = device = adapter.device
        enc = adapter.encode([image], prompt)
        self.height, self.width = image.shape[:2]
        self.input_ids = torch.cat([enc["input_ids"][0], torch.tensor(answer_ids, device=device)])
        self.mm_token_type_ids = torch.cat([enc["mm_token_type_ids"][0],
                                            torch.zeros(len(answer_ids), dtype=torch.long, device=device)])
        self.grid = enc["image_grid_thw"]
        self.n_answer = len(answer_ids)
        self.targets = torch.tensor([answer_ids[t] for t in self.target_positions], device=device)
        self.dtype = adapter.model.dtype
        if compose == "pixel_values":
            self.pv_full = enc["pixel_values"]
            self.pv_black = adapter.encode([np.zeros_like(image)], prompt)["pixel_values"]
            self.index = torch.from_numpy(adapter.patch_index(self.height, self.width)).to(device)

    def pixel_values(self, keep_masks: np.ndarray) -> torch.Tensor:
        """(B·N, D) pixel values of the masked copies."""
        if self.compose == "processor":
            images = [self.image * m[..., None].astype(self.image.dtype) for m in keep_masks]
            return self.adapter.encode(images, self.prompt)["pixel_values"]
        flat = torch.from_numpy(np.ascontiguousarray(keep_masks.reshape(len(keep_masks), -1))).to(self.index.device)
        keep = flat[:, self.index]  # (B, N, D)
        pv = torch.where(keep, self.pv_full.unsqueeze(0), self.pv_black.unsqueeze(0))
        return pv.reshape(-1, pv.shape[-1])

    def _forward(self, chunk: np.ndarray) -> np.ndarray:
        b = len(chunk)
        logits = self.adapter.model(
            input_ids=self.input_ids.expand(b, -1),
            attention_mask=torch.ones(b, len(self.input_ids), dtype=torch.long, device=self.input_ids.device),
            mm_token_type_ids=self.mm_token_type_ids.expand(b, -1),
            pixel_values=self.pixel_values(chunk).to(self.dtype),
            image_grid_thw=self.grid.repeat(b, 1),
            logits_to_keep=self.n_answer + 1,
        ).logits  # (b, A+1, V): index t predicts answer token t
        probs = torch.softmax(logits[:, list(self.target_positions)].float(), dim=-1)
        return probs.gather(-1, self.targets.expand(b, -1).unsqueeze(-1)).squeeze(-1).cpu().numpy()



def pixel_channel_index(processor, height: int, width: int) -> np.ndarray:
    """For each entry of ``pixel_values`` (N, C·T·p·p), the colour channel (0, 1, 2) it comes from, derived from
    the image processor like ``QwenVLAdapter.patch_index``."""
    channel = np.broadcast_to(np.arange(3, dtype=np.float32), (height, width, 3)).copy()
    out = processor.image_processor(images=[channel], do_resize=False, do_rescale=False, do_normalize=False,
                                    return_tensors="np")
    return np.rint(out["pixel_values"]).astype(np.int64)


class QwenVLCaptumModule(torch.nn.Module):
    """The Qwen-VL model for Captum's ``LLMAttribution``: Captum appends the answer ids to ``input_ids`` but
    leaves the processor's ``mm_token_type_ids`` at prompt length, so they are rebuilt from ``input_ids`` here
    (dropping them silently switches the model to 1-D positions and changes its outputs)."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.image_token_id = model.config.image_token_id
        self.video_token_id = getattr(model.config, "video_token_id", None)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def forward(self, input_ids: torch.Tensor, **kwargs):
        kwargs.pop("mm_token_type_ids", None)
        types = torch.zeros_like(input_ids)
        types[input_ids == self.image_token_id] = 1
        if self.video_token_id is not None:
            types[input_ids == self.video_token_id] = 2
        if "pixel_values" in kwargs:
            kwargs["pixel_values"] = kwargs["pixel_values"].to(self.model.dtype)
        return self.model(input_ids=input_ids, mm_token_type_ids=types, use_cache=False, **kwargs)


class QwenVLTeacherForced:
    """``TeacherForcedPass`` (models/base.py) of the Qwen-VL family.

    ``pixel_values`` are composed from (B, H, W, 3) float images with torch ops: each entry picks its pixel and
    channel (from ``patch_index`` / ``pixel_channel_index``, i.e. the processor's own layout, temporal copies
    included), then the processor's rescale and normalisation. Hidden states are read with hooks on the decoder
    layers (inputs of the first, outputs of each), before the final norm."""

    def __init__(self, adapter: QwenVLAdapter, image: np.ndarray, prompt: str, answer_ids):
        answer_ids = [int(t) for t in answer_ids]
        if not answer_ids:
            raise ValueError("the answer is empty: nothing to teacher-force")
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) RGB image, got shape {image.shape}")
        model = adapter.model
        self.adapter, self.model, self.prompt = adapter, model, prompt
        self.device = device = adapter.device
        self.dtype = model.dtype
        self.tokenizer = adapter.processor.tokenizer
        self.height, self.width = image.shape[:2]
        self.image = torch.as_tensor(np.asarray(image, dtype=np.float32), device=device)
        enc = adapter.encode([image], prompt)
        prompt_ids = enc["input_ids"][0]
        self.answer_start = len(prompt_ids)
        self.answer_ids = torch.tensor(answer_ids, device=device)
        self.input_ids = torch.cat([prompt_ids, self.answer_ids])
        self.mm_token_type_ids = torch.cat([enc["mm_token_type_ids"][0],
                                            torch.zeros(len(answer_ids), dtype=torch.long, device=device)])
        self.grid_thw = enc["image_grid_thw"]
        self.image_positions = (prompt_ids == model.config.image_token_id).nonzero().squeeze(-1)
        ip = adapter.processor.image_processor
        t, gh, gw = (int(v) for v in self.grid_thw[0])
        self.image_grid = (gh // ip.merge_size, gw // ip.merge_size)
        if t != 1 or self.image_grid[0] * self.image_grid[1] != len(self.image_positions):
            raise ValueError(f"{len(self.image_positions)} image tokens do not tile the grid {self.grid_thw.tolist()}")
        self.context_positions = self._context_positions(prompt_ids, prompt)
        # the processor's pixel layout and normalisation, as tensors
        index = torch.from_numpy(adapter.patch_index(self.height, self.width)).to(device)
        channel = torch.from_numpy(pixel_channel_index(adapter.processor, self.height, self.width)).to(device)
        scale = ip.rescale_factor if ip.do_rescale else 1.0
        mean = torch.tensor(ip.image_mean if ip.do_normalize else [0.0] * 3, dtype=torch.float32, device=device)
        std = torch.tensor(ip.image_std if ip.do_normalize else [1.0] * 3, dtype=torch.float32, device=device)
        self._flat_index = index * 3 + channel  # into images.reshape(B, H*W*3)
        self._scale = scale / std[channel]
        self._shift = mean[channel] / std[channel]
        decoder = model.get_decoder()
        self._layers, self._norm, self._lm_head = decoder.layers, decoder.norm, model.get_output_embeddings()
        self.llm_module = QwenVLCaptumModule(model)

    def _context_positions(self, prompt_ids: torch.Tensor, prompt: str) -> torch.Tensor:
        """Positions of the prompt's text after the image (its tokens found in the sequence); else every
        non-special token between the image and the answer."""
        words = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        ids = prompt_ids.tolist()
        start = int(self.image_positions[-1]) + 1 if len(self.image_positions) else 0
        for at in range(start, len(ids) - len(words) + 1):
            if words and ids[at:at + len(words)] == words:
                return torch.arange(at, at + len(words), device=self.device)
        special = set(self.tokenizer.all_special_ids) | set(self.adapter.vision_token_ids())
        return torch.tensor([p for p in range(start, len(ids)) if ids[p] not in special], dtype=torch.long,
                            device=self.device)

    def pixel_values(self, images: torch.Tensor) -> torch.Tensor:
        """(B·N, D) pixel values of (B, H, W, 3) images in 0..255, differentiable."""
        flat = images.reshape(len(images), -1).float()
        pv = flat[:, self._flat_index] * self._scale - self._shift  # (B, N, D)
        return pv.reshape(-1, pv.shape[-1])

    def llm_inputs(self, image) -> dict:
        """The processor's inputs for one model-resolution image (PIL or array) and the prompt."""
        return self.adapter.encode([np.asarray(image)], self.prompt)

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        return self._lm_head(self._norm(hidden))

    def __call__(self, images, hidden_states: bool = False):
        from eagle_pipelines.models.base import TeacherForcedOutput

        images = torch.as_tensor(images, device=self.device)
        if images.ndim == 3:
            images = images[None]
        if images.ndim != 4 or tuple(images.shape[1:]) != (self.height, self.width, 3):
            raise ValueError(f"images are {tuple(images.shape)}, expected (B, {self.height}, {self.width}, 3)")
        b = len(images)
        captured: list = []
        handles = []
        if hidden_states:
            def grab_input(_module, args, kwargs):
                captured.append(args[0] if args else kwargs["hidden_states"])

            def grab_output(_module, _args, output):
                captured.append(output[0] if isinstance(output, tuple) else output)

            handles.append(self._layers[0].register_forward_pre_hook(grab_input, with_kwargs=True))
            handles += [layer.register_forward_hook(grab_output) for layer in self._layers]
        try:
            logits = self.model(
                input_ids=self.input_ids.expand(b, -1),
                attention_mask=torch.ones(b, len(self.input_ids), dtype=torch.long, device=self.device),
                mm_token_type_ids=self.mm_token_type_ids.expand(b, -1),
                pixel_values=self.pixel_values(images).to(self.dtype),
                image_grid_thw=self.grid_thw.repeat(b, 1),
                logits_to_keep=len(self.answer_ids) + 1,
                use_cache=False,
            ).logits[:, :-1]
        finally:
            for handle in handles:
                handle.remove()
        return TeacherForcedOutput(logits=logits, hidden_states=tuple(captured) if hidden_states else None)
