"""eagle_coco: captions explained at sentence and word level (the experiment template on a COCO-format split)."""

from eagle_pipelines.pipelines.eagle_coco.pipeline import create_pipeline

__all__ = ["create_pipeline"]
