"""Explains the model's answers on an evaluation list (the answering step so far)."""

from eagle_pipelines.pipelines.attribution.pipeline import create_pipeline

__all__ = ["create_pipeline"]
