"""Data preparation: the embedded COCO-format shapes benchmark's train and val splits and MMVP's question list."""

from eagle_pipelines.pipelines.data_preparation.pipeline import create_mmvp_pipeline, create_pipeline

__all__ = ["create_mmvp_pipeline", "create_pipeline"]
