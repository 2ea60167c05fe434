"""Trains and evaluates the embedded tiny Qwen2.5-VL."""

from eagle_pipelines.pipelines.toy_model.pipeline import create_pipeline, create_video_pipeline

__all__ = ["create_pipeline", "create_video_pipeline"]
