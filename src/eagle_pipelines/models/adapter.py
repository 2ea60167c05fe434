"""What the transformers-based model families share: loading (local files only), generation with raw-softmax token
probabilities, the image the model sees, and teacher-forced scoring of masked copies of one image.

A family subclasses ``TransformersAdapter`` in its own module (``llava.py``, ``internvl.py``, ``qwen_vl.py``) and sets
what differs: the processor class to fall back on without torchvision, the vision placeholder tokens, extra
processor arguments, and where its processor is not per pixel at model resolution the image it sees (Qwen-VL's
smart resize, InternVL's tiles). See docs/models.md.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from eagle_pipelines.core.geometry import PhotoGrid
from eagle_pipelines.models.base import Answer, TeacherForcedOutput, checked_targets
from eagle_pipelines.models.processing import image_chat_prompt, load_image_text_processor
from eagle_pipelines.models.registry import family_for_checkpoint, resolve_dtype
from eagle_pipelines.models.scoring import BatchedTokenScorer

#: sequence-aligned processor outputs and what the teacher-forced answer tokens get in them
_SEQUENCE_FILL = {"attention_mask": 1, "mm_token_type_ids": 0, "token_type_ids": 0}


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


SOFTMAX_DTYPES = ("float32", "model")


def token_softmax(logits: torch.Tensor, softmax_dtype: str = "float32", model_dtype=None) -> torch.Tensor:
    """Softmax over the vocabulary, as float32: of the logits upcast to float32 (``float32``), or computed in
    `model_dtype` and only then upcast (``model``: the reference's softmax of bf16 logits, rounded in bf16)."""
    if softmax_dtype == "model":
        return torch.softmax(logits.to(model_dtype or logits.dtype), dim=-1).float()
    return torch.softmax(logits.float(), dim=-1)


class TransformersAdapter:
    """A ``...ForConditionalGeneration`` model and its processor behind ``VisionLanguageModel`` and the scorer
    interface EAGLE uses (``model_image``, ``scorer``).

    Class attributes a family sets:
        family, model_types: set by ``@register_family``.
        processor_class: the transformers processor class (or an image+text subclass of it that needs no
            torchvision) used when ``AutoProcessor`` cannot build the stock one.
        vision_tokens: placeholder tokens of images/videos; never generated as part of an answer.
        images_kwargs: extra arguments of every processor call (e.g. InternVL's tiling switch).
        unknown_words_hint: appended to the error about prompt words the tokenizer does not know.

    Families whose processor is not per pixel at model resolution override ``model_image``, ``resolution_spec``
    and ``patch_index`` (Qwen-VL's smart resize); ``scorer`` and ``teacher_forced`` build ``TeacherForcedScorer``
    and ``TransformersTeacherForced``, whose hooks (``_image_grid``, ``_captum_module``) a family may override.
    """

    family = "transformers"
    model_types: tuple[str, ...] = ()
    processor_class = None
    vision_tokens: tuple[str, ...] = ()
    images_kwargs: dict = {}
    unknown_words_hint: str = ""

    def __init__(self, model, processor, name: str | None = None, fingerprint: str = "",
                 softmax_dtype: str = "float32"):
        self.model = model.eval()
        self.processor = processor
        self.name = name or self.family
        self.fingerprint = fingerprint or self.name
        if softmax_dtype not in SOFTMAX_DTYPES:
            raise ValueError(f"softmax_dtype must be one of {SOFTMAX_DTYPES} (the vlm catalog entry's options), got "
                             f"{softmax_dtype!r}")
        #: ``float32``: the scorer's softmax on logits upcast to float32 (ours); ``model``: on the logits in the
        #: model's dtype as the reference's scripts take it (``nn.Softmax`` on bf16 logits, docs/paper.md#parity)
        self.softmax_dtype = softmax_dtype

    # -- loading and saving ------------------------------------------------------------------------------------
    @classmethod
    def load_processor(cls, path: str | Path):
        return load_image_text_processor(path, cls.processor_class)

    @classmethod
    def from_pretrained(cls, path: str | Path, dtype: str = "float32", device: str = "cpu",
                        device_map: str | dict | None = None, name: str | None = None, **options):
        """Loads model and processor from a local folder (never downloads). `dtype` ``auto``: bfloat16/float16 on
        CUDA, float32 on the CPU; `device_map` (e.g. ``auto``) places the weights instead of `device`; `options`
        go to the family's constructor (InternVL: ``max_tiles``)."""
        from transformers import AutoModelForImageTextToText

        family_for_checkpoint(path, cls.family)  # the checkpoint is of this family, or a clear error
        target = ("cuda" if torch.cuda.is_available() else "cpu") if device_map else device
        kwargs = {"local_files_only": True, "dtype": resolve_dtype(dtype, target)}
        if device_map:
            kwargs["device_map"] = device_map
        processor = cls.load_processor(path)
        model = AutoModelForImageTextToText.from_pretrained(path, **kwargs)
        if not device_map:
            model = model.to(device)
        return cls(model, processor, name=name or Path(path).name, fingerprint=checkpoint_fingerprint(path),
                   **options)

    def save(self, path: str | Path) -> None:
        Path(path).mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(path)
        self.processor.save_pretrained(path)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # -- inputs ------------------------------------------------------------------------------------------------
    def chat_prompt(self, prompt: str) -> str:
        return image_chat_prompt(self.processor, prompt)

    def check_prompt(self, prompt: str) -> None:
        """Fails when the tokenizer turns words of the prompt into its unknown token (word-level vocabularies)."""
        tok = self.processor.tokenizer
        if tok.unk_token_id is None:
            return
        unknown = [w for w in prompt.split()
                   if tok.unk_token_id in tok(w, add_special_tokens=False)["input_ids"]]
        if unknown:
            raise ValueError(f"The model '{self.name}' does not know the words {unknown} of the prompt "
                             f"{prompt!r}{'; ' + self.unknown_words_hint if self.unknown_words_hint else ''}.")

    def encode(self, images: list[np.ndarray], prompt: str) -> dict[str, torch.Tensor]:
        """Processor inputs for `images`, each with the chat-formatted `prompt` (left-padded)."""
        self.check_prompt(prompt)
        text = self.chat_prompt(prompt)
        tok = self.processor.tokenizer
        old_side, tok.padding_side = tok.padding_side, "left"
        try:
            enc = self.processor(images=list(images), text=[text] * len(images), padding=True, return_tensors="pt",
                                 **self.images_kwargs)
        finally:
            tok.padding_side = old_side
        return {k: v.to(self.device) for k, v in enc.items()}

    def vision_token_ids(self) -> list[int]:
        tok = self.processor.tokenizer
        ids = [tok.convert_tokens_to_ids(t) for t in self.vision_tokens]
        return sorted({i for i in ids if i is not None and i != tok.unk_token_id})

    # -- generation --------------------------------------------------------------------------------------------
    def generate(self, image: np.ndarray, prompt: str, max_new_tokens: int = 32) -> Answer:
        return self.generate_batch([image], prompt, max_new_tokens=max_new_tokens)[0]

    @torch.no_grad()
    def generate_batch(self, images: list[np.ndarray], prompt: str, max_new_tokens: int = 32) -> list[Answer]:
        """Greedy answers for a batch of images sharing one prompt, with each chosen token's probability under the
        raw next-token distribution (as teacher-forced scoring computes it)."""
        return self.greedy_answers(self.encode(images, prompt), prompt, max_new_tokens)

    @torch.no_grad()
    def greedy_answers(self, enc: dict, prompt: str, max_new_tokens: int = 32) -> list[Answer]:
        """Greedy answers for the encoded batch `enc` (the processor's inputs of images or clips with `prompt`),
        vision tokens suppressed, each chosen token's probability under the raw next-token distribution."""
        tok = self.processor.tokenizer
        gen = self.model.generation_config
        eos = gen.eos_token_id if gen.eos_token_id is not None else tok.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos])
        pad = gen.pad_token_id if gen.pad_token_id is not None else tok.pad_token_id
        out = self.model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                  suppress_tokens=self.vision_token_ids() or None, output_logits=True,
                                  return_dict_in_generate=True, eos_token_id=list(eos_ids), pad_token_id=pad)
        new = out.sequences[:, enc["input_ids"].shape[1]:]
        probs = torch.stack([torch.softmax(s.float(), dim=-1) for s in out.logits], dim=1)  # (B, steps, V)
        answers = []
        for b in range(new.shape[0]):
            ids, p, finished, end = [], [], False, None
            for step, t in enumerate(new[b].tolist()):
                if t in eos_ids:
                    finished, end = True, int(t)
                    break
                ids.append(t)
                p.append(float(probs[b, step, t]))
            answers.append(Answer(
                prompt=prompt, token_ids=tuple(ids), tokens=tuple(tok.convert_ids_to_tokens(ids)),
                text=tok.decode(ids, skip_special_tokens=True), token_probs=tuple(p), finished=finished,
                end_token_id=end,
            ))
        return answers

    # -- the image the model sees ------------------------------------------------------------------------------
    def _image_processor_kwargs(self) -> dict:
        return dict(self.images_kwargs)

    def model_image(self, image: np.ndarray, resample=None) -> np.ndarray:
        """`image` as the model sees it (the image processor's resizing, cropping and padding applied, no
        normalisation), so that masks, superpixels and the processor work on the same pixels and the processor
        changes nothing more than per-pixel values. `resample` (a PIL filter) replaces the processor's own
        (``source_pixels`` reads the geometry with nearest sampling)."""
        image = np.ascontiguousarray(image)
        extra = {} if resample is None else {"resample": resample}
        out = self.processor.image_processor(images=[image], do_rescale=False, do_normalize=False,
                                             return_tensors="np", **self._image_processor_kwargs(),
                                             **extra)["pixel_values"]
        if out.shape[0] != 1 or out.ndim != 4:
            raise ValueError(f"the {self.family} image processor made {tuple(out.shape)} pixel values of one image; "
                             f"masks map exactly only onto a single image plane")
        seen = np.clip(np.rint(out[0]), 0, 255).astype(np.uint8).transpose(1, 2, 0)
        return image if seen.shape == image.shape and np.array_equal(seen, image) else np.ascontiguousarray(seen)

    def source_pixels(self, height: int, width: int) -> np.ndarray:
        """(H', W') int64: for each pixel of the model image of a `height`×`width` photo, the flat index of the
        photo pixel it is sampled from (nearest), -1 where the processor pads. Read off the family's own
        ``model_image`` with nearest resampling: an image whose pixels spell their own index (24 bits over the
        three channels) goes through it, and white and black images tell padding (equal in both) from photo."""
        from PIL import Image

        if height * width >= 2**24:
            raise ValueError(f"a {height}x{width} photo: pixel indices beyond 24 bits")
        nearest = Image.Resampling.NEAREST
        index = np.arange(height * width, dtype=np.int64).reshape(height, width)
        code = np.stack([(index >> 16) & 255, (index >> 8) & 255, index & 255], axis=-1).astype(np.uint8)
        seen = self.model_image(code, resample=nearest).astype(np.int64)
        source = (seen[..., 0] << 16) | (seen[..., 1] << 8) | seen[..., 2]
        white = self.model_image(np.full((height, width, 3), 255, np.uint8), resample=nearest)
        black = self.model_image(np.zeros((height, width, 3), np.uint8), resample=nearest)
        photo = (white != black).any(axis=-1) & (source < height * width)
        return np.where(photo, source, -1)

    def photo_grid(self, height: int, width: int):
        """The processor's geometric transform of a `height`×`width` photo (``core/geometry.py: PhotoGrid``):
        carries ground truth in photo pixels onto the model image, and model-image maps back to the photo. It
        depends on the photo's size alone, so it is read off the processor once per size (every word-level
        evaluation item asks for it)."""
        grids = self.__dict__.setdefault("_photo_grids", {})
        key = (int(height), int(width))
        if key not in grids:
            grids[key] = PhotoGrid.from_source(self.source_pixels(*key), key)
        return grids[key]

    def resolution_spec(self) -> dict:
        """What decides the model-resolution image (cache keys of superpixels)."""
        ip = self.processor.image_processor.to_dict()
        keys = ("size", "crop_size", "do_resize", "do_center_crop", "do_pad", "resample")
        return {"family": self.family, **{k: ip[k] for k in keys if ip.get(k) is not None}, **self.images_kwargs}

    def patch_index(self, height: int, width: int) -> np.ndarray:
        """For each entry of one image's ``pixel_values``, the flat index of the pixel it comes from (an image of
        pixel indices passed through the image processor with no resizing, rescaling or normalisation)."""
        if height * width >= 2**24:
            raise ValueError(f"image of {height}x{width} pixels: indices beyond float32's exact integers")
        index = np.arange(height * width, dtype=np.float32).reshape(height, width)
        out = self.processor.image_processor(
            images=[np.repeat(index[..., None], 3, axis=2)], do_resize=False, do_center_crop=False, do_pad=False,
            do_rescale=False, do_normalize=False, do_convert_rgb=False, return_tensors="np",
            **self._image_processor_kwargs())
        return np.rint(out["pixel_values"]).astype(np.int64)

    def resampled_pixel_values(self, images: np.ndarray) -> torch.Tensor:
        """(B, R, ...) pixel values of the planes after those ``patch_index`` covers, for (B, H, W, 3) masked
        images: planes the processor resamples from the whole image (InternVL's tiling thumbnail). None here."""
        raise NotImplementedError(f"the {self.family} processor made pixel values that patch_index does not cover")

    def scorer(self, image: np.ndarray, prompt: str, answer_ids, target_positions, batch_size: int = 32,
               compose: str = "pixel_values", memory_budget_mb: float | None = None) -> TeacherForcedScorer:
        """A TokenScorer for `image` (at model resolution) teacher-forcing `prompt` + `answer_ids`."""
        return TeacherForcedScorer(self, image, prompt, answer_ids, target_positions, batch_size, compose,
                                   memory_budget_mb)

    def teacher_forced(self, image: np.ndarray, prompt: str, answer_ids) -> TransformersTeacherForced:
        """A differentiable teacher-forced pass over `image` (at model resolution) + `prompt` + `answer_ids`
        (``ModelInternals``, models/base.py)."""
        return TransformersTeacherForced(self, image, prompt, answer_ids)


def teacher_forcing_inputs(enc: dict, answer_ids: list[int]) -> tuple[dict, dict]:
    """The processor's inputs of one image + prompt, split into sequence inputs with the answer appended
    (``input_ids``, ``attention_mask``, ``mm_token_type_ids``: (L + A,)) and per-image inputs to repeat per copy
    (``image_grid_thw``, ``image_sizes``); ``pixel_values`` are left out."""
    answer = torch.tensor(answer_ids, device=enc["input_ids"].device)
    sequence, per_image = {}, {}
    for key, value in enc.items():
        if key == "pixel_values":
            continue
        if value.dim() == 2 and value.shape == enc["input_ids"].shape:
            tail = answer if key == "input_ids" else torch.full_like(answer, _SEQUENCE_FILL.get(key, 0))
            sequence[key] = torch.cat([value[0], tail.to(value.dtype)])
        else:
            per_image[key] = value
    return sequence, per_image


class TeacherForcedScorer(BatchedTokenScorer):
    """Teacher-forced probabilities of the explained answer tokens for batches of masked copies of one image.

    Removed pixels are zero (black). ``compose="pixel_values"`` composes the masked ``pixel_values`` from the
    processed full and black images through ``patch_index`` (exact: the image is at model resolution, so the
    processor only rescales and normalises per pixel); ``compose="processor"`` re-runs the processor per masked
    copy (the reference path). Sequence inputs (``input_ids``, ``attention_mask``, ``mm_token_type_ids``) get the
    answer appended; per-image inputs (``image_grid_thw``, ``image_sizes``) are repeated per copy."""

    def __init__(self, adapter: TransformersAdapter, image: np.ndarray, prompt: str, answer_ids, target_positions,
                 batch_size: int = 32, compose: str = "pixel_values", memory_budget_mb: float | None = None):
        super().__init__(batch_size, memory_budget_mb)
        if compose not in ("pixel_values", "processor"):
            raise ValueError(f"compose must be 'pixel_values' or 'processor', got {compose!r}")
        answer_ids, self.target_positions = checked_targets(answer_ids, target_positions)
        self.adapter, self.image, self.prompt, self.compose = adapter, image, prompt, compose
        self.device = device = adapter.device
        self.height, self.width = image.shape[:2]
        enc = adapter.encode([image], prompt)
        self.sequence, self.per_image = teacher_forcing_inputs(enc, answer_ids)
        self.prompt_length = enc["input_ids"].shape[1]
        self.n_answer = len(answer_ids)
        self.targets = torch.tensor([answer_ids[t] for t in self.target_positions], device=device)
        self.dtype = adapter.model.dtype
        if compose == "pixel_values":
            self.pv_full = enc["pixel_values"]
            self.pv_black = adapter.encode([np.zeros_like(image)], prompt)["pixel_values"]
            self.index = torch.from_numpy(adapter.patch_index(self.height, self.width)).to(device)
            # the index covers the first planes; any others are resampled from the masked image (thumbnails)
            if self.index.shape[1:] != self.pv_full.shape[1:] or len(self.index) > len(self.pv_full):
                raise ValueError(f"pixel index {tuple(self.index.shape)} does not match the pixel values "
                                 f"{tuple(self.pv_full.shape)}; use compose='processor'")

    @property
    def plan_key(self) -> tuple:
        """Scorers of images of one size, prompt length, answer length and compose on one device share a memory
        plan (``BatchedTokenScorer.adopt_plan``)."""
        return (type(self).__name__, str(self.device), self.height, self.width, self.compose, self.prompt_length,
                self.n_answer)

    def share_patches(self) -> bool:
        """Turns on the reuse of patch embeddings across masked copies where the family supports it (Qwen-VL:
        ``QwenVLTokenScorer``); False here: every pass embeds all its patches."""
        return False

    def pixel_values(self, keep_masks: np.ndarray) -> torch.Tensor:
        """Pixel values of the masked copies, concatenated along the first axis as the processor batches them."""
        if self.compose == "processor":
            images = [self.image * m[..., None].astype(self.image.dtype) for m in keep_masks]
            return self.adapter.encode(images, self.prompt)["pixel_values"]
        n = len(self.index)
        flat = torch.from_numpy(np.ascontiguousarray(keep_masks.reshape(len(keep_masks), -1))).to(self.index.device)
        keep = flat[:, self.index]  # (B, n, ...)
        pv = torch.where(keep, self.pv_full[:n].unsqueeze(0), self.pv_black[:n].unsqueeze(0))
        if n < len(self.pv_full):
            images = self.image[None] * keep_masks[..., None].astype(self.image.dtype)
            pv = torch.cat([pv, self.adapter.resampled_pixel_values(images).to(pv.device, pv.dtype)], dim=1)
        return pv.reshape(-1, *self.pv_full.shape[1:])

    def model_inputs(self, chunk: np.ndarray) -> dict[str, torch.Tensor]:
        """The model's keyword inputs for a chunk of keep-masks (the whole prompt + answer per copy)."""
        b = len(chunk)
        inputs = {k: v.expand(b, -1) for k, v in self.sequence.items()}
        inputs.update({k: v.repeat(b, *[1] * (v.dim() - 1)) for k, v in self.per_image.items()})
        inputs["pixel_values"] = self.pixel_values(chunk).to(self.dtype)
        return inputs

    def _forward(self, chunk: np.ndarray) -> np.ndarray:
        b = len(chunk)
        logits = self.adapter.model(**self.model_inputs(chunk), logits_to_keep=self.n_answer + 1).logits
        # (b, A+1, V): index t predicts answer token t
        probs = token_softmax(logits[:, list(self.target_positions)], self.adapter.softmax_dtype, self.dtype)
        return probs.gather(-1, self.targets.expand(b, -1).unsqueeze(-1)).squeeze(-1).cpu().numpy()


# -- model internals for the gradient and activation baselines (``ModelInternals``, models/base.py) ----------------
def _extend_sequence_inputs(input_ids: torch.Tensor, kwargs: dict) -> dict:
    """Per-token inputs left at prompt length by a caller that appended answer ids to ``input_ids`` (Captum),
    extended with what answer tokens get (attention 1, token types 0)."""
    out = dict(kwargs)
    for key, fill in _SEQUENCE_FILL.items():
        value = out.get(key)
        if value is not None and value.dim() == 2 and value.shape[1] < input_ids.shape[1]:
            tail = torch.full((value.shape[0], input_ids.shape[1] - value.shape[1]), fill, dtype=value.dtype,
                              device=value.device)
            out[key] = torch.cat([value, tail], dim=1)
    return out


class TransformersCaptumModule(torch.nn.Module):
    """The model for Captum's ``LLMAttribution``: takes the processor's inputs with answer ids appended to
    ``input_ids`` and extends the per-token inputs to match."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def sequence_inputs(self, input_ids: torch.Tensor, kwargs: dict) -> dict:
        """`kwargs` with the per-token inputs matching `input_ids` (prompt + answer)."""
        return _extend_sequence_inputs(input_ids, kwargs)

    def forward(self, input_ids: torch.Tensor, **kwargs):
        kwargs = self.sequence_inputs(input_ids, kwargs)
        if "pixel_values" in kwargs:
            kwargs["pixel_values"] = kwargs["pixel_values"].to(self.model.dtype)
        return self.model(input_ids=input_ids, use_cache=False, **kwargs)


class TransformersTeacherForced:
    """``TeacherForcedPass`` (models/base.py) of a ``TransformersAdapter`` family.

    ``pixel_values`` are composed from (B, H, W, 3) float images with torch ops: each entry picks its pixel and
    channel from the processor's own layout (``patch_index`` and the same trick for channels), then the
    processor's rescale and normalisation. The image tokens are the model's ``image_token_id`` positions; their
    grid (h, w) follows the image's aspect (h·w tokens, h/w = H/W). Hidden states are read with hooks on the
    decoder layers (input of the first, output of each), before the final norm."""

    def __init__(self, adapter: TransformersAdapter, image: np.ndarray, prompt: str, answer_ids):
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
        index = torch.from_numpy(adapter.patch_index(self.height, self.width)).to(device)
        if len(index) != len(enc["pixel_values"]):
            raise ValueError(f"the {adapter.family} processor resamples part of the pixel values from the whole "
                             f"image (e.g. InternVL's tiling thumbnail), which this differentiable pass does not "
                             f"compose; load the model with one tile (InternVL: max_tiles=1)")
        self._sequence, self._per_image = teacher_forcing_inputs(enc, answer_ids)
        self.input_ids = self._sequence["input_ids"]
        self.answer_start = enc["input_ids"].shape[1]
        self.answer_ids = torch.tensor(answer_ids, device=device)
        prompt_ids = self.input_ids[:self.answer_start]
        self.image_positions = (prompt_ids == model.config.image_token_id).nonzero().squeeze(-1)
        self.image_grid = self._image_grid(enc)
        self.context_positions = self._context_positions(prompt_ids, prompt)
        ip = adapter.processor.image_processor
        channel = np.broadcast_to(np.arange(3, dtype=np.float32), (self.height, self.width, 3)).copy()
        channel = adapter.processor.image_processor(
            images=[channel], do_resize=False, do_center_crop=False, do_pad=False, do_rescale=False,
            do_normalize=False, do_convert_rgb=False, return_tensors="np",
            **adapter._image_processor_kwargs())["pixel_values"]
        channel = torch.from_numpy(np.rint(channel).astype(np.int64)).to(device)
        mean = torch.tensor(ip.image_mean if ip.do_normalize else [0.0] * 3, dtype=torch.float32, device=device)
        std = torch.tensor(ip.image_std if ip.do_normalize else [1.0] * 3, dtype=torch.float32, device=device)
        self._flat_index = index * 3 + channel  # into images.reshape(B, H*W*3)
        self._scale = (ip.rescale_factor if ip.do_rescale else 1.0) / std[channel]
        self._shift = mean[channel] / std[channel]
        self._pv_shape = tuple(index.shape[1:])
        # the pixel value that normalises to zero (x * scale - shift = 0), e.g. an IGOS++ baseline of the reference
        self.pixel_mean = mean / (ip.rescale_factor if ip.do_rescale else 1.0)
        decoder = model.get_decoder()
        self._layers, self._norm, self._lm_head = decoder.layers, decoder.norm, model.get_output_embeddings()
        self.llm_module = self._captum_module(model)

    @property
    def decoder_layers(self) -> torch.nn.ModuleList:
        """The language model's decoder layers, numbered as the checkpoint numbers them (``language_model.layers``):
        hooks on them or their submodules see the passes of ``__call__`` (LLaVA-CAM hooks one)."""
        return self._layers

    def _image_grid(self, enc: dict) -> tuple[int, int]:
        """(h, w) of the image tokens: h·w tokens with h/w = H/W (a family whose processor reports the grid, such
        as Qwen-VL's ``image_grid_thw``, reads it from `enc` instead)."""
        k = len(self.image_positions)
        h = max(1, int(round(np.sqrt(k * self.height / self.width))))
        if k == 0 or h * (k // h) != k:
            raise ValueError(f"{k} image tokens do not tile a {self.height}x{self.width} image")
        return h, k // h

    def _captum_module(self, model) -> torch.nn.Module:
        """The model for Captum's ``LLMAttribution`` (``llm_module``)."""
        return TransformersCaptumModule(model)

    def _context_positions(self, prompt_ids: torch.Tensor, prompt: str) -> torch.Tensor:
        """Positions of the prompt's text after the image (its tokens found in the sequence); else every
        non-special token between the image and the answer."""
        words = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        ids = prompt_ids.tolist()
        start = int(self.image_positions[-1]) + 1
        for at in range(start, len(ids) - len(words) + 1):
            if words and ids[at:at + len(words)] == words:
                return torch.arange(at, at + len(words), device=self.device)
        special = set(self.tokenizer.all_special_ids) | set(self.adapter.vision_token_ids())
        return torch.tensor([p for p in range(start, len(ids)) if ids[p] not in special], dtype=torch.long,
                            device=self.device)

    def pixel_values(self, images: torch.Tensor) -> torch.Tensor:
        """Pixel values of (B, H, W, 3) images in 0..255 as the processor lays them out, differentiable."""
        flat = images.reshape(len(images), -1).float()
        pv = flat[:, self._flat_index] * self._scale - self._shift  # (B, *pixel_values.shape)
        return pv.reshape(-1, *self._pv_shape)

    def llm_inputs(self, image) -> dict:
        """The processor's inputs for one model-resolution image (PIL or array) and the prompt."""
        return self.adapter.encode([np.asarray(image)], self.prompt)

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        return self._lm_head(self._norm(hidden))

    def __call__(self, images, hidden_states: bool = False):
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
        inputs = {k: v.expand(b, -1) for k, v in self._sequence.items()}
        inputs.update({k: v.repeat(b, *[1] * (v.dim() - 1)) for k, v in self._per_image.items()})
        try:
            logits = self.model(**inputs, pixel_values=self.pixel_values(images).to(self.dtype),
                                logits_to_keep=len(self.answer_ids) + 1, use_cache=False).logits[:, :-1]
        finally:
            for handle in handles:
                handle.remove()
        return TeacherForcedOutput(logits=logits, hidden_states=tuple(captured) if hidden_states else None)
