"""Wrong parameters fail at start and name the parameter."""

from __future__ import annotations

import pytest

from eagle_pipelines.parameters import ParameterError, parse
from tests.conftest import COLOURS

BASE = {"colours": COLOURS}


@pytest.mark.parametrize(
    ("change", "name"),
    [
        ({"splits": {"train": 10, "val": 0, "eval": 5}}, "shapes.splits.val"),
        ({"cooccurrence": {"anchor": "purple circle", "companion": "blue square", "rate": 0.5}},
         "cooccurrence.anchor = 'purple circle'"),
        ({"cooccurrence": {"anchor": "red circle", "companion": "blue square", "rate": -0.1}},
         "shapes.cooccurrence.rate"),
        ({"shapes": ["circle", "hexagon"]}, "shapes.shapes.1"),
        ({"background": "grey"}, "shapes.background"),
        ({"colours": {"red": [300, 0, 0]}}, "shapes.colours"),
        ({"radius": [20, 14]}, "radius [20, 14]"),
        ({"splitz": {}}, "shapes.splitz"),
    ],
)
def test_wrong_shapes_parameter_is_named(change, name):
    with pytest.raises(ParameterError) as info:
        parse("shapes", {**BASE, **change})
    assert name in str(info.value)
    assert "parameters_data_preparation.yml" in str(info.value)


def test_wrong_toy_model_and_eagle_coco_parameters_are_named():
    with pytest.raises(ParameterError, match=r"toy_model\.training\.batch_size"):
        parse("toy_model", {"training": {"batch_size": 0}})
    with pytest.raises(ParameterError, match=r"eagle_coco\.max_images"):
        parse("eagle_coco", {"max_images": 0})


def test_shipped_parameter_files_are_valid():
    from pathlib import Path

    import yaml

    conf = Path(__file__).parents[1] / "conf" / "base"
    for file, group in [("parameters_data_preparation.yml", "shapes"), ("parameters_toy_model.yml", "toy_model"),
                        ("parameters_eagle_coco.yml", "eagle_coco")]:
        parse(group, yaml.safe_load((conf / file).read_text())[group])


def test_an_evaluation_list_with_several_prompts_is_refused_not_half_read():
    import pandas as pd

    from eagle_pipelines.pipelines.attribution.nodes import the_prompt

    assert the_prompt(pd.DataFrame({"prompt": ["Describe the image."] * 3})) == "Describe the image."
    assert the_prompt(pd.DataFrame({"prompt": []})) == ""
    with pytest.raises(ValueError, match="2 different prompts .*'Describe the image.', 'Is it red\\?'"):
        the_prompt(pd.DataFrame({"prompt": ["Describe the image.", "Is it red?", "Describe the image."]}))
