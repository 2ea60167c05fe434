"""The shapes benchmark: one node per split (train is biased, val and eval are not)."""

from __future__ import annotations

from functools import partial, update_wrapper

from kedro.pipeline import Node, Pipeline

from eagle_pipelines.pipelines.data_preparation.nodes import generate_shapes_split

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
