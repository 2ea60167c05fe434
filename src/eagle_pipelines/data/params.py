"""Validated parameters of the embedded shapes benchmark and of a COCO sample (pydantic), and the words an answer
may use for a COCO category (``category_words``).

A wrong key or value fails when the run starts (see ``eagle_pipelines.hooks``) with the parameter's dotted name.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, field_validator, model_validator

from eagle_pipelines.core.parity import ParitySwitches, StrictModel
from eagle_pipelines.core.search import Count

SHAPES = ("circle", "square", "triangle")
BACKGROUNDS = {"dark": (0, 25), "light": (150, 255)}


class SplitSizes(StrictModel):
    train: PositiveInt = 6000
    val: PositiveInt = 200
    eval: PositiveInt = 100


class Cooccurrence(StrictModel):
    """Training-split bias: every training image that shows `anchor` (X) also shows `companion` (Y) with
    probability `rate`, and X never appears alone. The val and eval splits are unbiased."""

    anchor: str = Field(description="'<colour> <shape>' of object X")
    companion: str = Field(description="'<colour> <shape>' of object Y")
    rate: float = Field(ge=0.0, le=1.0)

    @property
    def anchor_pair(self) -> tuple[str, str]:
        colour, shape = self.anchor.split(" ")
        return colour, shape

    @property
    def companion_pair(self) -> tuple[str, str]:
        colour, shape = self.companion.split(" ")
        return colour, shape


class ShapesParams(StrictModel):
    seed: int = 0
    image_size: PositiveInt = 112
    colours: dict[str, tuple[int, int, int]]
    shapes: tuple[Literal["circle", "square", "triangle"], ...] = SHAPES
    objects_per_image: tuple[PositiveInt, PositiveInt] = (1, 3)
    radius: tuple[PositiveInt, PositiveInt] = (14, 20)
    min_gap: int = Field(default=4, ge=0)
    min_dx: int = Field(default=10, ge=0)
    background: Literal["dark", "light"] = "dark"
    object_noise: int = Field(default=12, ge=0, le=64)
    splits: SplitSizes = SplitSizes()
    cooccurrence: Cooccurrence | None = None

    @field_validator("colours")
    @classmethod
    def _colours(cls, value: dict[str, tuple[int, int, int]]) -> dict[str, tuple[int, int, int]]:
        if not value:
            raise ValueError("give at least one colour name with its RGB value")
        for name, rgb in value.items():
            if not name.isalpha() or not name.islower():
                raise ValueError(f"colour name {name!r} must be one lower-case word")
            if any(not 0 <= v <= 255 for v in rgb):
                raise ValueError(f"colour {name!r} has RGB {list(rgb)} outside 0..255")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ShapesParams:
        lo, hi = self.objects_per_image
        if lo > hi:
            raise ValueError(f"objects_per_image {list(self.objects_per_image)}: the minimum exceeds the maximum")
        if hi > len(self.colours) * len(self.shapes):
            raise ValueError("objects_per_image asks for more objects than there are (colour, shape) categories")
        rmin, rmax = self.radius
        if rmin > rmax or 2 * rmax + 2 > self.image_size:
            raise ValueError(f"radius {list(self.radius)} must be ordered and fit the {self.image_size}px image")
        if len(set(self.shapes)) != len(self.shapes):
            raise ValueError(f"shapes {list(self.shapes)} repeat a shape")
        if self.cooccurrence is not None:
            for key in ("anchor", "companion"):
                value = getattr(self.cooccurrence, key)
                parts = value.split(" ")
                if len(parts) != 2 or parts[0] not in self.colours or parts[1] not in self.shapes:
                    raise ValueError(
                        f"cooccurrence.{key} = {value!r} is not '<colour> <shape>' with a colour of "
                        f"{sorted(self.colours)} and a shape of {list(self.shapes)}"
                    )
            if self.cooccurrence.anchor == self.cooccurrence.companion:
                raise ValueError("cooccurrence.anchor and cooccurrence.companion must differ")
            if hi < 2:
                raise ValueError("cooccurrence needs objects_per_image to allow at least 2 objects")
        return self

    @property
    def background_range(self) -> tuple[int, int]:
        return BACKGROUNDS[self.background]


# --- a COCO sample (data/coco_sample.py) ---------------------------------------------------------------------------
IRREGULAR_PLURALS = {"person": "people", "mouse": "mice", "knife": "knives", "sheep": "sheep", "skis": "skis",
                     "scissors": "scissors", "skateboard": "skateboards", "teddy bear": "teddy bears"}


class CocoSampleParams(ParitySwitches):
    """How the evaluation split is drawn from a COCO-format dataset."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    parity_switches = ("word_sample", "word_candidates", "word_quota", "reference_lists")

    images: PositiveInt = Field(default=275, description="images in the seeded sample (all when fewer exist)")
    seed: int = 0
    require_objects: bool = Field(default=True, description="sample only images with at least one annotation")
    merge_instances: bool = Field(
        default=True, description="one object per (image, category): the union of its instance masks")
    plurals: bool = Field(default=True, description="an answer may name a category in the plural")
    words: dict[str, list[str]] = Field(
        default_factory=dict, description="extra words per category name (synonyms), e.g. person: [man, woman]")
    word_sample: Literal["caption_sample", "per_category"] = Field(
        default="caption_sample",
        description="the word level's images: caption_sample (the sampled images, every object they name) or "
                    "per_category (the reference's rule: per category, its first word_candidates images in "
                    "pycocotools' getImgIds order, answered, the first word_quota whose answer contains the "
                    "category name kept; attribution.word_selection: reference)")
    word_candidates: PositiveInt = Field(default=20, description="per_category: images answered per category")
    word_quota: PositiveInt = Field(default=4, description="per_category: images kept per category (the "
                                                           "reference's lists: 4, 306 entries over 77 categories)")
    reference_lists: str | None = Field(
        default=None, description="a folder with the authors' lists (datasets/*.json of RuoyuChen10/EAGLE): its "
                                  "coco_single_target_once_<model>.json is then the word level's sample, as listed "
                                  "(catalog entry word_reference_list)")


def plural(name: str) -> str:
    """English plural of a category name (its last word): "dining table" -> "dining tables"."""
    if name in IRREGULAR_PLURALS:
        return IRREGULAR_PLURALS[name]
    head, _, last = name.rpartition(" ")
    if last.endswith(("s", "x", "z", "ch", "sh")):
        last += "es"
    elif last.endswith("y") and len(last) > 1 and last[-2] not in "aeiou":
        last = last[:-1] + "ies"
    elif last.endswith("fe"):
        last = last[:-2] + "ves"
    else:
        last += "s"
    return f"{head} {last}" if head else last


def category_words(name: str, params: CocoSampleParams) -> list[str]:
    """The words an answer may use for category `name`, in the order they are looked for: the name, its plural,
    the configured synonyms, then each of them capitalised (the first word of a sentence)."""
    words = [name]
    if params.plurals:
        words.append(plural(name))
    words += params.words.get(name, [])
    words += [w[:1].upper() + w[1:] for w in words]
    return list(dict.fromkeys(w for w in words if w))


class RepopeQuestionParams(BaseModel):
    """The embedded question set: shapes images of a dedicated split (unbiased, like eval)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    biased: Count = Field(default=100, description="images with the anchor X and without the companion Y: "
                                                          "'Is there a Y?' (label no, cause X)")
    controls: int = Field(default=100, ge=0, description="other images: one unbiased question each, alternating "
                                                         "an absent category (no) and a present one (yes)")
    exclude_confounders: bool = Field(
        default=True, description="biased images hold no other object sharing the companion's colour or shape, "
                                  "so the anchor is the only known cause of a 'Yes'")
    seed: int = 0
    scan_limit: Count = Field(default=20000, description="the most images scanned for biased cases")
