"""Kedro datasets that kedro-datasets does not have."""

from eagle_pipelines.io.model_dataset import VisionLanguageModelDataset
from eagle_pipelines.io.partitions import ResumablePartitionsDataset, Skipped

__all__ = ["ResumablePartitionsDataset", "Skipped", "VisionLanguageModelDataset"]
