"""eagle_coco's attribution steps: the evaluation list and the model's answers."""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from eagle_pipelines.pipelines.attribution.nodes import build_eval_list, generate_answers


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline([
        Node(
            func=build_eval_list,
            inputs=["eval_instances", "eval_captions", "params:eagle_coco"],
            outputs="eagle_coco_eval_list",
            name="build_eval_list_node",
        ),
        Node(
            func=generate_answers,
            inputs=["vlm", "eagle_coco_eval_list", "eval_images", "eval_instances", "params:eagle_coco"],
            outputs="eagle_coco_answers",
            name="generate_answers_node",
        ),
    ])
