"""The baselines (LLaVA-CAM, IGOS++, TAM, Captum FeatureAblation) on the same answers and targets as EAGLE."""

from eagle_pipelines.pipelines.baselines.pipeline import create_pipeline

__all__ = ["create_pipeline"]
