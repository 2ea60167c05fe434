"""Figures and the HTML report."""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from eagle_pipelines.pipelines.reporting.nodes import build_report


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline([
        Node(
            func=build_report,
            inputs=["vlm", "eagle_coco_eval_list", "eval_images", "eval_instances",
                    "eagle_coco_sentence_attributions", "eagle_coco_word_attributions", "eagle_coco_evaluation",
                    "eagle_coco_metrics", "params:eagle_coco", "params:superpixels", "params:attribution",
                    "params:evaluation", "params:reporting", "eagle_coco_baselines", "params:baselines"],
            outputs=["eagle_coco_fig_sentence_overlays", "eagle_coco_fig_word_overlays", "eagle_coco_fig_curves",
                     "eagle_coco_fig_influence", "eagle_coco_fig_table", "eagle_coco_report",
                     "eagle_coco_report_history"],
            name="build_report_node",
        ),
    ])
