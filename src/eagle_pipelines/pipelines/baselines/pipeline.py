"""The baselines beside EAGLE: one node, one resumable partition store of pixel maps."""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from eagle_pipelines.pipelines.baselines.nodes import compute_baselines


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline([
        Node(
            func=compute_baselines,
            inputs=["vlm", "eagle_coco_eval_list", "eval_images", "eval_instances", "eagle_coco_answers",
                    "eagle_coco_superpixels", "params:superpixels", "params:attribution", "params:baselines"],
            outputs="eagle_coco_baselines",
            name="run_baselines_node",
        ),
    ])
