"""Data preparation: the embedded COCO-format shapes benchmark."""

from eagle_pipelines.pipelines.data_preparation.pipeline import create_pipeline

__all__ = ["create_pipeline"]
