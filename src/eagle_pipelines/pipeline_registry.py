"""Project pipelines.

- ``eagle_coco`` (default): the experiment template (pipelines/experiment) under the namespace ``eagle_coco``:
  the evaluation split (the shapes, or a seeded COCO sample with ``--env=paper``), answers, superpixels, EAGLE at
  sentence and word level, the baselines on the same targets, one evaluation protocol, tables, figures and the
  published report. ``--namespaces eagle_coco.evaluation`` (or ``.explanation``, ``.baselines``,
  ``.reporting``...) runs one stage.
- ``eagle_repope``: hallucination diagnosis on yes/no questions (the embedded question set, or RePOPE with
  ``--env=paper``): answers, EAGLE on the wrong ones, correction by removing the lowest-ranked regions.
- ``eagle_mitigation``: evidence-guided decoding (the bias of EAGLE's evidence on the image tokens' attention)
  measured with and without it on the embedded biased questions and captions, and the necessity/sufficiency
  diagnostics of a few answers (docs/mitigation.md).
- ``toy_model``: generates the train and val splits, trains the tiny Qwen2.5-VL, measures it.
- ``toy_model_video``: continues that checkpoint on images and clips into the video-capable embedded model
  (data/06_models/toy_qwen2_5_vl_video), measured on held-out images and clips.
- ``eagle_video``: EAGLE on the embedded clips with a known cause (one shape appears in one frame), over each
  clip's 5 × 5 grid per frame, beside a random order: ins/del AUC, temporal hit rate, spatio-temporal Point Game.
- ``data_preparation``: the shapes benchmark's train and val splits.
- ``mmvp``: MMVP's questions (a local copy) as an evaluation list.
"""

from __future__ import annotations

from kedro.pipeline import Pipeline

from eagle_pipelines.pipelines import (
    data_preparation,
    eagle_coco,
    eagle_mitigation,
    eagle_mmvp,
    eagle_repope,
    eagle_video,
    toy_model,
)
from eagle_pipelines.pipelines.experiment import experiment

#: the experiments that are the template after a dataset's loader (pipelines/experiment): one line each
TEMPLATE_EXPERIMENTS = {
    "eagle_coco": eagle_coco.LOADER,
    "eagle_mmvp": eagle_mmvp.LOADER,
}


def register_pipelines() -> dict[str, Pipeline]:
    template = {name: experiment(name, loader) for name, loader in TEMPLATE_EXPERIMENTS.items()}
    coco = template["eagle_coco"]
    return {
        **template,
        "data_preparation": data_preparation.create_pipeline(),
        "mmvp": data_preparation.create_mmvp_pipeline(),
        "toy_model": data_preparation.create_pipeline() + toy_model.create_pipeline(),
        "toy_model_video": data_preparation.create_pipeline() + toy_model.create_video_pipeline(),
        "eagle_repope": eagle_repope.create_pipeline(),
        "eagle_mitigation": eagle_mitigation.create_pipeline(),
        "eagle_video": eagle_video.create_pipeline(),
        "__default__": coco,
    }
