"""Video input for the Qwen-VL family (Qwen2-VL, Qwen2.5-VL, Qwen3-VL), composed without the stock video processor.

transformers' Qwen video processors need torchvision (absent on these machines), so the model inputs of a clip are
composed here from the frames with torch ops, following the stock ``patchify`` layout:

* ``read_frames(source, n_frames)`` reads a clip: a folder of images (name order), a video file (PyAV) or an
  (N, H, W, 3) uint8 array; N frames sampled evenly (indices ``floor(i · total / N)``, as the stock
  ``sample_frames``); N must be even (Qwen merges ``temporal_patch_size`` = 2 frames into one temporal patch).
* ``compose_pixel_values_videos(frames, spec)``: (B, N, H, W, 3) frames in 0..255 at the video resolution ->
  ``pixel_values_videos`` (B·t·h·w, C·T·P·P) and ``video_grid_thw`` (B, 3); rescale, normalise and patch layout
  with torch ops (differentiable with respect to the frames).
* ``QwenVideoMixin`` (mixed into ``QwenVLAdapter``): ``model_clip``, ``video_inputs``, ``generate_video``,
  ``video_scorer``.

The text side follows the processors: Qwen2-VL and Qwen2.5-VL replace the chat template's ``<|video_pad|>`` by
t·h·w / merge² video tokens; Qwen3-VL replaces ``<|vision_start|><|video_pad|><|vision_end|>`` by one
``<{time:.1f} seconds><|vision_start|>`` + h·w / merge² tokens + ``<|vision_end|>`` per temporal patch (the
format the model docstring and qwen-vl-utils use; the time is the mean of the patch's frame times). Qwen2.5-VL's
M-RoPE gets ``second_per_grid_ts`` = temporal_patch_size / sampled fps, as its processor computes it.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from eagle_pipelines.core.images import ImageError, check_size, read_image
from eagle_pipelines.models.base import Answer, checked_targets
from eagle_pipelines.models.scoring import BatchedTokenScorer

#: frame rate assumed for frames without a time base (a folder of images, an array): qwen-vl-utils' FPS default
DEFAULT_FPS = 2.0
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


# -- the clip -------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Clip:
    """N frames of a video with their time base.

    frames: (N, H, W, 3) uint8 RGB. indices: each frame's index in the source (0..total_frames-1).
    fps: the source's frame rate (``DEFAULT_FPS`` assumed for folders and arrays). source: where it was read."""

    frames: np.ndarray = field(repr=False)
    fps: float = DEFAULT_FPS
    indices: tuple[int, ...] = ()
    total_frames: int = 0
    source: str = ""

    def __post_init__(self):
        frames = np.asarray(self.frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"a clip needs (N, H, W, 3) uint8 frames, got {frames.dtype} {frames.shape}")
        object.__setattr__(self, "frames", frames)
        if not self.indices:
            object.__setattr__(self, "indices", tuple(range(len(frames))))
        if not self.total_frames:
            object.__setattr__(self, "total_frames", max(self.indices) + 1)
        if len(self.indices) != len(frames):
            raise ValueError(f"{len(self.indices)} frame indices for {len(frames)} frames")

    def __len__(self) -> int:
        return len(self.frames)

    def __array__(self, dtype=None, copy=None):
        return self.frames if dtype is None else self.frames.astype(dtype)

    @property
    def n_frames(self) -> int:
        return len(self.frames)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.frames.shape

    @property
    def timestamps(self) -> list[float]:
        """Seconds of each frame in the source."""
        return [i / self.fps for i in self.indices]

    @property
    def sampled_fps(self) -> float:
        """Frames per second of the sampled clip (transformers' ``VideoMetadata.sampled_fps``)."""
        return len(self.indices) / self.total_frames * self.fps

    def with_frames(self, frames: np.ndarray) -> Clip:
        return replace(self, frames=np.ascontiguousarray(frames))


def even_indices(total: int, n: int) -> list[int]:
    """`n` indices spread evenly over `total` frames: floor(i · total / n), as transformers' ``sample_frames``."""
    return [int(i * total // n) for i in range(n)]


def _check_n(n_frames, what: str) -> int:
    if isinstance(n_frames, bool) or not isinstance(n_frames, (int, np.integer)) or n_frames < 2 or n_frames % 2:
        raise ValueError(f"n_frames must be an even integer >= 2 (Qwen-VL merges 2 frames into one temporal patch); "
                         f"got {n_frames!r} for {what}")
    return int(n_frames)


def _enough(total: int, n_frames, what: str, unit: str = "has") -> int:
    """The frame count to sample (`n_frames`, or every frame of an even count when None), or a ValueError saying
    how many frames the clip has and what to ask for instead; a clip of 0 or 1 frames cannot be one."""
    if total < 2:
        raise ValueError(f"{what} {unit} {total} frame{'s' * (total != 1)}; a clip needs at least 2 (Qwen-VL merges "
                         f"2 frames into one temporal patch): explain a single frame as an image (eagle-explain "
                         f"without --video, or explain() on the frame)")
    n = _check_n(total - total % 2 if n_frames is None else n_frames, what)
    if n > total:
        raise ValueError(f"{what} {unit} {total} frames, fewer than n_frames={n}; ask for at most "
                         f"{total - total % 2} (an even number)")
    return n


def read_frames(source, n_frames: int | None = 8, fps: float | None = None) -> Clip:
    """A clip of `n_frames` frames sampled evenly from `source`.

    source: a folder of images (read in name order), a video file (decoded with PyAV), an (N, H, W, 3) uint8
        array or a ``Clip``. ``n_frames=None`` keeps every frame (their count must still be even).
    fps: the frame rate of a folder or array (default ``DEFAULT_FPS``); a video file's own rate is read from it.
    A folder or video with fewer frames than asked, an odd `n_frames` or frames of different sizes are a
    ValueError naming the source and the fix."""
    if isinstance(source, Clip):
        frames, rate, indices, total, name = source.frames, source.fps, list(source.indices), source.total_frames, \
            source.source
        if n_frames is None or n_frames == len(frames):
            _check_n(len(frames), "the clip")
            return source
        _check_n(n_frames, "the clip")
        if n_frames > len(frames):
            raise ValueError(f"the clip has {len(frames)} frames, fewer than n_frames={n_frames}")
        pick = even_indices(len(frames), n_frames)
        return Clip(frames[pick], rate, tuple(indices[i] for i in pick), total, name)
    if isinstance(source, np.ndarray):
        return _from_array(source, n_frames, fps, "the array")
    path = Path(source)
    if path.is_dir():
        return _from_folder(path, n_frames, fps)
    if path.is_file():
        return _from_video(path, n_frames)
    raise ValueError(f"'{source}' is neither a folder of frames nor a video file (not found)")


def _from_array(frames: np.ndarray, n_frames, fps, what: str, name: str = "") -> Clip:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"{what}: frames must be (N, H, W, 3) uint8 RGB, got {frames.dtype} {frames.shape}")
    total = len(frames)
    n = _enough(total, total if n_frames is None else n_frames, what)
    pick = even_indices(total, n)
    return Clip(np.ascontiguousarray(frames[pick]), float(fps or DEFAULT_FPS), tuple(pick), total, name)


def _from_folder(folder: Path, n_frames, fps) -> Clip:
    files = sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith("."))
    if not files:
        raise ValueError(f"'{folder}' is a directory with no image files ({', '.join(IMAGE_SUFFIXES)}); a clip's "
                         f"frames go there, named in time order")
    n = _enough(len(files), len(files) if n_frames is None else n_frames, f"'{folder}'", "holds")
    pick = even_indices(len(files), n)
    frames = [_frame(files[i]) for i in pick]
    sizes = {f.shape for f in frames}
    if len(sizes) > 1:
        raise ValueError(f"the frames in '{folder}' differ in size ({sorted(sizes)}); resize them to one size")
    return Clip(np.stack(frames), float(fps or DEFAULT_FPS), tuple(pick), len(files), str(folder))


def _frame(file: Path) -> np.ndarray:
    """One frame file by the rules of every image (``core.images``: the same decoder, the same smallest size)."""
    frame = read_image(file)
    try:
        check_size(frame)
    except ImageError as exc:
        raise ImageError(f"'{file}': {exc}") from None
    return frame


def _from_video(path: Path, n_frames) -> Clip:
    from eagle_pipelines.extras import require

    av = require("av", "reading video files")  # the `video` extra (PyAV)
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            rate = float(stream.average_rate or stream.guessed_rate or DEFAULT_FPS)
            frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
    except (av.error.FFmpegError, IndexError, ValueError) as exc:
        raise ValueError(f"'{path}' cannot be read as a video ({type(exc).__name__}: {exc})") from None
    if not frames:
        raise ValueError(f"'{path}' holds no video frames")
    total = len(frames)
    n = _enough(total, n_frames, f"'{path}'")
    pick = even_indices(total, n)
    return Clip(np.stack([frames[i] for i in pick]), rate, tuple(pick), total, str(path))


def write_video(path, frames: np.ndarray, fps: float = DEFAULT_FPS, lossless: bool = True) -> Path:
    """Writes (N, H, W, 3) uint8 frames as an H.264 video with PyAV: lossless RGB by default (``libx264rgb``,
    crf 0: ``read_frames`` gives the pixels back exactly), else ordinary yuv420p (lossy; even sides needed)."""
    from fractions import Fraction

    from eagle_pipelines.extras import require

    av = require("av", "writing video files")  # the `video` extra (PyAV)

    path = Path(path)
    frames = np.asarray(frames, dtype=np.uint8)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264rgb" if lossless else "libx264",
                                      rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "rgb24" if lossless else "yuv420p"
        stream.options = {"crf": "0", "preset": "ultrafast"} if lossless else {}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


# -- composition ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VideoSpec:
    """What the video processor does to frames already at the video resolution: rescale, normalise, patchify.
    min_pixels / max_pixels bound each frame's size (the smart resize)."""

    patch_size: int = 14
    temporal_patch_size: int = 2
    merge_size: int = 2
    image_mean: tuple[float, ...] = (0.48145466, 0.4578275, 0.40821073)
    image_std: tuple[float, ...] = (0.26862954, 0.26130258, 0.27577711)
    rescale_factor: float = 1 / 255
    do_rescale: bool = True
    do_normalize: bool = True
    min_pixels: int = 56 * 56
    max_pixels: int = 28 * 28 * 768
    timestamps: bool = False  # Qwen3-VL: frame times in the prompt

    @property
    def factor(self) -> int:
        return self.patch_size * self.merge_size


def compose_pixel_values_videos(frames, spec: VideoSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """``pixel_values_videos`` (B·t·h·w, C·T·P·P) and ``video_grid_thw`` (B, 3) of B clips.

    frames: (B, N, H, W, 3) (or one clip (N, H, W, 3)) in 0..255, any dtype, H and W multiples of patch × merge
    (``model_clip``). An N not divisible by the temporal patch repeats the last frame, as the processor does. The
    result is differentiable with respect to float frames."""
    x = torch.as_tensor(frames)
    if x.ndim == 4:
        x = x[None]
    if x.ndim != 5 or x.shape[-1] != 3:
        raise ValueError(f"frames must be (B, N, H, W, 3), got {tuple(x.shape)}")
    b, n, h, w, c = x.shape
    p, m, tp = spec.patch_size, spec.merge_size, spec.temporal_patch_size
    if h % (p * m) or w % (p * m):
        raise ValueError(f"frames of {h}x{w} are not at the video resolution (multiples of {p * m}); use model_clip")
    x = x.float()
    if spec.do_rescale:
        x = x * spec.rescale_factor
    if spec.do_normalize:
        mean = torch.tensor(spec.image_mean, dtype=x.dtype, device=x.device)
        std = torch.tensor(spec.image_std, dtype=x.dtype, device=x.device)
        x = (x - mean) / std
    x = x.permute(0, 1, 4, 2, 3)  # (B, N, C, H, W)
    if pad := -n % tp:
        x = torch.cat([x, x[:, -1:].expand(-1, pad, -1, -1, -1)], dim=1)
        n += pad
    gt, gh, gw = n // tp, h // p, w // p
    x = x.reshape(b, gt, tp, c, gh // m, m, p, gw // m, m, p)
    x = x.permute(0, 1, 4, 7, 5, 8, 3, 2, 6, 9)  # (B, t, h/m, w/m, m, m, C, T, P, P): the stock patchify
    pv = x.reshape(b * gt * gh * gw, c * tp * p * p)
    grid = torch.tensor([[gt, gh, gw]] * b, dtype=torch.long, device=pv.device)
    return pv, grid


def frame_times(clip: Clip, temporal_patch_size: int) -> list[float]:
    """Seconds of each temporal patch: the mean of its first and last frame times (Qwen3-VL's processor; a clip
    whose length is not a multiple of the patch repeats its last index)."""
    idx = list(clip.indices)
    idx += [idx[-1]] * (-len(idx) % temporal_patch_size)
    times = [i / clip.fps for i in idx]
    return [(times[i] + times[i + temporal_patch_size - 1]) / 2 for i in range(0, len(times), temporal_patch_size)]


# -- the adapter side -----------------------------------------------------------------------------------------------
class QwenVideoMixin:
    """Video methods of ``QwenVLAdapter`` (models/qwen_vl.py). Needs ``model``, ``processor``, ``device`` and
    ``chat_prompt``-like helpers of ``TransformersAdapter``; ``video_settings`` (a dict of ``VideoSpec`` fields,
    read from the checkpoint's ``video_preprocessor_config.json`` by ``from_pretrained``) overrides the image
    processor's values."""

    video_settings: dict = {}

    @property
    def video_spec(self) -> VideoSpec:
        ip = self.processor.image_processor
        model_type = getattr(self.model.config, "model_type", "")
        base = dict(patch_size=ip.patch_size, temporal_patch_size=ip.temporal_patch_size, merge_size=ip.merge_size,
                    image_mean=tuple(ip.image_mean), image_std=tuple(ip.image_std),
                    rescale_factor=float(ip.rescale_factor), do_rescale=bool(ip.do_rescale),
                    do_normalize=bool(ip.do_normalize), min_pixels=int(ip.size["shortest_edge"]),
                    max_pixels=int(ip.size["longest_edge"]), timestamps=model_type == "qwen3_vl")
        base.update({k: v for k, v in (self.__dict__.get("video_settings") or {}).items() if k in base})
        return VideoSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in base.items()})

    @staticmethod
    def read_video_settings(path) -> dict:
        """``VideoSpec`` fields from a checkpoint's ``video_preprocessor_config.json`` ({} when it has none)."""
        file = Path(path) / "video_preprocessor_config.json"
        if not file.is_file():
            return {}
        cfg = json.loads(file.read_text())
        out = {k: cfg[k] for k in ("patch_size", "temporal_patch_size", "merge_size", "image_mean", "image_std",
                                   "rescale_factor", "do_rescale", "do_normalize") if k in cfg}
        size = cfg.get("size") or {}
        for key, name in (("shortest_edge", "min_pixels"), ("longest_edge", "max_pixels")):
            if key in size:
                out[name] = int(size[key])
        for name in ("min_pixels", "max_pixels"):
            if cfg.get(name) is not None:
                out[name] = int(cfg[name])
        return out

    # -- the clip the model sees ------------------------------------------------------------------------------
    def video_size(self, n_frames: int, height: int, width: int) -> tuple[int, int]:
        """(height, width) of each frame as the video processor resizes an N-frame clip of `height` × `width`."""
        spec = self.video_spec
        if spec.timestamps:  # Qwen3-VL: the pixel bounds cover the whole clip
            from transformers.models.qwen3_vl.video_processing_qwen3_vl import smart_resize

            return tuple(smart_resize(max(n_frames, spec.temporal_patch_size), height, width,
                                      temporal_factor=spec.temporal_patch_size, factor=spec.factor,
                                      min_pixels=spec.min_pixels, max_pixels=spec.max_pixels))
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

        return tuple(smart_resize(height, width, factor=spec.factor, min_pixels=spec.min_pixels,
                                  max_pixels=spec.max_pixels))

    def model_clip(self, clip, n_frames: int | None = None) -> Clip:
        """`clip` (a ``Clip``, a folder, a video file or an (N, H, W, 3) array) with every frame resized (PIL
        bicubic) to the model's video resolution, so that masks, regions and the composition work on the same
        pixels."""
        from PIL import Image

        clip = read_frames(clip, n_frames)
        n, h, w = clip.frames.shape[:3]
        th, tw = self.video_size(n, h, w)
        if (th, tw) == (h, w):
            return clip
        frames = np.stack([np.asarray(Image.fromarray(f).resize((tw, th), Image.Resampling.BICUBIC))
                           for f in clip.frames])
        return clip.with_frames(frames)

    # -- text ---------------------------------------------------------------------------------------------------
    def video_chat_prompt(self, prompt: str) -> str:
        """The chat-formatted text of one user turn holding a video and `prompt` (one ``<|video_pad|>``)."""
        messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": prompt}]}]
        return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def _video_token(self) -> str:
        return getattr(self.processor, "video_token", None) or "<|video_pad|>"

    def expand_video_text(self, text: str, grid_thw, clip: Clip) -> str:
        """`text` with its video placeholder replaced as the family's processor replaces it (module docstring)."""
        spec = self.video_spec
        t, h, w = (int(v) for v in grid_thw)
        token = self._video_token()
        if text.count(token) != 1:
            raise ValueError(f"the chat text holds {text.count(token)} {token} placeholders, expected 1")
        if not spec.timestamps:
            return text.replace(token, token * (t * h * w // spec.merge_size ** 2))
        start = getattr(self.processor, "vision_start_token", "<|vision_start|>")
        end = getattr(self.processor, "vision_end_token", "<|vision_end|>")
        per_frame = h * w // spec.merge_size ** 2
        times = frame_times(clip, spec.temporal_patch_size)
        placeholder = "".join(f"<{times[i]:.1f} seconds>{start}{token * per_frame}{end}" for i in range(t))
        triple = f"{start}{token}{end}"
        return text.replace(triple, placeholder, 1) if triple in text else text.replace(token, placeholder, 1)

    def _check_video_tokens(self) -> int:
        vid = getattr(self.model.config, "video_token_id", None)
        tok = self.processor.tokenizer
        token_id = tok.convert_tokens_to_ids(self._video_token())
        if vid is None or token_id is None or token_id == tok.unk_token_id or token_id != vid:
            raise ValueError(f"the model '{getattr(self, 'name', '?')}' has no video token: config video_token_id "
                             f"{vid}, tokenizer {self._video_token()} -> {token_id}")
        return int(vid)

    def _accepts_seconds(self) -> bool:
        return "second_per_grid_ts" in inspect.signature(self.model.forward).parameters

    def video_inputs(self, clips, prompts, answers=None, padding_side: str | None = None,
                     frames: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The model's keyword inputs for a batch of clips (each at the video resolution: ``model_clip``).

        prompts: one string for all clips or one per clip. answers: None (generation: left padding), or one answer
        per clip (a string or token ids) appended with the end-of-turn token for a teacher-forced training batch
        (right padding, ``labels`` = -100 everywhere but the answer and its end token). frames: (B, N, H, W, 3)
        float frames to compose instead of the clips' own (differentiable; masked copies)."""
        self._check_video_tokens()
        clips = [c if isinstance(c, Clip) else read_frames(c, None) for c in clips]
        prompts = [prompts] * len(clips) if isinstance(prompts, str) else list(prompts)
        if len(prompts) != len(clips) or (answers is not None and len(answers) != len(clips)):
            raise ValueError(f"{len(clips)} clips, {len(prompts)} prompts, "
                             f"{'no' if answers is None else len(answers)} answers: give one per clip")
        shapes = {c.frames.shape for c in clips}
        spec = self.video_spec
        if frames is None:
            if len(shapes) == 1:
                frames = torch.from_numpy(np.stack([c.frames for c in clips]))
                pv, grid = compose_pixel_values_videos(frames.to(self.device), spec)
            else:
                parts = [compose_pixel_values_videos(torch.from_numpy(c.frames).to(self.device), spec) for c in clips]
                pv, grid = torch.cat([p for p, _ in parts]), torch.cat([g for _, g in parts])
        else:
            pv, grid = compose_pixel_values_videos(frames, spec)
        tok = self.processor.tokenizer
        for p in set(prompts):
            self.check_prompt(p)
        texts = [self.expand_video_text(self.video_chat_prompt(p), g.tolist(), c)
                 for p, g, c in zip(prompts, grid, clips)]
        end = None
        if answers is not None:
            end = tok.convert_tokens_to_ids("<|im_end|>")
        side = padding_side or ("left" if answers is None else "right")
        rows, prompt_lengths = [], []
        for i, text in enumerate(texts):
            ids = tok(text, add_special_tokens=False)["input_ids"]
            prompt_lengths.append(len(ids))
            if answers is not None:
                a = answers[i]
                a_ids = tok(a, add_special_tokens=False)["input_ids"] if isinstance(a, str) else [int(t) for t in a]
                ids = ids + a_ids + [end]
            rows.append(ids)
        width = max(len(r) for r in rows)
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        for i, r in enumerate(rows):
            sl = slice(width - len(r), width) if side == "left" else slice(0, len(r))
            input_ids[i, sl] = torch.tensor(r)
            attention[i, sl] = 1
            if answers is not None:
                row = torch.tensor(r)
                row[:prompt_lengths[i]] = -100
                labels[i, sl] = row
        types = torch.zeros_like(input_ids)
        types[input_ids == self.model.config.image_token_id] = 1
        types[input_ids == self._check_video_tokens()] = 2
        types[attention == 0] = 0
        enc = {"input_ids": input_ids, "attention_mask": attention, "mm_token_type_ids": types,
               "pixel_values_videos": pv, "video_grid_thw": grid}
        if self._accepts_seconds():
            enc["second_per_grid_ts"] = torch.tensor([spec.temporal_patch_size / c.sampled_fps for c in clips],
                                                     dtype=torch.float32)
        if answers is not None:
            enc["labels"] = labels
        return {k: v.to(self.device) for k, v in enc.items()}

    # -- generation and scoring -----------------------------------------------------------------------------------
    @torch.no_grad()
    def generate_video(self, clip, prompt: str, max_new_tokens: int = 32) -> Answer:
        """The greedy answer to `prompt` about `clip` (at the video resolution: ``model_clip``), with each chosen
        token's probability under the raw next-token distribution (as ``generate``)."""
        clip = read_frames(clip, None)
        enc = self.video_inputs([clip], prompt)
        enc["pixel_values_videos"] = enc["pixel_values_videos"].to(self.model.dtype)
        return self.greedy_answers(enc, prompt, max_new_tokens)[0]

    def video_scorer(self, clip, prompt: str, answer_ids, target_positions, batch_size: int = 8,
                     memory_budget_mb: float | None = None) -> VideoTokenScorer:
        """A TokenScorer over keep masks (K, N, H, W) of `clip` (at the video resolution), teacher-forcing
        `prompt` + `answer_ids`; removed pixels are black."""
        return VideoTokenScorer(self, read_frames(clip, None), prompt, answer_ids, target_positions, batch_size,
                                memory_budget_mb)


class VideoTokenScorer(BatchedTokenScorer):
    """Teacher-forced probabilities of the explained answer tokens for batches of masked copies of one clip.

    ``__call__(keep_masks)``: (K, N, H, W) bool -> (K, T) float64. Each chunk's masked clips are composed with
    ``compose_pixel_values_videos`` (removed pixels black, i.e. zero before normalisation); the text inputs are
    built once and repeated per copy. Memory planning and the out-of-memory back-off are
    ``BatchedTokenScorer``'s (the masks travel flattened as (K, N·H, W))."""

    def __init__(self, adapter, clip: Clip, prompt: str, answer_ids, target_positions, batch_size: int = 8,
                 memory_budget_mb: float | None = None):
        super().__init__(batch_size, memory_budget_mb)
        answer_ids, self.target_positions = checked_targets(answer_ids, target_positions)
        spec = adapter.video_spec
        n, h, w = clip.frames.shape[:3]
        if h % spec.factor or w % spec.factor:
            raise ValueError(f"the clip's frames are {h}x{w}, not at the video resolution; use model_clip(clip)")
        self.adapter, self.clip, self.prompt = adapter, clip, prompt
        self.device = adapter.device
        self.n_frames, self.frame_height, self.frame_width = n, h, w
        self.height, self.width = n * h, w  # masks travel as (K, N·H, W) through BatchedTokenScorer
        enc = adapter.video_inputs([clip], prompt)
        self.prompt_length = enc["input_ids"].shape[1]
        answer = torch.tensor(answer_ids, device=self.device)
        self.sequence = {"input_ids": torch.cat([enc["input_ids"][0], answer]),
                         "attention_mask": torch.cat([enc["attention_mask"][0], torch.ones_like(answer)]),
                         "mm_token_type_ids": torch.cat([enc["mm_token_type_ids"][0], torch.zeros_like(answer)])}
        self.per_clip = {k: enc[k] for k in ("video_grid_thw", "second_per_grid_ts") if k in enc}
        self.frames = torch.from_numpy(clip.frames).to(self.device).float()  # (N, H, W, 3)
        self.n_answer = len(answer_ids)
        self.targets = torch.tensor([answer_ids[t] for t in self.target_positions], device=self.device)
        self.dtype = adapter.model.dtype

    def __call__(self, keep_masks: np.ndarray) -> np.ndarray:
        keep_masks = np.asarray(keep_masks, dtype=bool)
        expected = (self.n_frames, self.frame_height, self.frame_width)
        if keep_masks.ndim != 4 or keep_masks.shape[1:] != expected:
            raise ValueError(f"masks are {keep_masks.shape[1:]}, the clip is {expected} (frames, height, width)")
        return super().__call__(keep_masks.reshape(len(keep_masks), -1, self.frame_width))

    def model_inputs(self, chunk: np.ndarray) -> dict[str, torch.Tensor]:
        """The model's keyword inputs for (b, N, H, W) (or flattened (b, N·H, W)) keep masks."""
        b = len(chunk)
        keep = torch.from_numpy(np.ascontiguousarray(chunk)).to(self.device)
        keep = keep.reshape(b, self.n_frames, self.frame_height, self.frame_width, 1)
        pv, grid = compose_pixel_values_videos(self.frames[None] * keep, self.adapter.video_spec)
        inputs = {k: v.expand(b, -1) for k, v in self.sequence.items()}
        inputs["video_grid_thw"] = grid
        if "second_per_grid_ts" in self.per_clip:
            inputs["second_per_grid_ts"] = self.per_clip["second_per_grid_ts"].repeat(b)
        inputs["pixel_values_videos"] = pv.to(self.dtype)
        return inputs

    def _forward(self, chunk: np.ndarray) -> np.ndarray:
        b = len(chunk)
        logits = self.adapter.model(**self.model_inputs(chunk), logits_to_keep=self.n_answer + 1).logits
        probs = torch.softmax(logits[:, list(self.target_positions)].float(), dim=-1)
        return probs.gather(-1, self.targets.expand(b, -1).unsqueeze(-1)).squeeze(-1).cpu().numpy()
