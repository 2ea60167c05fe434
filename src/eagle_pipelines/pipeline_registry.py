"""Project pipelines.

- ``eagle_coco`` (default): the experiment template (pipelines/experiment) under the namespace ``eagle_coco``:
  the evaluation split (the shapes, or a seeded COCO sample with ``--env=paper``), answers, superpixels, EAGLE at
  sentence and word level, the baselines on the same targets, one evaluation protocol, tables, figures and the
  published report. ``--namespaces eagle_coco.evaluation`` (or ``.explanation``, ``.baselines``,
  ``.reporting``...) runs one stage.
- ``eagle_repope``: hallucination diagnosis on yes/no questions (the embedded question set, or RePOPE with
  ``--env=paper``): answers, EAGLE on the wrong ones, correction by removing the lowest-ranked regions.
- ``toy_model``: generates the train and val splits, trains the tiny Qwen2.5-VL, measures it.
- ``data_preparation``: the shapes benchmark's train and val splits.
- ``mmvp``: MMVP's questions (a local copy) as an evaluation list.
"""

from __future__ import annotations

from kedro.pipeline import Pipeline

from eagle_pipelines.pipelines import data_preparation, eagle_coco, eagle_mmvp, eagle_repope, toy_model


def register_pipelines() -> dict[str, Pipeline]:
    coco = eagle_coco.create_pipeline()
    return {
        "data_preparation": data_preparation.create_pipeline(),
        "mmvp": data_preparation.create_mmvp_pipeline(),
        "toy_model": data_preparation.create_pipeline() + toy_model.create_pipeline(),
        "eagle_coco": coco,
        "eagle_repope": eagle_repope.create_pipeline(),
        "eagle_mmvp": eagle_mmvp.create_pipeline(),
        "__default__": coco,
    }
