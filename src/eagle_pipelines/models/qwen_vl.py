"""Adapter for the Qwen-VL family (Qwen2-VL, Qwen2.5-VL, Qwen3-VL): the embedded toy model and real checkpoints
share this code.

Loading, generation, the teacher-forced scorer and the differentiable pass are ``TransformersAdapter``'s
(models/adapter.py). What is Qwen-specific lives here: the smart resize (the image the model sees has sides that
are multiples of patch × merge and a pixel count within the processor's bounds), the check that an image is at
that resolution before its patches are indexed, the image-token grid read from ``image_grid_thw``, and the
M-RoPE ``mm_token_type_ids`` rebuilt for Captum's longer sequences.
"""

from __future__ import annotations

import functools
import importlib
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np
import torch

from eagle_pipelines.models.adapter import (  # noqa: F401 - checkpoint_fingerprint: imported from here elsewhere
    TeacherForcedScorer,
    TransformersAdapter,
    TransformersCaptumModule,
    TransformersTeacherForced,
    checkpoint_fingerprint,
    token_softmax,
)
from eagle_pipelines.models.processing import ImageTextQwenVLProcessor
from eagle_pipelines.models.registry import register_family
from eagle_pipelines.models.scoring import is_out_of_memory
from eagle_pipelines.models.video import QwenVideoMixin

#: smart resize applied to its own output at most this often before an image size counts as having no fixed point
_MAX_RESIZES = 16


@register_family("qwen_vl", model_types=("qwen2_vl", "qwen2_5_vl", "qwen3_vl"))
class QwenVLAdapter(QwenVideoMixin, TransformersAdapter):
    """Wraps a Qwen-VL ``...ForConditionalGeneration`` model and its processor behind ``VisionLanguageModel``;
    video input (``model_clip``, ``video_inputs``, ``generate_video``, ``video_scorer``) is ``QwenVideoMixin``'s
    (models/video.py)."""

    processor_class = ImageTextQwenVLProcessor
    vision_tokens = ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")
    unknown_words_hint = "use its training prompts, or retrain it (kedro run --pipeline=toy_model)"

    @classmethod
    def from_pretrained(cls, path, *args, **kwargs):
        """``TransformersAdapter.from_pretrained``, plus the checkpoint's video processor settings
        (``video_preprocessor_config.json``: pixel bounds, mean/std) for the video path."""
        adapter = super().from_pretrained(path, *args, **kwargs)
        adapter.video_settings = cls.read_video_settings(path)
        return adapter

    # -- the image the model sees ------------------------------------------------------------------------------
    def _smart_resize(self, height: int, width: int) -> tuple[int, int]:
        """The size the image processor resizes a `height` × `width` image to."""
        ip = self.processor.image_processor
        module = importlib.import_module(type(ip).__module__)
        smart_resize = getattr(module, "smart_resize", None)
        if smart_resize is None:
            from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize
        return tuple(smart_resize(height, width, factor=ip.patch_size * ip.merge_size,
                                  min_pixels=ip.size["shortest_edge"], max_pixels=ip.size["longest_edge"]))

    def model_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) of the model-resolution image for a `height` × `width` image: the smart resize, applied
        again to its own output until the processor keeps the size (it is not idempotent for every size and pixel
        bounds), so the processor never resizes a ``model_image`` output. A clear error where there is none
        (e.g. ``min_pixels == max_pixels`` and a non-square image)."""
        seen = [(int(height), int(width))]
        for _ in range(_MAX_RESIZES):
            size = self._smart_resize(*seen[-1])
            if size == seen[-1]:
                return size
            if size in seen:
                break
            seen.append(size)
        ip = self.processor.image_processor
        raise ValueError(
            f"the {self.family} image processor has no size it keeps for a {height}x{width} image (its smart resize "
            f"goes {' -> '.join(f'{h}x{w}' for h, w in seen)} -> ...): min_pixels {ip.size['shortest_edge']}, "
            f"max_pixels {ip.size['longest_edge']}; a min_pixels below max_pixels (e.g. 4 merged patches) fixes it")

    def model_image(self, image: np.ndarray, resample=None) -> np.ndarray:
        """`image` resized to the resolution the model sees (the processor's smart resize), so that masks,
        superpixels and the processor work on the same pixels and the processor resizes nothing more.
        `resample`: a PIL filter instead of bicubic (``source_pixels``)."""
        from PIL import Image

        h, w = image.shape[:2]
        th, tw = self.model_size(h, w)
        if (th, tw) == (h, w):
            return np.ascontiguousarray(image)
        return np.asarray(Image.fromarray(image).resize(
            (tw, th), Image.Resampling.BICUBIC if resample is None else resample))

    def resolution_spec(self) -> dict:
        """What decides the model-resolution image (cache keys of superpixels)."""
        ip = self.processor.image_processor
        return {"min_pixels": ip.size["shortest_edge"], "max_pixels": ip.size["longest_edge"],
                "factor": ip.patch_size * ip.merge_size}

    def patch_index(self, height: int, width: int) -> np.ndarray:
        """For each entry of ``pixel_values`` (N, C·T·p·p), the flat index of the pixel it comes from (derived
        from the image processor itself, so it follows its patch layout, temporal copies included). The image
        must be at model resolution (``model_image``), or the processor's pixel values would be of another size."""
        size = self._smart_resize(height, width)
        if size != (height, width):
            raise ValueError(f"a {height}x{width} image is not at the model's resolution (the processor resizes it "
                             f"to {size[0]}x{size[1]}); pass model_image(image)")
        return super().patch_index(height, width)

    # -- scoring and internals: TransformersAdapter's, with Qwen's grid and Captum module ----------------------
    def scorer(self, image: np.ndarray, prompt: str, answer_ids, target_positions, batch_size: int = 32,
               compose: str = "pixel_values", memory_budget_mb: float | None = None) -> QwenVLTokenScorer:
        """A TokenScorer for `image` (at model resolution) teacher-forcing `prompt` + `answer_ids`."""
        return QwenVLTokenScorer(self, image, prompt, answer_ids, target_positions, batch_size, compose,
                                 memory_budget_mb)

    def teacher_forced(self, image: np.ndarray, prompt: str, answer_ids) -> QwenVLTeacherForced:
        """A differentiable teacher-forced pass over `image` (at model resolution) + `prompt` + `answer_ids`."""
        return QwenVLTeacherForced(self, image, prompt, answer_ids)


#: the vision tower's attention while a scorer with shared patches runs: sdpa over all its images at once
PACKED_SDPA = "flash_packed_sdpa"  # "flash" in the name: the vision attention hands over its image boundaries


def packed_sdpa(module, query, key, value, attention_mask=None, cu_seq_lens_q=None, **kwargs):
    """transformers' own sdpa attention over the vision tower's images at once when they have one length (one
    call of (images, heads, length, dim) instead of one call per image), else image by image as its sdpa path
    does; the same bits either way (tests/models/test_patch_reuse.py)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    options = {k: kwargs[k] for k in ("dropout", "scaling") if k in kwargs}
    lengths = (cu_seq_lens_q[1:] - cu_seq_lens_q[:-1]).tolist()
    heads, dim = query.shape[1], query.shape[3]
    if len(set(lengths)) == 1:
        b, n = len(lengths), lengths[0]
        q, k, v = (t[0].reshape(t.shape[1], b, n, dim).transpose(0, 1) for t in (query, key, value))
        out, _ = sdpa_attention_forward(module, q, k, v, None, is_causal=False, **options)
        return out.reshape(1, b * n, heads, dim), None
    parts = [sdpa_attention_forward(module, q, k, v, None, is_causal=False, **options)[0]
             for q, k, v in zip(*(torch.split(t, lengths, dim=2) for t in (query, key, value)))]
    return torch.cat(parts, dim=1), None


#: thread id -> the patch embeddings the pass running on that thread hands the model (``_stand_in``)
_STAND_INS: dict[int, torch.Tensor] = {}


def _stand_in(module, args, output):
    """Forward hook of the vision tower's patch embedding: the assembled embeddings of the pass running on this
    thread (a ``QwenVLTokenScorer`` with shared patches), else the module's own output."""
    return _STAND_INS.get(threading.get_ident())


def _install_stand_in(embed) -> None:
    """Puts ``_stand_in`` on `embed` once (one hook for every scorer and thread: registering one per pass would
    change the module's hooks while a pass on another thread runs them)."""
    if not getattr(embed, "_eagle_stand_in", False):
        embed.register_forward_hook(_stand_in)
        embed._eagle_stand_in = True


class QwenVLTokenScorer(TeacherForcedScorer):
    """``TeacherForcedScorer`` of the Qwen-VL family: ``input_ids``, ``attention_mask`` and ``mm_token_type_ids``
    get the answer appended, ``image_grid_thw`` is repeated per copy, and masked ``pixel_values`` (N, C·T·p·p) are
    composed per pixel (``compose="pixel_values"``) or made by the processor (``compose="processor"``).

    ``share_patches()`` (the evaluation and ``explain()`` turn it on; ``compose="pixel_values"`` only): the vision
    tower's patch embedding is a function of each patch alone, so a patch the mask keeps whole is the full image's
    embedding and one it removes whole is the black image's, both computed once; only the patches a mask cuts are
    composed and embedded, each distinct cut once per pass (a forward hook on ``visual.patch_embed`` hands the
    model the assembled embeddings). The M-RoPE position ids, the same for every copy, are computed once too, and
    the vision tower's geometry once per image grid (``vision_geometry``). The probabilities are the same bits:
    the patch embedding gives a patch the same values in any batch (tests/models/test_patch_reuse.py)."""

    _reuse = False

    def share_patches(self) -> bool:
        if self._reuse:
            return True
        visual = getattr(getattr(self.adapter.model, "model", self.adapter.model), "visual", None)
        embed = getattr(visual, "patch_embed", None)
        if self.compose != "pixel_values" or embed is None or len(self.index) != len(self.pv_full):
            return False
        pixels = [np.unique(row) for row in self.index.cpu().numpy()]
        if len({len(p) for p in pixels}) != 1:
            return False
        with torch.no_grad():
            self._embed_full = embed(self.pv_full.to(self.dtype))
            self._embed_black = embed(self.pv_black.to(self.dtype))
            self._position_ids = self._positions()
        self._patch_embed = embed
        _install_stand_in(embed)
        self._vision_config = _packed_config(visual)
        self._visual = visual
        # made now, not inside the memory plan's probe passes: what they count must not depend on whether an
        # earlier scorer of this grid made it (a Ray worker's first item against a run's later ones)
        self._vision_geometry(1)
        self._pixels_np = np.stack(pixels)  # (n, pixels of one patch)
        self._index_np = self.index.cpu().numpy()
        # each entry of a patch's pixel values: the slot of its pixel among the patch's pixels (``_pixels_np``)
        self._slot = torch.from_numpy(np.stack([np.searchsorted(p, row) for p, row in zip(pixels, self._index_np)])
                                      ).to(self.device)
        self._embed_table = torch.cat([self._embed_black, self._embed_full])
        self._reuse = True
        return True

    def _positions(self) -> torch.Tensor | None:
        """The M-RoPE position ids of one copy (the model's own ``compute_3d_position_ids``), or None where this
        transformers has no such method (the model then computes them per pass)."""
        inner = getattr(self.adapter.model, "model", None)
        compute = getattr(inner, "compute_3d_position_ids", None)
        if compute is None:
            return None
        one = {k: v.unsqueeze(0) for k, v in self.sequence.items()}
        try:
            return compute(input_ids=one["input_ids"], image_grid_thw=self.per_image.get("image_grid_thw"),
                           video_grid_thw=None, inputs_embeds=None, attention_mask=one.get("attention_mask"),
                           past_key_values=None, mm_token_type_ids=one.get("mm_token_type_ids"))
        except TypeError:  # another signature: let the model compute them
            return None

    def _vision_geometry(self, b: int) -> dict:
        """The vision tower's position ids, window order and sequence bounds for `b` copies of the image (see
        ``vision_geometry``), handed to the model as its precomputed ``image_*`` inputs."""
        visual = self._visual
        if not hasattr(visual, "window_size"):
            return {}
        grid = tuple(int(v) for v in self.per_image["image_grid_thw"][0])
        return vision_geometry(grid, b, visual.spatial_merge_size, visual.window_size, visual.patch_size,
                               str(self.device))

    def _patch_embeddings(self, chunk: np.ndarray) -> torch.Tensor:
        """(b·n, D) patch embeddings of the masked copies: whole patches from the full or black image's, the
        patches a mask cuts composed and embedded here, each distinct cut (same patch, same pixels kept) once."""
        b, n = len(chunk), len(self._index_np)
        flat = np.ascontiguousarray(chunk.reshape(b, -1))
        kept = flat[:, self._pixels_np]  # (b, n, pixels of a patch)
        whole = kept.all(-1)
        cut = np.flatnonzero(kept.any(-1) & ~whole)
        rows = torch.from_numpy((whole * n + np.arange(n)).reshape(-1)).to(self.device)
        out = self._embed_table.index_select(0, rows)  # row p: the black image's patch p, row n + p: the full's
        if len(cut):
            patch = cut % n
            bits = kept.reshape(b * n, -1)[cut]  # (cut, pixels of a patch)
            key = np.concatenate([patch.astype(">u4").view(np.uint8).reshape(-1, 4), np.packbits(bits, axis=1)],
                                 axis=1)
            _, first, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
            distinct = torch.from_numpy(patch[first]).to(self.device)
            keep = torch.gather(torch.from_numpy(bits[first]).to(self.device), 1, self._slot[distinct])
            pv = torch.where(keep, self.pv_full[distinct], self.pv_black[distinct]).to(self.dtype)
            out[torch.from_numpy(cut).to(self.device)] = self._patch_embed(pv)[
                torch.from_numpy(inverse.reshape(-1)).to(self.device)]
        return out

    #: on a CPU with shared patches, a call of at least this many masks runs as two halves at once, each on its
    #: own thread with one torch thread (``__call__``): the evaluation's calls (~205 masks a target); the search's
    #: (at most 2n) ran slower so (halves of 16 masks: 0.915 against 0.865 s for 3 searches)
    parallel_min = 128

    def __call__(self, keep_masks: np.ndarray) -> np.ndarray:
        """``BatchedTokenScorer.__call__``; on a CPU with two or more torch threads and shared patches, a call of
        ``parallel_min`` masks or more is scored as two halves at once, each on its own thread with one torch
        thread, in chunks of half the planned batch (the same peak memory as one batch). The small operations of
        the vision tower and the language model (norms, rotary embeddings, activations) leave the second torch
        thread idle; two halves keep both cores busy. The same bits: each mask's probabilities do not depend on
        its batch or the torch thread count (tests/models/test_patch_reuse.py). Out of memory falls back to the
        one-thread-pool call and its halving."""
        keep_masks = np.asarray(keep_masks, dtype=bool)
        threads = torch.get_num_threads()
        if (not self._reuse or self.device.type != "cpu" or threads < 2 or len(keep_masks) < self.parallel_min
                or keep_masks.ndim != 3 or keep_masks.shape[1:] != (self.height, self.width)):
            return super().__call__(keep_masks)
        if not self.planned:
            with torch.no_grad():
                self.plan_batch(keep_masks[0])
        size = max(1, self.batch_size // 2)
        halves = np.array_split(keep_masks, 2)

        def score(masks: np.ndarray) -> np.ndarray:
            torch.set_num_threads(1)
            with torch.no_grad():
                return np.concatenate([np.asarray(self._forward(masks[lo:lo + size]))
                                       for lo in range(0, len(masks), size)])

        pool = ThreadPoolExecutor(2, thread_name_prefix="eagle-score")
        try:  # the packed attention set for both threads at once (their passes then find it set)
            with _packed_attention(self._vision_config), pool:
                parts = list(pool.map(score, halves))
        except (torch.OutOfMemoryError, RuntimeError) as exc:
            if not is_out_of_memory(exc):
                raise
            parts = None
        finally:
            torch.set_num_threads(threads)
        if parts is None:
            return super().__call__(keep_masks)
        return np.concatenate(parts).astype(np.float64)

    def _forward(self, chunk: np.ndarray) -> np.ndarray:
        if not self._reuse:
            return super()._forward(chunk)
        b = len(chunk)
        embeds = self._patch_embeddings(chunk)
        inputs = {k: v.expand(b, -1) for k, v in self.sequence.items()}
        inputs.update({k: v.repeat(b, *[1] * (v.dim() - 1)) for k, v in self.per_image.items()})
        inputs["pixel_values"] = self.pv_black[:1].to(self.dtype)  # embedded by the hook's stand-in: one row
        if self._position_ids is not None:
            inputs["position_ids"] = self._position_ids.expand(-1, b, -1)
        inputs.update(self._vision_geometry(b))
        caller = threading.get_ident()
        _STAND_INS[caller] = embeds
        try:
            with _packed_attention(self._vision_config):
                logits = self.adapter.model(**inputs, logits_to_keep=self.n_answer + 1).logits
        finally:
            _STAND_INS.pop(caller, None)
        probs = token_softmax(logits[:, list(self.target_positions)], self.adapter.softmax_dtype, self.dtype)
        return probs.gather(-1, self.targets.expand(b, -1).unsqueeze(-1)).squeeze(-1).cpu().numpy()


class QwenVLCaptumModule(TransformersCaptumModule):
    """The Qwen-VL model for Captum's ``LLMAttribution``: Captum appends the answer ids to ``input_ids`` but
    leaves the processor's ``mm_token_type_ids`` at prompt length, so they are rebuilt from ``input_ids`` here
    (dropping them silently switches the model to 1-D positions and changes its outputs)."""

    def __init__(self, model):
        super().__init__(model)
        self.image_token_id = model.config.image_token_id
        self.video_token_id = getattr(model.config, "video_token_id", None)

    def sequence_inputs(self, input_ids: torch.Tensor, kwargs: dict) -> dict:
        kwargs = {k: v for k, v in kwargs.items() if k != "mm_token_type_ids"}
        types = torch.zeros_like(input_ids)
        types[input_ids == self.image_token_id] = 1
        if self.video_token_id is not None:
            types[input_ids == self.video_token_id] = 2
        return {**super().sequence_inputs(input_ids, kwargs), "mm_token_type_ids": types}


class QwenVLTeacherForced(TransformersTeacherForced):
    """``TeacherForcedPass`` (models/base.py) of the Qwen-VL family: ``TransformersTeacherForced`` with the image
    tokens' grid read from ``image_grid_thw`` (after the merge) and ``QwenVLCaptumModule`` for Captum."""

    def _image_grid(self, enc: dict) -> tuple[int, int]:
        grid_thw = enc["image_grid_thw"]
        merge = self.adapter.processor.image_processor.merge_size
        t, gh, gw = (int(v) for v in grid_thw[0])
        grid = (gh // merge, gw // merge)
        if t != 1 or grid[0] * grid[1] != len(self.image_positions):
            raise ValueError(f"{len(self.image_positions)} image tokens do not tile the grid {grid_thw.tolist()}")
        return grid

    def _captum_module(self, model) -> torch.nn.Module:
        return QwenVLCaptumModule(model)


def vision_geometry(grid: tuple[int, int, int], b: int, merge: int, window: int, patch: int, device: str) -> dict:
    """The Qwen2.5-VL vision tower's position ids, window order and sequence bounds for `b` images of one `grid`
    (t, h, w), as transformers' own helpers (``transformers.vision_utils``) make them: the leading `b` images'
    part of those made once per grid for a power of two of images at least `b` (each image's entries follow the
    ones before it, so a prefix is the helpers' result for fewer images; tests/models/test_patch_reuse.py). The
    tower would otherwise loop over the b images for them in each pass. Empty where this transformers has no
    such helpers. The model only reads them."""
    made = _geometry_for(grid, max(64, 1 << (b - 1).bit_length()), merge, window, patch, device)
    if not made:
        return {}
    t, h, w = grid
    return {"image_position_ids": made["image_position_ids"][:b * t * h * w],
            "image_cu_seqlens": made["image_cu_seqlens"][:b * t + 1],
            "image_window_index": made["image_window_index"][:b * t * (h // merge) * (w // merge)],
            "image_cu_window_seqlens": made["image_cu_window_seqlens"][:b * made["windows"] + 1]}


@functools.lru_cache(maxsize=16)
def _geometry_for(grid: tuple[int, int, int], images: int, merge: int, window: int, patch: int,
                  device: str) -> dict:
    """``vision_geometry`` for `images` images by transformers' helpers, with ``windows``: windows per image."""
    try:
        from transformers import vision_utils
    except ImportError:
        return {}
    grid_thw = torch.tensor([grid] * images, device=device)
    window_index, cu_window_seqlens = vision_utils.get_vision_window_index(
        grid_thw, spatial_merge_size=merge, window_size=window, patch_size=patch)
    windows, left = divmod(len(cu_window_seqlens) - 1, images)
    if left:  # not one count per image: no prefix to take
        return {}
    return {"image_position_ids": vision_utils.get_vision_position_ids(grid_thw, merge),
            "image_cu_seqlens": vision_utils.get_vision_cu_seqlens(grid_thw),
            "image_window_index": window_index, "image_cu_window_seqlens": cu_window_seqlens, "windows": windows}


@contextmanager
def _packed_attention(config):
    """The vision tower's attention as ``packed_sdpa`` inside the block where `config` (``_packed_config``) has
    transformers' sdpa; left as it is where it is set already (an enclosing block) or `config` is None."""
    packed = config is not None and config._attn_implementation == "sdpa"
    if packed:
        config._attn_implementation = PACKED_SDPA
    try:
        yield
    finally:
        if packed:
            config._attn_implementation = "sdpa"


def _packed_config(visual) -> object | None:
    """The vision tower's config where its attention takes ``packed_sdpa`` (registered once), else None."""
    config = getattr(visual, "config", None)
    if config is None or getattr(config, "_attn_implementation", None) != "sdpa":
        return None
    try:
        from transformers import AttentionInterface
    except ImportError:
        return None
    AttentionInterface.register(PACKED_SDPA, packed_sdpa)
    return config
