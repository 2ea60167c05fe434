"""Superpixels of the evaluation images."""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from eagle_pipelines.pipelines.superpixels.nodes import compute_superpixels


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline([
        Node(
            func=compute_superpixels,
            inputs=["vlm", "eagle_coco_eval_list", "eval_images", "eval_instances", "params:superpixels"],
            outputs="eagle_coco_superpixels",
            name="compute_superpixels_node",
        ),
    ])
