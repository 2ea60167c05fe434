"""Kedro datasets that kedro-datasets does not have."""

from eagle_pipelines.io.coco_dataset import CocoFolder, CocoFolderDataset
from eagle_pipelines.io.items import (
    AttributionManifestDataset,
    ItemStore,
    ItemStoreDataset,
    Manifest,
    ManifestDataset,
    Skipped,
)
from eagle_pipelines.io.model_dataset import VisionLanguageModelDataset
from eagle_pipelines.io.paper_tables_dataset import PaperTablesDataset
from eagle_pipelines.io.reference_list_dataset import ReferenceList, ReferenceListDataset
from eagle_pipelines.io.report_dataset import FiguresDataset, PublishedReportDataset
from eagle_pipelines.io.split_dataset import CocoSplit, CocoSplitDataset

__all__ = ["AttributionManifestDataset", "CocoFolder", "CocoFolderDataset", "CocoSplit", "CocoSplitDataset",
           "FiguresDataset", "ItemStore", "ItemStoreDataset", "Manifest", "ManifestDataset",
           "PaperTablesDataset", "PublishedReportDataset", "ReferenceList", "ReferenceListDataset", "Skipped",
           "VisionLanguageModelDataset"]
