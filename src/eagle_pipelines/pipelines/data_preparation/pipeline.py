"""The shapes benchmark: one node per split (train is biased, val and eval are not); eagle_coco's evaluation split
from its configured source (the shapes or a COCO sample); MMVP's question list."""

from __future__ import annotations

from functools import partial, update_wrapper

from kedro.pipeline import Node, Pipeline

from eagle_pipelines.pipelines.data_preparation.nodes import generate_shapes_split, prepare_eval_split, prepare_mmvp

SPLITS = ("train", "val", "eval")


def split_node(split: str) -> Node:
    func = update_wrapper(partial(generate_shapes_split, split=split), generate_shapes_split)
    return Node(
        func=func,
        inputs="params:shapes",
        outputs=[f"{split}_images", f"{split}_instances", f"{split}_captions"],
        name=f"generate_shapes_{split}_node",
        tags=["shapes", split],
    )


def create_pipeline(splits: tuple[str, ...] = SPLITS, **kwargs) -> Pipeline:
    return Pipeline([split_node(s) for s in splits])


def create_eval_pipeline(**kwargs) -> Pipeline:
    """eagle_coco's evaluation split: the shapes eval split by default, a seeded COCO sample with
    ``eval_data.source: coco`` (the paper environment)."""
    return Pipeline([Node(
        func=prepare_eval_split,
        inputs=["params:eval_data", "params:shapes", "coco_val2017"],
        outputs=["eval_images", "eval_instances", "eval_captions"],
        name="prepare_eval_split_node",
        tags=["eval"],
    )])


def create_mmvp_pipeline(**kwargs) -> Pipeline:
    """MMVP's questions (a local copy) as an evaluation list."""
    return Pipeline([Node(
        func=prepare_mmvp,
        inputs=["mmvp_questions", "mmvp_images", "params:mmvp"],
        outputs="mmvp_eval_list",
        name="prepare_mmvp_node",
        tags=["mmvp"],
    )])
