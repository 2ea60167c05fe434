"""Evaluation of eagle_coco's attributions under one protocol."""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from eagle_pipelines.pipelines.evaluation.nodes import aggregate_metrics, evaluate_samples


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline([
        Node(
            func=evaluate_samples,
            inputs=["vlm", "eagle_coco_eval_list", "eval_images", "eval_instances", "eagle_coco_answers",
                    "eagle_coco_sentence_attributions", "eagle_coco_word_attributions", "params:superpixels",
                    "params:attribution", "params:evaluation", "eagle_coco_baselines", "params:baselines"],
            outputs="eagle_coco_evaluation",
            name="evaluate_samples_node",
        ),
        Node(
            func=aggregate_metrics,
            inputs=["vlm", "eagle_coco_eval_list", "eagle_coco_evaluation", "params:superpixels",
                    "params:attribution", "params:evaluation", "params:baselines"],
            outputs=["eagle_coco_metrics", "eagle_coco_metrics_history", "eagle_coco_metrics_per_sample"],
            name="aggregate_metrics_node",
        ),
    ])
