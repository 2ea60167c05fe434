"""Project pipelines.

- ``data_preparation``: the embedded shapes benchmark (train, val, eval splits).
- ``toy_model``: generates the train and val splits, trains the tiny Qwen2.5-VL, measures it.
- ``mmvp``: MMVP's questions (a local copy) as an evaluation list.
- ``eagle_coco`` (default): prepares the eval split (the shapes, or a seeded COCO sample with ``--env=paper``),
  answers it, and explains the answers (superpixels,
  EAGLE at sentence and word level, resumable per image), runs the baselines (LLaVA-CAM, IGOS++, TAM, Captum)
  on the same targets, evaluates every method under one protocol and
  writes the metrics tables, figures and the HTML report.
- ``eagle_repope``: hallucination diagnosis on yes/no questions (the embedded question set, or RePOPE with
  ``--env=paper``): answers, EAGLE on the wrong ones, correction by removing the lowest-ranked regions.
"""

from __future__ import annotations

from kedro.pipeline import Pipeline

from eagle_pipelines.pipelines import (
    attribution,
    baselines,
    data_preparation,
    eagle_repope,
    evaluation,
    reporting,
    superpixels,
    toy_model,
)


def register_pipelines() -> dict[str, Pipeline]:
    eagle_coco = (data_preparation.create_eval_pipeline() + superpixels.create_pipeline()
                  + attribution.create_pipeline() + baselines.create_pipeline() + evaluation.create_pipeline()
                  + reporting.create_pipeline())
    return {
        "data_preparation": data_preparation.create_pipeline(),
        "mmvp": data_preparation.create_mmvp_pipeline(),
        "superpixels": superpixels.create_pipeline(),
        "baselines": baselines.create_pipeline(),
        "evaluation": evaluation.create_pipeline(),
        "reporting": reporting.create_pipeline(),
        "toy_model": data_preparation.create_pipeline(splits=("train", "val")) + toy_model.create_pipeline(),
        "eagle_coco": eagle_coco,
        "eagle_repope": eagle_repope.create_pipeline(),
        "__default__": eagle_coco,
    }
