"""Scores every method under one protocol and aggregates the metrics tables."""

from eagle_pipelines.pipelines.evaluation.pipeline import create_pipeline

__all__ = ["create_pipeline"]
