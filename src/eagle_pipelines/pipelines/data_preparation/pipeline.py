"""The shapes benchmark: one node per split (train is biased, val and eval are not); eagle_coco's evaluation split
from its configured source (the shapes or a COCO sample); MMVP's question list."""

from __future__ import annotations

from functools import partial, update_wrapper

from kedro.pipeline import Node, Pipeline

from eagle_pipelines.pipelines.data_preparation.nodes import generate_shapes_split, prepare_mmvp

SPLITS = ("train", "val")  # the eval split is each experiment's own (pipelines/eagle_coco)


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


def create_mmvp_pipeline(**kwargs) -> Pipeline:
    """MMVP's questions (a local copy) as an evaluation list."""
    return Pipeline([Node(
        func=prepare_mmvp,
        inputs=["mmvp_questions", "mmvp_images", "params:mmvp"],
        outputs="mmvp_eval_list",
        name="prepare_mmvp_node",
        tags=["mmvp"],
    )])
