"""Train the embedded model on the training split and measure it on the held-out split."""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from eagle_pipelines.pipelines.toy_model.nodes import (
    add_training_facts,
    evaluate_model,
    plot_training_loss,
    train_model,
)


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline([
        Node(
            func=train_model,
            inputs=["train_instances", "train_captions", "train_images", "params:shapes", "params:toy_model"],
            outputs=["vlm", "toy_model_training_log"],
            name="train_toy_model_node",
        ),
        Node(
            func=evaluate_model,
            inputs=["vlm", "val_instances", "val_captions", "val_images", "params:toy_model", "params:shapes"],
            outputs="toy_model_held_out_quality",
            name="evaluate_toy_model_node",
        ),
        Node(
            func=add_training_facts,
            inputs=["toy_model_held_out_quality", "toy_model_training_log", "params:toy_model"],
            outputs="toy_model_quality",
            name="add_training_facts_node",
        ),
        Node(
            func=plot_training_loss,
            inputs="toy_model_training_log",
            outputs="toy_model_loss_plot",
            name="plot_toy_model_loss_node",
        ),
    ])
