"""eagle_video: the experiment template's stages for clips.

    eval clips ─► answers ─► EAGLE (rows × cols cells per frame) ─► evaluation (EAGLE beside the random floor)
                ─► tables ─► figures, GIFs ─► report

Stages are node namespaces inside ``eagle_video`` (``eagle_video.data``, ``.answers``, ``.explanation``,
``.evaluation``, ``.reporting``), as in pipelines/experiment; datasets are ``eagle_video.<name>``: the template's
factories of conf/base/catalog.yml (answers, item stores, manifests, tables, figures, report) and
conf/base/catalog_eagle_video.yml for the clip split. The model is ``vlm_video`` (the video-capable embedded model,
``kedro run --pipeline=toy_model_video``).
"""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from eagle_pipelines.pipelines.eagle_video import nodes, report

NAMESPACE = "eagle_video"
PARAMETERS = {"params:shapes", "params:clips", "params:eagle_video"}


def _stage(name: str, stage_nodes: list[Node]) -> Pipeline:
    return Pipeline(stage_nodes, namespace=name, prefix_datasets_with_namespace=False)


def create_pipeline(**kwargs) -> Pipeline:
    p = "params:eagle_video"
    stages = Pipeline([
        _stage("data", [
            Node(nodes.prepare_eval_clips, ["params:shapes", "params:clips"], "eval_split", name="prepare_eval_clips"),
        ]),
        _stage("answers", [
            Node(nodes.answer_clips, ["vlm_video", "eval_split", p], "answers", name="answer_clips"),
        ]),
        _stage("explanation", [
            Node(nodes.explain_clips, ["vlm_video", "eval_split", "answers", p], "attributions",
                 name="explain"),
        ]),
        _stage("evaluation", [
            Node(nodes.evaluate_clips, ["vlm_video", "eval_split", "answers", "attributions", p],
                 "evaluation", name="evaluate"),
            Node(nodes.aggregate_metrics, "evaluation", ["metrics", "metrics_per_sample"], name="aggregate_metrics"),
        ]),
        _stage("reporting", [
            Node(report.coverage, ["answers", "attributions", "evaluation"], "coverage", name="coverage"),
            Node(report.build_figures, ["vlm_video", "eval_split", "answers", "attributions", "evaluation", p],
                 "figures", name="build_figures"),
            Node(report.publish_report, ["metrics", "metrics_per_sample", "coverage", "figures", "vlm_video",
                                         "eval_split", "answers", "attributions", p], "report",
                 name="publish_report"),
        ]),
    ])
    return Pipeline(stages, namespace=NAMESPACE, inputs={"vlm_video"}, parameters={q: q for q in PARAMETERS})
