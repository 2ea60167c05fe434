"""Kedro datasets that kedro-datasets does not have."""

from eagle_pipelines.io.model_dataset import VisionLanguageModelDataset

__all__ = ["VisionLanguageModelDataset"]
