"""eagle_video: the experiment template's stages for clips.

    eval clips ─► answers ─► EAGLE (rows × cols cells per frame) ─► evaluation (EAGLE beside the random floor)
                ─► tables ─► figures, GIFs ─► report (publishing draws nothing)

Stages are node namespaces inside ``eagle_video`` (``eagle_video.data``, ``.answers``, ``.explanation``,
``.evaluation``, ``.reporting``), built with the experiment template's ``stage``, aggregate and publish nodes
(pipelines/experiment); datasets are ``eagle_video.<name>``: the template's factories of conf/base/catalog.yml
(answers, manifests with their item stores, tables, figures, report) and conf/base/catalog_eagle_video.yml for the
clip split; the GIFs pass from ``render_gifs`` to ``publish_report`` in memory. The model is ``vlm_video`` (the video-capable embedded model,
``kedro run --pipeline=toy_model_video``).
"""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from eagle_pipelines.pipelines.eagle_video import nodes, report
from eagle_pipelines.pipelines.experiment import aggregate_node, publish_node, stage

NAMESPACE = "eagle_video"
PARAMETERS = {"params:shapes", "params:clips", "params:eagle_video"}


def create_pipeline(**kwargs) -> Pipeline:
    p = "params:eagle_video"
    stages = Pipeline([
        stage("data", [
            Node(nodes.prepare_eval_clips, ["params:shapes", "params:clips"], "eval_split", name="prepare_eval_clips"),
        ]),
        stage("answers", [
            Node(nodes.answer_clips, ["vlm_video", "eval_split", p], "answers", name="answer_clips"),
        ]),
        stage("explanation", [
            Node(nodes.explain_clips, ["vlm_video", "eval_split", "answers", p], "attributions", name="explain"),
        ]),
        stage("evaluation", [
            Node(nodes.evaluate_clips, ["vlm_video", "eval_split", "answers", "attributions", p], "evaluation",
                 name="evaluate"),
            aggregate_node(nodes.aggregate_metrics),
        ]),
        stage("reporting", [
            Node(report.coverage, ["answers", "attributions", "evaluation"], "coverage", name="coverage"),
            Node(report.build_figures, ["vlm_video", "eval_split", "answers", "attributions", "evaluation", p],
                 "figures", name="build_figures"),
            Node(report.render_gifs, ["vlm_video", "eval_split", "answers", "attributions", p], "gifs",
                 name="render_gifs"),
            publish_node(report.publish_report, ["metrics", "metrics_per_sample", "coverage", "figures", "gifs", p]),
        ]),
    ])
    return Pipeline(stages, namespace=NAMESPACE, inputs={"vlm_video"}, parameters={q: q for q in PARAMETERS})
