"""Kedro datasets that kedro-datasets does not have.

The names are imported on first use (``eagle_pipelines.io.ManifestDataset``), so that the core API
(``load_model`` reads ``io.model_dataset`` only) runs without Kedro's extras installed."""

from importlib import import_module

_MODULES = {
    "CocoFolder": "coco_dataset", "CocoFolderDataset": "coco_dataset", "MmvpSource": "coco_dataset",
    "MmvpSourceDataset": "coco_dataset", "RepopeSource": "coco_dataset", "RepopeSourceDataset": "coco_dataset",
    "AttributionManifestDataset": "items", "ItemStore": "items", "Manifest": "items",
    "ManifestDataset": "items", "PendingItems": "executors", "Skipped": "items",
    "VisionLanguageModelDataset": "model_dataset", "VllmModelDataset": "model_dataset",
    "ApiModelDataset": "model_dataset",
    "PaperTablesDataset": "paper_tables_dataset",
    "ReferenceList": "reference_list_dataset", "ReferenceListDataset": "reference_list_dataset",
    "FiguresDataset": "report_dataset", "PublishedReportDataset": "report_dataset",
    "CocoSplit": "split_dataset", "CocoSplitDataset": "split_dataset",
}

__all__ = sorted(_MODULES)


def __getattr__(name):
    if name in _MODULES:
        return getattr(import_module(f"{__name__}.{_MODULES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return __all__
