"""Train the embedded model on the training split and measure it on the held-out split."""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from eagle_pipelines.pipelines.toy_model.nodes import (
    add_training_facts,
    add_video_training_facts,
    decode_split,
    evaluate_model,
    evaluate_video_model_on_clips,
    evaluate_video_model_on_images,
    make_clip_split,
    plot_training_loss,
    train_model,
    train_video_model,
)

#: the training images both checkpoints learn from, and the held-out images both are measured on
TRAIN_SPLIT = ["train_instances", "train_captions", "train_images"]
VAL_SPLIT = ["val_instances", "val_captions", "val_images"]


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline([
        Node(train_model, [*TRAIN_SPLIT, "params:shapes", "params:toy_model"],
             ["vlm", "toy_model_training_log"], name="train_toy_model_node"),
        Node(evaluate_model, ["vlm", *VAL_SPLIT, "params:toy_model", "params:shapes"], "toy_model_held_out_quality",
             name="evaluate_toy_model_node"),
        Node(add_training_facts, ["toy_model_held_out_quality", "toy_model_training_log", "params:toy_model"],
             "toy_model_quality", name="add_training_facts_node"),
        Node(plot_training_loss, "toy_model_training_log", "toy_model_loss_plot", name="plot_toy_model_loss_node"),
    ])


def create_video_pipeline(**kwargs) -> Pipeline:
    """The video stage: continues the image checkpoint (`vlm`) on images and clips into `vlm_video`
    (data/06_models/toy_qwen2_5_vl_video), measured on held-out images and held-out clips."""
    return Pipeline([
        Node(make_clip_split, ["params:shapes", "params:clips"], "clips_val", name="make_val_clips_node"),
        Node(decode_split, TRAIN_SPLIT, "toy_model_video_train_split", name="decode_train_split_node"),
        Node(train_video_model, ["vlm", "toy_model_video_train_split", "params:shapes", "params:toy_model",
                                 "params:clips"], ["vlm_video", "toy_model_video_training_log"],
             name="train_toy_video_model_node"),
        Node(evaluate_video_model_on_images, ["vlm_video", *VAL_SPLIT, "params:toy_model", "params:shapes"],
             "toy_model_video_images_quality", name="evaluate_toy_video_model_node"),
        Node(evaluate_video_model_on_clips, ["vlm_video", "clips_val", "params:toy_model"],
             "toy_model_video_clips_quality", name="evaluate_toy_video_model_on_clips_node"),
        Node(add_video_training_facts, ["toy_model_video_images_quality", "toy_model_video_clips_quality",
                                        "toy_model_video_training_log", "params:toy_model"],
             "toy_model_video_quality", name="add_video_training_facts_node"),
        Node(plot_training_loss, "toy_model_video_training_log", "toy_model_video_loss_plot",
             name="plot_toy_video_model_loss_node"),
    ])
