"""eagle_video: the clip metrics (core/video_metrics.py), the video-capable embedded model
(data/06_models/toy_qwen2_5_vl_video, pipeline toy_model_video) and the pipeline run on the embedded clips."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from kedro.framework.session import KedroSession

from eagle_pipelines.core.regions import frame_grid
from eagle_pipelines.core.video_metrics import order_rows, prefix_counts, prefix_curves, st_point_game, temporal_hit

from tests.conftest import MODEL_DIR, ROOT, SHIPPED_MODEL, copy_project

VIDEO_MODEL = ROOT / "data/06_models/toy_qwen2_5_vl_video"


# --- metrics, by hand ---------------------------------------------------------------------------------------------
class EventPixelsKept:
    """A scorer whose 'probability' is the share of the event object's pixels kept."""

    target_positions = (0,)

    def __init__(self, masks):
        self.masks = masks

    def __call__(self, keep):
        return ((keep & self.masks).sum(axis=(1, 2, 3)) / self.masks.sum())[:, None]


@pytest.fixture
def two_frames():
    regions = frame_grid(2, 10, 10, rows=2, cols=2)  # 8 regions of 5x5: frame 0 ids 0-3, frame 1 ids 4-7
    masks = np.zeros((2, 10, 10), dtype=bool)
    masks[1, 1:4, 6:9] = True  # the event: frame 1, top-right cell (region 5)
    return regions, masks


def test_temporal_hit_and_spatio_temporal_point_game(two_frames):
    regions, masks = two_frames
    rest = [0, 2, 3, 6, 7]
    assert temporal_hit([5, 1, 4, *rest], regions, 1) and st_point_game([5, 1, 4, *rest], regions, masks)
    assert not temporal_hit([1, 5, 4, *rest], regions, 1) and not st_point_game([1, 5, 4, *rest], regions, masks)
    # the right moment, the wrong place
    assert temporal_hit([4, 5, 1, *rest], regions, 1) and not st_point_game([4, 5, 1, *rest], regions, masks)
    with pytest.raises(ValueError, match="differ"):
        st_point_game([5, 1, 4, *rest], regions, masks[:1])


def test_prefix_curves_by_hand(two_frames):
    regions, masks = two_frames
    assert prefix_counts(100, 16).tolist() == [7, 13, 19, 25, 32, 38, 44, 50, 57, 63, 69, 75, 82, 88, 94, 100]
    assert prefix_counts(8, 16).tolist() == list(range(1, 9))
    scorer = EventPixelsKept(masks)
    best = prefix_curves(scorer, regions, np.array([5, 0, 1, 2, 3, 4, 6, 7]), steps=8)
    assert np.allclose(best.area, np.arange(1, 9) / 8)
    assert np.allclose(best.insertion[:, 0], 1.0) and np.allclose(best.deletion[:, 0], 0.0)
    from eagle_pipelines.core.metrics import deletion_auc, insertion_auc

    # insertion: x = [0, 1/8, ..., 1], y = [p(nothing) = 0, 1, ..., 1]; deletion: y = [p(all) = 1, 0, ..., 0]
    assert insertion_auc(best) == pytest.approx(0.5 / 8 + 7 / 8)
    assert deletion_auc(best) == pytest.approx(0.5 / 8)
    worst = prefix_curves(scorer, regions, np.array([0, 1, 2, 3, 4, 6, 7, 5]), steps=4)  # event last; k = 2,4,6,8
    assert np.allclose(worst.area, [0.25, 0.5, 0.75, 1.0])
    assert worst.insertion[:, 0].tolist() == [0, 0, 0, 1] and worst.deletion[:, 0].tolist() == [1, 1, 1, 0]
    with pytest.raises(ValueError, match="not a permutation"):
        prefix_curves(scorer, regions, np.array([5, 5, 1, 2, 3, 4, 6, 7]), steps=4)


def test_order_rows_score_each_method_under_one_protocol_by_hand(two_frames):
    """eagle_video's evaluation rows: the event region first (EAGLE here) against it last (the floor here)."""
    regions, masks = two_frames
    orders = {"EAGLE": np.array([5, 0, 1, 2, 3, 4, 6, 7]), "random": np.array([0, 1, 2, 3, 4, 6, 7, 5])}
    first, last = order_rows(EventPixelsKept(masks), regions, orders, event_frame=1, event_masks=masks, steps=4)
    assert [first["method"], last["method"]] == ["EAGLE", "random"]
    # k = 2, 4, 6, 8 of 8 equal regions; p = the share of the event's pixels kept
    assert first["curve"] == {"x": [0.0, 0.25, 0.5, 0.75, 1.0], "insertion": [0, 1, 1, 1, 1],
                              "deletion": [1, 0, 0, 0, 0]}
    assert last["curve"] == {"x": [0.0, 0.25, 0.5, 0.75, 1.0], "insertion": [0, 0, 0, 0, 1],
                             "deletion": [1, 1, 1, 1, 0]}
    assert first["insertion_auc"] == pytest.approx(0.5 * 0.25 + 0.75)
    assert first["deletion_auc"] == pytest.approx(0.5 * 0.25)
    assert last["insertion_auc"] == pytest.approx(0.5 * 0.25)
    assert last["deletion_auc"] == pytest.approx(0.75 + 0.5 * 0.25)
    assert (first["temporal_hit"], first["st_point_game"], first["first_region"]) == (1.0, 1.0, 5)
    assert (last["temporal_hit"], last["st_point_game"], last["first_region"]) == (0.0, 0.0, 0)
    assert first["eval_seconds"] >= 0 and "forward_passes" not in first  # the node adds EAGLE's own cost


# --- the video-capable embedded model -----------------------------------------------------------------------------
def _params(name: str, group: str) -> dict:
    return yaml.safe_load((ROOT / f"conf/base/{name}").read_text())[group]


@pytest.mark.skipif(not VIDEO_MODEL.is_dir(), reason="train it with kedro run --pipeline=toy_model_video")
def test_shipped_video_model_keeps_images_and_answers_held_out_clips():
    from eagle_pipelines.data.clips import ClipParams, generate_clip
    from eagle_pipelines.data.params import ShapesParams
    from eagle_pipelines.models.qwen_vl import QwenVLAdapter

    quality = json.loads((VIDEO_MODEL / "quality.json").read_text())
    assert quality["exact_match"] >= 0.9 and quality["images"] == 200  # held-out images
    assert quality["clips"]["exact_match"] >= 0.9 and quality["clips"]["clips"] == 100  # held-out clips
    assert quality["training_seconds"] <= 15.5 * 60
    # it continues the image checkpoint: the image vocabulary keeps its ids, the clip words follow
    image_vocab = json.loads((SHIPPED_MODEL / "tokenizer.json").read_text())["model"]["vocab"]
    video_vocab = json.loads((VIDEO_MODEL / "tokenizer.json").read_text())["model"]["vocab"]
    assert {w: video_vocab[w] for w in image_vocab} == image_vocab
    assert {"What", "appears", "video"} <= set(video_vocab) - set(image_vocab)
    # clips nobody has seen (val indices past the split: not trained on, not in quality.json)
    shapes, clips = ShapesParams(**_params("parameters_data_preparation.yml", "shapes")), \
        ClipParams(**_params("parameters_clips.yml", "clips"))
    model = QwenVLAdapter.from_pretrained(VIDEO_MODEL)
    fresh = [generate_clip(shapes, clips, "val", clips.splits.val + i) for i in range(20)]
    said = [model.generate_video(c.frames, clips.prompt, max_new_tokens=8).text for c in fresh]
    assert np.mean([s == c.answer for s, c in zip(said, fresh)]) >= 0.9, list(zip(said, [c.answer for c in fresh]))


# --- the pipelines ------------------------------------------------------------------------------------------------
def _run(project: Path, pipeline: str, params: dict) -> None:
    with KedroSession.create(project_path=project, runtime_params=params) as session:
        session.run(pipeline_name=pipeline)


@pytest.mark.slow
def test_toy_model_video_continues_a_checkpoint_on_images_and_clips(tmp_path):
    from tests.integration.test_run import TINY

    project = copy_project(tmp_path)
    _run(project, "toy_model", TINY)
    video = {**TINY, "clips": {"splits": {"val": 3}},
             "toy_model": {**TINY["toy_model"], "video": {
                 "clip_fraction": 0.5, "training": {"max_steps": 2, "batch_size": 4, "warmup_steps": 1,
                                                    "log_every": 1, "threads": 1}}}}
    _run(project, "toy_model_video", video)
    data = project / "data"
    model_dir = data / "06_models/toy_qwen2_5_vl_video"
    quality = json.loads((model_dir / "quality.json").read_text())
    assert quality["training_steps"] == 2 and quality["images"] == 4 and quality["clips"]["clips"] == 3
    assert quality["clip_fraction"] == 0.5 and 0.0 <= quality["clips"]["token_accuracy"] <= 1.0
    assert len(list((data / "01_raw/clips/val/images").glob("val_*/frame_*.png"))) == 3 * 4
    vocab = json.loads((model_dir / "tokenizer.json").read_text())["model"]["vocab"]
    image_vocab = json.loads((project / MODEL_DIR / "tokenizer.json").read_text())["model"]["vocab"]
    assert {w: vocab[w] for w in image_vocab} == image_vocab and "video" in vocab
    assert (data / "08_reporting/toy_model_video/training_loss.png").stat().st_size > 1000


@pytest.mark.slow
@pytest.mark.skipif(not VIDEO_MODEL.is_dir(), reason="train it with kedro run --pipeline=toy_model_video")
def test_eagle_video_finds_the_moment_and_the_place_and_resumes(tmp_path):
    project = copy_project(tmp_path)
    (project / "data/06_models").mkdir(parents=True)
    os.symlink(VIDEO_MODEL, project / "data/06_models/toy_qwen2_5_vl_video")
    params = {"eagle_video": {"max_clips": 4, "figures": 1}}
    _run(project, "eagle_video", params)
    data = project / "data"
    split = json.loads((data / "01_raw/eagle_video/eval/annotations/instances.json").read_text())
    assert len(split["videos"]) == 24 and split["info"]["frames"] == 4
    metrics = pd.read_csv(data / "08_reporting/eagle_video/metrics.csv").set_index("method")
    per_sample = pd.read_csv(data / "08_reporting/eagle_video/metrics_per_sample.csv")
    answers = json.loads((data / "07_model_output/eagle_video/answers.json").read_text())
    explained = sum(a["exact_match"] for a in answers["answers"])
    assert explained >= 3 and metrics.loc["EAGLE", "n_samples"] == metrics.loc["random", "n_samples"] == explained
    eagle = per_sample[per_sample["method"] == "EAGLE"]
    assert (eagle["n_regions"] == 100).all() and (eagle["forward_passes"] == 2 * 100 + 12 * 11 + 2 * 88).all()
    # what is explained: the words naming the event object ("yellow triangle" of "a yellow triangle")
    first = json.loads(next((data / "07_model_output/eagle_video/attributions").glob("eval_000000.*.json")).read_text())
    named = next(v["event"]["category"] for v in split["videos"] if v["name"] == "eval_000000")
    assert " ".join(first["target_words"]) == named and first["answer"] == f"a {named}"
    # the first region lies in the event's frame, on the event's shape
    events = {v["name"]: v["event"]["frame"] for v in split["videos"]}
    frames = eagle["first_region"] // 25
    assert (frames.to_numpy() == eagle["item"].map(events).to_numpy()).all() == bool(eagle["temporal_hit"].all())
    assert metrics.loc["EAGLE", "temporal_hit"] >= 0.75 and metrics.loc["EAGLE", "st_point_game"] >= 0.75
    assert metrics.loc["EAGLE", "insertion_auc"] > metrics.loc["random", "insertion_auc"]
    assert metrics.loc["EAGLE", "deletion_auc"] < metrics.loc["random", "deletion_auc"]
    latest = data / "08_reporting/eagle_video/latest"
    gif = next((latest / "figures").glob("clip_*.gif"))
    from PIL import Image

    with Image.open(gif) as picture:
        assert picture.n_frames == 4
    assert "temporal hit" in (latest / "report.html").read_text()
    # a rerun makes nothing again: every per-clip item is found under its fingerprint
    stamps = {p: p.stat().st_mtime_ns for p in (data / "07_model_output/eagle_video/attributions").iterdir()}
    _run(project, "eagle_video", params)
    assert {p: p.stat().st_mtime_ns for p in (data / "07_model_output/eagle_video/attributions").iterdir()} == stamps
    manifest = json.loads((data / "07_model_output/eagle_video/attributions.json").read_text())
    assert manifest["seconds"] < 1.0


def test_search_settings_are_the_attribution_shape():
    from eagle_pipelines.parameters import ParameterError, parse

    video = parse("eagle_video", _params("parameters_eagle_video.yml", "eagle_video"))
    assert video.search_params() == {"pool_size": 12, "budget": 0.1}
    assert video.search_params(defaults=False) == {"pool_size": 12}  # what the clip fingerprints keep
    assert parse("eagle_video", {"strategy": "lazy", "lazy": {"refresh": 3}}).search_params() == {"refresh": 3}
    with pytest.raises(ParameterError, match=r"eagle_video.lazy.refresh: Input should be greater than or equal to 1"):
        parse("eagle_video", {"strategy": "lazy", "lazy": {"refresh": 0}})
    with pytest.raises(ParameterError, match=r"eagle_video.search_params: Extra inputs are not permitted"):
        parse("eagle_video", {"strategy": "pooled", "search_params": {"pool_size": 12}})
    with pytest.raises(ParameterError, match=r"eagle_video.strategy: unknown strategy 'fast'; choose one of"):
        parse("eagle_video", {"strategy": "fast"})


@pytest.mark.slow
def test_eagle_video_without_the_video_model_says_how_to_get_one(tmp_path):
    from kedro.io.core import DatasetError

    project = copy_project(tmp_path)
    with pytest.raises(DatasetError, match=r"kedro run --pipeline=toy_model_video"):
        _run(project, "eagle_video", {})
    assert not (project / "data/01_raw/eagle_video").exists()  # stopped before any node
