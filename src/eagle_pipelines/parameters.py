"""One place that maps each parameter group (``params:<group>``) to its pydantic model.

``parse`` turns the dict Kedro passes to a node into the validated model; ``ParameterError`` names the exact
dotted parameter that is wrong and where it is set, so a bad value never surfaces as a traceback deep in a node.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError

from eagle_pipelines.data.params import ShapesParams
from eagle_pipelines.models.toy import ToyModelParams


class EagleCocoParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: str = "Describe the image."
    max_images: int | None = Field(default=None, gt=0, description="explain only the first N images")
    max_new_tokens: PositiveInt = 32
    batch_size: PositiveInt = 32


PARAMETER_MODELS: dict[str, type[BaseModel]] = {
    "shapes": ShapesParams,
    "toy_model": ToyModelParams,
    "eagle_coco": EagleCocoParams,
}
PARAMETER_FILES = {
    "shapes": "conf/<env>/parameters_data_preparation.yml",
    "toy_model": "conf/<env>/parameters_toy_model.yml",
    "eagle_coco": "conf/<env>/parameters_eagle_coco.yml",
}


class ParameterError(ValueError):
    """A parameter group failed validation; the message lists every wrong key with its dotted name."""


def parse(group: str, value: dict | BaseModel):
    """Validates `value` against the model of parameter group `group`."""
    model = PARAMETER_MODELS[group]
    if isinstance(value, model):
        return value
    try:
        return model.model_validate(value if value is not None else {})
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in (group, *err["loc"]))
            got = f" (got {err['input']!r})" if "input" in err and not isinstance(err["input"], dict) else ""
            lines.append(f"  - {loc}: {err['msg']}{got}")
        raise ParameterError(
            f"Invalid parameters in '{group}' (set in {PARAMETER_FILES[group]} or by --params):\n" + "\n".join(lines)
        ) from None
