"""Kedro datasets that kedro-datasets does not have."""

from eagle_pipelines.io.coco_dataset import CocoFolder, CocoFolderDataset
from eagle_pipelines.io.model_dataset import VisionLanguageModelDataset
from eagle_pipelines.io.partitions import ResumablePartitionsDataset, Skipped

__all__ = ["CocoFolder", "CocoFolderDataset", "ResumablePartitionsDataset", "Skipped", "VisionLanguageModelDataset"]
