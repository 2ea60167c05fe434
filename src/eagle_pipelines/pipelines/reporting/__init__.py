"""Figures and the self-contained HTML report of eagle_coco."""

from eagle_pipelines.pipelines.reporting.pipeline import create_pipeline

__all__ = ["create_pipeline"]
