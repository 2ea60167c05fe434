"""Seeded clips of the shapes world with a known cause, annotated in the YouTube-VIS layout.

A clip is ``frames`` frames of ``image_size`` pixels (the shapes benchmark's colours, shapes, radii and
background, ``ShapesParams``). Static distractor shapes sit at the same place in every frame; in exactly one frame
(the *event frame*, drawn at random) one more shape appears, of a category no distractor has, at a random free
place. The question is ``clips.prompt`` ("What appears in the video?") and the answer names the event object
("a red circle"), so what made the model say it is known exactly: that object's pixels in that frame, and nothing
in any other frame.

Annotations follow YouTube-VIS (``videos`` with per-frame ``file_names``; ``annotations`` with one
``segmentations`` entry per frame, a COCO RLE or ``None`` where the object is absent, and ``bboxes`` / ``areas``
alike), plus each clip's question, answer and event frame in its ``videos`` record. The frames of clip ``c`` are
``<c>/frame_00.png`` ... under ``images/`` (a folder of frames per clip, what ``explain()`` reads).

Determinism: clip ``i`` of split ``s`` is drawn from ``numpy.random.default_rng([seed, CLIP_SPLIT_CODES[s], i])``
(codes 6-8, apart from the image splits' 1-5), so the same seed gives the same bytes and a larger split keeps the
clips of a smaller one. Every frame draws its own background and object noise, as a camera would.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from pydantic import Field, PositiveInt, model_validator

from eagle_pipelines.core.parity import StrictModel
from eagle_pipelines.data.params import ShapesParams
from eagle_pipelines.data.shapes import DrawnObject, category_names, shape_mask
from eagle_pipelines.errors import UserError
from eagle_pipelines.extras import LazyModule

#: pycocotools (the `pipelines` extra), imported on first use: the parameter models import without it
mask_utils = LazyModule("pycocotools.mask", "COCO masks (pycocotools)")

CLIP_SPLIT_CODES = {"train": 6, "val": 7, "eval": 8}


class ClipSplitSizes(StrictModel):
    train: PositiveInt = Field(default=50_000, description="clips the training draws from (made on the fly)")
    val: PositiveInt = Field(default=100, description="held-out clips: the video model's quality figures")
    eval: PositiveInt = Field(default=24, description="the clips eagle_video explains")


class ClipParams(StrictModel):
    """The embedded clips (``params:clips``); colours, shapes, radii and background come from ``params:shapes``."""

    frames: PositiveInt = Field(default=4, description="frames per clip (even)")
    distractors: tuple[int, int] = Field(default=(1, 2), description="static shapes in every frame (inclusive)")
    event: Literal["appear"] = "appear"
    prompt: str = "What appears in the video?"
    splits: ClipSplitSizes = ClipSplitSizes()

    @model_validator(mode="after")
    def _consistent(self) -> ClipParams:
        lo, hi = self.distractors
        if lo < 0 or lo > hi:
            raise ValueError(f"distractors {list(self.distractors)}: give 0 <= minimum <= maximum")
        if self.frames < 2 or self.frames % 2:
            raise ValueError(f"frames must be even and at least 2 (got {self.frames}): an event happens in one "
                             f"frame of several, and Qwen-VL pairs frames into temporal patches")
        return self


@dataclass(frozen=True)
class ShapesClip:
    """One generated clip: frames (N, H, W, 3) uint8, the event object (its mask in the event frame) and the
    static distractors (the same mask in every frame)."""

    frames: np.ndarray = field(repr=False)
    event_frame: int
    event: DrawnObject
    distractors: tuple[DrawnObject, ...]

    @property
    def answer(self) -> str:
        return f"a {self.event.name}"

    @property
    def event_masks(self) -> np.ndarray:
        """(N, H, W) bool: the event object's pixels in its frame, nothing in the others."""
        masks = np.zeros(self.frames.shape[:3], dtype=bool)
        masks[self.event_frame] = self.event.mask
        return masks


def _place(rng: np.random.Generator, shapes: ShapesParams, n: int) -> list[tuple[tuple[float, float], int]] | None:
    """n centres and radii whose bounding circles keep ``min_gap`` pixels apart (rejection sampling)."""
    size, (rmin, rmax) = shapes.image_size, shapes.radius
    placed: list[tuple[tuple[float, float], int]] = []
    for _ in range(300):
        if len(placed) == n:
            break
        r = int(rng.integers(rmin, rmax + 1))
        centre = (float(rng.uniform(r + 1, size - r - 1)), float(rng.uniform(r + 1, size - r - 1)))
        if all(np.hypot(centre[0] - pr, centre[1] - pc) >= (r + q) * 1.42 + shapes.min_gap
               for (pr, pc), q in placed):
            placed.append((centre, r))
    return placed if len(placed) == n else None


def generate_clip(shapes: ShapesParams, clips: ClipParams, split: str, index: int) -> ShapesClip:
    """Draws clip `index` of `split` (``train``, ``val`` or ``eval``)."""
    if split not in CLIP_SPLIT_CODES:
        raise ValueError(f"unknown clip split {split!r}; known: {sorted(CLIP_SPLIT_CODES)}")
    rng = np.random.default_rng([shapes.seed, CLIP_SPLIT_CODES[split], index])
    cats = [(c, s) for c in shapes.colours for s in shapes.shapes]
    lo, hi = clips.distractors
    count = min(int(rng.integers(lo, hi + 1)), len(cats) - 1)
    chosen = [cats[i] for i in rng.choice(len(cats), size=count + 1, replace=False)]  # distractors + the event
    while (placement := _place(rng, shapes, count + 1)) is None:
        pass
    objects = [DrawnObject(c, s, centre, r, shape_mask(s, centre, r, shapes.image_size))
               for (c, s), (centre, r) in zip(chosen, placement)]
    distractors, event = tuple(objects[:count]), objects[count]
    event_frame = int(rng.integers(clips.frames))
    size, (blo, bhi) = shapes.image_size, shapes.background_range
    frames = np.empty((clips.frames, size, size, 3), dtype=np.uint8)
    for f in range(clips.frames):
        frame = rng.integers(blo, bhi + 1, size=(size, size, 3)).astype(np.int16)
        for obj in (*distractors, event) if f == event_frame else distractors:
            noise = rng.integers(-shapes.object_noise, shapes.object_noise + 1, size=(int(obj.mask.sum()), 3))
            frame[obj.mask] = np.asarray(shapes.colours[obj.colour], dtype=np.int16) + noise
        frames[f] = np.clip(frame, 0, 255).astype(np.uint8)
    return ShapesClip(frames, event_frame, event, distractors)


def clip_name(split: str, index: int) -> str:
    return f"{split}_{index:06d}"


def frame_file(clip: str, frame: int) -> str:
    return f"{clip}/frame_{frame:02d}.png"


def _rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _track(ann_id: int, clip_id: int, cat_id: int, masks: list[np.ndarray | None]) -> dict:
    segs, boxes, areas = [], [], []
    for mask in masks:
        if mask is None:
            segs.append(None), boxes.append(None), areas.append(None)
            continue
        rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        segs.append(_rle(mask))
        boxes.append([float(v) for v in mask_utils.toBbox(rle)])
        areas.append(float(mask_utils.area(rle)))
    return {"id": ann_id, "video_id": clip_id, "category_id": cat_id, "segmentations": segs, "bboxes": boxes,
            "areas": areas, "iscrowd": 0}


def generate_clip_split(shapes: ShapesParams, clips: ClipParams, split: str,
                        indices=None) -> tuple[dict[str, np.ndarray], dict]:
    """Clips `indices` of `split` (all of the split's size by default) as frames keyed by their file stem
    (``<clip>/frame_00``) and one YouTube-VIS annotation dict."""
    if indices is None:
        indices = range(getattr(clips.splits, split))
    names = category_names(shapes)
    cat_id = {name: i + 1 for i, name in enumerate(names)}
    frames_out, videos, annotations = {}, [], []
    for i in indices:
        clip = generate_clip(shapes, clips, split, i)
        name = clip_name(split, i)
        clip_id = CLIP_SPLIT_CODES[split] * 1_000_000 + i
        files = [frame_file(name, f) for f in range(clips.frames)]
        for f, file in enumerate(files):
            frames_out[file.removesuffix(".png")] = clip.frames[f]
        videos.append({"id": clip_id, "name": name, "file_names": files, "length": clips.frames,
                       "height": shapes.image_size, "width": shapes.image_size, "prompt": clips.prompt,
                       "answer": clip.answer, "event": {"kind": clips.event, "frame": clip.event_frame,
                                                        "category": clip.event.name}})
        ann_id = len(annotations) + 1
        annotations.append(_track(ann_id, clip_id, cat_id[clip.event.name],
                                  [clip.event.mask if f == clip.event_frame else None for f in range(clips.frames)]))
        for obj in clip.distractors:
            annotations.append(_track(len(annotations) + 1, clip_id, cat_id[obj.name], [obj.mask] * clips.frames))
    info = {"description": f"eagle_pipelines embedded clips, split {split}", "seed": shapes.seed, "split": split,
            "frames": clips.frames, "event": clips.event, "background": shapes.background,
            "format": "YouTube-VIS (videos, per-frame segmentations; None where absent)"}
    categories = [{"id": cat_id[n], "name": n, "supercategory": n.split(" ")[1]} for n in names]
    return frames_out, {"info": info, "videos": videos, "annotations": annotations, "categories": categories}


# --- reading the annotations back ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClipRecord:
    """One clip of an annotation dict: its frames' files, question, answer and the event's ground truth."""

    clip_id: int
    name: str
    file_names: tuple[str, ...]
    prompt: str
    answer: str
    event_frame: int
    event_category: str
    height: int
    width: int
    event_track: dict = field(repr=False)

    def event_masks(self) -> np.ndarray:
        """(N, H, W) bool: the event object's pixels in the frames where it is (decoded RLE), zero elsewhere."""
        masks = np.zeros((len(self.file_names), self.height, self.width), dtype=bool)
        for f, seg in enumerate(self.event_track["segmentations"]):
            if seg is not None:
                masks[f] = mask_utils.decode({"size": seg["size"], "counts": seg["counts"].encode("ascii")}) > 0
        return masks


class ClipFormatError(UserError, ValueError):
    """The clip annotations are not what this reader expects; the message names the clip and the field."""


def clip_records(annotations: dict, source: str = "clips") -> list[ClipRecord]:
    """The clips of a YouTube-VIS annotation dict written by ``generate_clip_split``, in id order."""
    try:
        cats = {c["id"]: c["name"] for c in annotations["categories"]}
        tracks: dict[int, list[dict]] = {}
        for ann in annotations["annotations"]:
            tracks.setdefault(int(ann["video_id"]), []).append(ann)
        records = []
        for video in sorted(annotations["videos"], key=lambda v: v["id"]):
            event = video["event"]
            track = next((t for t in tracks.get(int(video["id"]), [])
                          if cats[t["category_id"]] == event["category"]
                          and t["segmentations"][int(event["frame"])] is not None), None)
            if track is None:
                raise ClipFormatError(f"{source}: clip {video.get('name', video['id'])} has no track of its event "
                                      f"object {event['category']!r} in frame {event['frame']}")
            records.append(ClipRecord(int(video["id"]), video["name"], tuple(video["file_names"]), video["prompt"],
                                      video["answer"], int(event["frame"]), event["category"], int(video["height"]),
                                      int(video["width"]), track))
        return records
    except (KeyError, TypeError, IndexError) as exc:
        raise ClipFormatError(f"{source}: not a clip annotation file written by the clip generator (missing or "
                              f"wrong field {exc})") from None
