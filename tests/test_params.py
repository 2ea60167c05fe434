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


def test_experiment_params_is_the_model_of_eagle_coco():
    from eagle_pipelines.parameters import PARAMETER_MODELS, EagleCocoParams, ExperimentParams

    assert EagleCocoParams is ExperimentParams and PARAMETER_MODELS["eagle_coco"] is ExperimentParams
    assert parse("eagle_coco", {"prompt": "Name the shapes.", "max_images": 2}) == ExperimentParams(
        prompt="Name the shapes.", max_images=2)


def test_each_shipped_parameter_group_is_valid_and_its_errors_name_its_file():
    from pathlib import Path

    import yaml

    from eagle_pipelines.parameters import PARAMETER_FILES, PARAMETER_MODELS

    conf = Path(__file__).parents[1] / "conf"
    seen = set()
    for env in ("base", "paper"):
        for file in sorted((conf / env).glob("parameters*.yml")):
            for group, value in (yaml.safe_load(file.read_text()) or {}).items():
                assert PARAMETER_FILES[group] == f"conf/<env>/{file.name}", group  # where a ParameterError points
                if env == "base":  # conf/paper/ files name only what they change (tests/test_hygiene.py merges them)
                    model = parse(group, value)
                    assert isinstance(model, PARAMETER_MODELS[group])
                    assert parse(group, model.model_dump()) == model, group
                seen.add(group)
    assert seen == set(PARAMETER_MODELS) == set(PARAMETER_FILES)


def test_the_experiment_parameters_make_the_eval_list(eval_split, tmp_path):
    from eagle_pipelines.io.split_dataset import CocoSplit
    from eagle_pipelines.parameters import ExperimentParams
    from eagle_pipelines.pipelines.experiment.nodes import EVAL_LIST_COLUMNS, build_eval_list

    split = CocoSplit(tmp_path, eval_split.instances, eval_split.captions)
    every = build_eval_list(split, ExperimentParams())
    assert list(every.columns) == EVAL_LIST_COLUMNS and len(every) == len(eval_split.instances["images"])
    assert every.image_id.is_monotonic_increasing and (every.prompt == "Describe the image.").all()
    first = build_eval_list(split, ExperimentParams(prompt="Name the shapes.", max_images=2))
    assert first.image_id.tolist() == every.image_id.tolist()[:2] and (first.prompt == "Name the shapes.").all()
    assert first["item"].tolist() == [str(i) for i in first.image_id]
