"""eagle_mmvp: VQA with a prompt per question, MMVP-style (the experiment template on a question list)."""

from eagle_pipelines.pipelines.eagle_mmvp.pipeline import create_pipeline

__all__ = ["create_pipeline"]
