"""Nodes of the superpixels pipeline."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from eagle_pipelines.core.regions import RegionMap, params_hash, slico
from eagle_pipelines.data.coco import CocoFormatError, CocoIndex
from eagle_pipelines.io.partitions import Skipped
from eagle_pipelines.parameters import SuperpixelParams, parse


def superpixel_prefix(vlm, params: SuperpixelParams) -> str:
    """The cache folder of label maps made with these SLIC parameters at this model's resolution."""
    return "slico-" + params_hash({**params.model_dump(), "resolution": vlm.resolution_spec()})


def compute_superpixels(vlm, eagle_coco_eval_list: pd.DataFrame, eval_images: dict, eval_instances: dict,
                        superpixels: dict) -> dict[str, Callable[[], RegionMap | Skipped]]:
    """Lazy SLICO label maps at model resolution for every listed image, keyed ``<slico-hash>/<image id>``.
    The partitioned output computes only the missing ones."""
    params = parse("superpixels", superpixels)
    prefix = superpixel_prefix(vlm, params)
    index = CocoIndex(eval_instances, source="eval instances")

    def job(image_id: int) -> Callable[[], RegionMap | Skipped]:
        def compute():
            try:
                image = vlm.model_image(index.load_image(image_id, eval_images))
            except CocoFormatError as exc:
                return Skipped(str(exc))
            return slico(image, **params.model_dump())

        return compute

    return {f"{prefix}/{int(i)}": job(int(i)) for i in eagle_coco_eval_list["image_id"]}
