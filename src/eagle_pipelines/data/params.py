"""Validated parameters of the embedded shapes benchmark (pydantic).

A wrong key or value fails when the run starts (see ``eagle_pipelines.hooks``) with the parameter's dotted name.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, field_validator, model_validator

SHAPES = ("circle", "square", "triangle")
BACKGROUNDS = {"dark": (0, 25), "light": (150, 255)}


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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
