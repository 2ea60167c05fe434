"""Data preparation: the embedded COCO-format shapes benchmark, eagle_coco's evaluation split (shapes or a COCO
sample) and MMVP's question list."""

from eagle_pipelines.pipelines.data_preparation.pipeline import (
    create_eval_pipeline,
    create_mmvp_pipeline,
    create_pipeline,
)

__all__ = ["create_eval_pipeline", "create_mmvp_pipeline", "create_pipeline"]
