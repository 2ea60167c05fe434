"""Video input of the Qwen-VL family (models/video.py), spatio-temporal regions (core/regions.py) and the video
explanation (api_video.py, core/video.py, the figures in core/plotting.py).

The stock Qwen video processors cannot be built here (they need torchvision), so the composed
``pixel_values_videos`` are checked against two independent constructions:

* frame by frame through the *image* processor (which builds without torchvision): the image processor lays one
  frame out as (C, T, P, P) patches holding T copies of it; temporal patch g of a clip takes copy t from frame
  g·T + t. That is our reading of the video processor's layout, built from transformers' own image code;
* the stock ``Qwen3VLVideoProcessor.patchify`` (importable without torchvision; Qwen2-VL's video module is not,
  and its ``patchify`` is the same code) on the rescaled and normalised frames.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from eagle_pipelines.core.regions import RegionMap, frame_grid, frame_superpixels, grid_edges, region_frames
from eagle_pipelines.models.qwen_vl import QwenVLAdapter
from eagle_pipelines.models.video import (
    Clip,
    compose_pixel_values_videos,
    even_indices,
    frame_times,
    read_frames,
    write_video,
)
from tests.models.test_adapters import PROMPT, tiny_qwen2_5_vl, tiny_qwen2_vl, tiny_qwen3_vl

FAMILIES = {"qwen2_vl": tiny_qwen2_vl, "qwen2_5_vl": tiny_qwen2_5_vl, "qwen3_vl": tiny_qwen3_vl}
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def adapters():
    out = {}
    for name, build in FAMILIES.items():
        model, processor = build()
        adapter = QwenVLAdapter(model, processor, name=name)
        if name == "qwen3_vl":  # its video pixel bounds cover the whole clip: room for 4 frames of 64 x 64
            adapter.video_settings = {"max_pixels": 4 * 64 * 64}
        out[name] = adapter
    return out


def _frames(n: int, side: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, side, side, 3), dtype=np.uint8)


def frame_by_frame(image_processor, frames: np.ndarray, temporal: int) -> np.ndarray:
    """pixel_values_videos of one clip assembled from the image processor's output for each frame alone."""
    per_frame = [image_processor(images=[f], do_resize=False, return_tensors="np")["pixel_values"] for f in frames]
    if len(frames) % temporal:  # the processor repeats the last frame
        per_frame += [per_frame[-1]] * (temporal - len(frames) % temporal)
    rows = []
    for g in range(len(per_frame) // temporal):
        parts = []
        for t in range(temporal):
            pv = per_frame[g * temporal + t]
            parts.append(pv.reshape(len(pv), 3, temporal, -1)[:, :, t])  # copy t of frame g·T + t
        rows.append(np.stack(parts, axis=2).reshape(len(parts[0]), -1))
    return np.concatenate(rows)


# -- composition ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(FAMILIES))
@pytest.mark.parametrize("n", [4, 3])
def test_composed_pixel_values_videos_equal_the_frame_by_frame_construction(name, n, adapters):
    adapter = adapters[name]
    spec = adapter.video_spec
    side = adapter.video_size(max(n, 2), 64, 64)[0]
    frames = _frames(n, side)
    pv, grid = compose_pixel_values_videos(torch.from_numpy(frames), spec)
    expected = frame_by_frame(adapter.processor.image_processor, frames, spec.temporal_patch_size)
    g = side // spec.patch_size
    assert grid.tolist() == [[(n + 1) // 2, g, g]]
    assert pv.shape == expected.shape == ((n + 1) // 2 * g * g, 3 * 2 * spec.patch_size ** 2)
    np.testing.assert_allclose(pv.numpy(), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_composition_equals_the_stock_patchify_and_batches(name, adapters):
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

    spec = adapters[name].video_spec
    side = spec.factor * 2
    clips = np.stack([_frames(4, side, seed) for seed in range(3)])
    normalised = (torch.from_numpy(clips).float() * spec.rescale_factor - torch.tensor(spec.image_mean)) \
        / torch.tensor(spec.image_std)
    stock, *grid = Qwen3VLVideoProcessor.patchify(None, normalised.permute(0, 1, 4, 2, 3).contiguous(),
                                                  spec.patch_size, spec.merge_size, spec.temporal_patch_size)
    pv, thw = compose_pixel_values_videos(torch.from_numpy(clips), spec)  # three clips in one batch
    assert thw.tolist() == [list(grid)] * 3
    np.testing.assert_allclose(pv.numpy(), stock.reshape(-1, stock.shape[-1]).numpy(), atol=1e-5, rtol=0)
    # differentiable with respect to float frames
    x = torch.from_numpy(clips[:1]).float().requires_grad_()
    compose_pixel_values_videos(x, spec)[0].sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and (x.grad != 0).all()


@pytest.mark.parametrize("name", list(FAMILIES))
def test_video_tokens_follow_the_processor_text_layout(name, adapters):
    adapter = adapters[name]
    clip = adapter.model_clip(Clip(_frames(4, 64), fps=4.0))
    enc = adapter.video_inputs([clip], PROMPT)
    tok = adapter.processor.tokenizer
    ids = enc["input_ids"][0].tolist()
    t, h, w = enc["video_grid_thw"][0].tolist()
    per_patch = h * w // adapter.video_spec.merge_size ** 2
    video = adapter.model.config.video_token_id
    assert ids.count(video) == t * per_patch == int(enc["pixel_values_videos"].shape[0]) // 4
    assert (enc["mm_token_type_ids"][0] == 2).sum() == ids.count(video)
    start, end = tok.convert_tokens_to_ids("<|vision_start|>"), tok.convert_tokens_to_ids("<|vision_end|>")
    if name == "qwen3_vl":  # one <time><|vision_start|>pads<|vision_end|> per temporal patch
        assert ids.count(start) == ids.count(end) == t
        text = adapter.expand_video_text(adapter.video_chat_prompt(PROMPT), (t, h, w), clip)
        assert "<0.1 seconds><|vision_start|>" in text and "<0.6 seconds><|vision_start|>" in text
        assert frame_times(clip, 2) == [0.125, 0.625]
        assert "second_per_grid_ts" not in enc
    else:
        assert ids.count(start) == ids.count(end) == 1
        assert (name == "qwen2_5_vl") == ("second_per_grid_ts" in enc)
    if name == "qwen2_5_vl":  # temporal_patch_size / sampled fps, as its processor computes it
        assert enc["second_per_grid_ts"].tolist() == [0.5]


# -- scoring --------------------------------------------------------------------------------------------------------
def _plain_probabilities(adapter, clip: Clip, keep: np.ndarray, answer_ids: list[int]) -> np.ndarray:
    """p(answer token | masked clip, prompt, previous tokens) from one plain forward whose pixel values are built
    frame by frame by the image processor."""
    masked = clip.frames * keep[..., None].astype(np.uint8)
    enc = adapter.video_inputs([clip.with_frames(masked)], PROMPT)
    enc["pixel_values_videos"] = torch.from_numpy(frame_by_frame(
        adapter.processor.image_processor, masked, adapter.video_spec.temporal_patch_size))
    answer = torch.tensor([answer_ids])
    enc["input_ids"] = torch.cat([enc["input_ids"], answer], dim=1)
    enc["attention_mask"] = torch.cat([enc["attention_mask"], torch.ones_like(answer)], dim=1)
    enc["mm_token_type_ids"] = torch.cat([enc["mm_token_type_ids"], torch.zeros_like(answer)], dim=1)
    with torch.no_grad():
        logits = adapter.model(**enc).logits[0]
    start = logits.shape[0] - len(answer_ids) - 1
    probs = torch.softmax(logits[start:start + len(answer_ids)].float(), dim=-1)
    return probs[torch.arange(len(answer_ids)), answer[0]].numpy()


@pytest.mark.parametrize("name", list(FAMILIES))
def test_masked_clip_scorer_equals_a_plain_forward_on_the_masked_clip(name, adapters):
    adapter = adapters[name]
    clip = adapter.model_clip(Clip(_frames(4, 64, seed=3), fps=2.0))
    tok = adapter.processor.tokenizer
    answer_ids = tok("a red circle", add_special_tokens=False)["input_ids"]
    n, h, w = clip.frames.shape[:3]
    rng = np.random.default_rng(1)
    keep = np.stack([np.ones((n, h, w), bool), np.zeros((n, h, w), bool),
                     *(rng.random((3, n, 1, 1)) > 0.5) & np.ones((1, 1, h, w), bool),
                     rng.random((n, h, w)) > 0.3])
    scorer = adapter.video_scorer(clip, PROMPT, answer_ids, [0, 1, 2], batch_size=2, memory_budget_mb=0)
    got = scorer(keep)
    assert got.shape == (len(keep), 3)
    expected = np.stack([_plain_probabilities(adapter, clip, k, answer_ids) for k in keep])
    np.testing.assert_allclose(got, expected, atol=2e-5, rtol=0)
    assert not np.allclose(got[0], got[1])  # the clip matters to these tokens


@pytest.mark.parametrize("name", list(FAMILIES))
def test_generated_probabilities_equal_the_teacher_forced_scorer(name, adapters):
    adapter = adapters[name]
    clip = adapter.model_clip(Clip(_frames(4, 64, seed=5), fps=2.0))
    answer = adapter.generate_video(clip, PROMPT, max_new_tokens=4)
    assert answer.token_ids, "the tiny model ended at once; pick another seed"
    scorer = adapter.video_scorer(clip, PROMPT, answer.token_ids, range(len(answer.token_ids)), memory_budget_mb=0)
    n, h, w = clip.frames.shape[:3]
    np.testing.assert_allclose(scorer(np.ones((1, n, h, w), bool))[0], answer.token_probs, atol=2e-5)


def test_qwen2_5_vl_time_base_reaches_the_model(adapters):
    adapter = adapters["qwen2_5_vl"]
    frames = adapter.model_clip(Clip(_frames(4, 64, seed=7))).frames
    ids = adapter.processor.tokenizer("a red circle", add_special_tokens=False)["input_ids"]
    probs = {}
    for fps in (2.0, 0.25):
        clip = Clip(frames, fps=fps)
        assert adapter.video_inputs([clip], PROMPT)["second_per_grid_ts"].item() == 2 / fps
        scorer = adapter.video_scorer(clip, PROMPT, ids, [0, 1, 2], memory_budget_mb=0)
        probs[fps] = scorer(np.ones((1, *frames.shape[:3]), bool))[0]
    assert not np.allclose(probs[2.0], probs[0.25], atol=1e-6)  # M-RoPE's temporal positions changed


def test_training_batch_masks_labels_to_the_answer(adapters):
    adapter = adapters["qwen2_5_vl"]
    clips = [adapter.model_clip(Clip(_frames(4, 64, seed=s))) for s in (1, 2)]
    tok = adapter.processor.tokenizer
    batch = adapter.video_inputs(clips, [PROMPT, PROMPT], answers=["a red circle", "a blue square on the left"])
    end = tok.convert_tokens_to_ids("<|im_end|>")
    for row, words in zip(batch["labels"], ["a red circle", "a blue square on the left"]):
        kept = row[row != -100].tolist()
        assert kept == tok(words, add_special_tokens=False)["input_ids"] + [end]
    assert (batch["attention_mask"][0] == 0).any() and batch["attention_mask"][:, 0].all()  # right padding
    loss = adapter.model(**batch).loss
    loss.backward()
    assert torch.isfinite(loss)


def test_a_tokenizer_without_the_models_video_token_is_refused(adapters):
    adapter = adapters["qwen2_vl"]
    saved = adapter.model.config.video_token_id
    adapter.model.config.video_token_id = saved + 1000  # the tokenizer's <|video_pad|> is another id
    try:
        with pytest.raises(ValueError, match="has no video token"):
            adapter.video_inputs([Clip(_frames(2, 56))], PROMPT)
    finally:
        adapter.model.config.video_token_id = saved


# -- reading clips --------------------------------------------------------------------------------------------------
def test_a_video_file_written_with_pyav_round_trips(tmp_path):
    frames = np.random.default_rng(0).integers(0, 256, (10, 32, 48, 3), dtype=np.uint8)
    path = write_video(tmp_path / "clip.mp4", frames, fps=5)
    clip = read_frames(path, 4)
    assert clip.indices == (0, 2, 5, 7) == tuple(even_indices(10, 4))
    assert clip.total_frames == 10 and clip.fps == 5.0 and clip.sampled_fps == 2.0
    assert clip.timestamps == [0.0, 0.4, 1.0, 1.4]
    np.testing.assert_array_equal(clip.frames, frames[[0, 2, 5, 7]])  # lossless RGB H.264
    assert read_frames(path, None).n_frames == 10
    with pytest.raises(ValueError, match="even integer"):
        read_frames(path, 3)
    with pytest.raises(ValueError, match="fewer than n_frames=12"):
        read_frames(path, 12)
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    with pytest.raises(ValueError, match="cannot be read as a video"):
        read_frames(tmp_path / "broken.mp4", 2)


def test_a_folder_of_frames_is_read_in_name_order(tmp_path):
    from PIL import Image

    frames = np.random.default_rng(1).integers(0, 256, (6, 20, 30, 3), dtype=np.uint8)
    for i in (3, 0, 5, 1, 4, 2):  # written out of order
        Image.fromarray(frames[i]).save(tmp_path / f"frame_{i:02d}.png")
    (tmp_path / "notes.txt").write_text("not a frame")
    clip = read_frames(tmp_path, 4, fps=3)
    assert clip.indices == (0, 1, 3, 4) and clip.fps == 3.0
    np.testing.assert_array_equal(clip.frames, frames[[0, 1, 3, 4]])
    np.testing.assert_array_equal(read_frames(frames, 2).frames, frames[[0, 3]])
    Image.fromarray(frames[0][:15]).save(tmp_path / "frame_09.png")
    (tmp_path / "frame_05.png").unlink()
    with pytest.raises(ValueError, match="differ in size"):
        read_frames(tmp_path, None)


# -- regions --------------------------------------------------------------------------------------------------------
def test_frame_grid_is_the_reference_partition():
    n, h, w = 3, 37, 52
    regions = frame_grid(n, h, w, rows=5, cols=5)
    assert regions.labels.shape == (n, h, w) and regions.n_regions == 75
    rows, cols = grid_edges(h, 5), grid_edges(w, 5)
    for t in range(n):  # the reference notebook's V_set: mask[t, y0:y1, x0:x1] for t, r, c
        for r in range(5):
            for c in range(5):
                cell = np.zeros((n, h, w), bool)
                cell[t, rows[r]:rows[r + 1], cols[c]:cols[c + 1]] = True
                assert np.array_equal(regions.labels == t * 25 + r * 5 + c, cell)
    keep = np.zeros((2, 75), bool)
    keep[0, 26] = keep[1, :25] = True
    masks = regions.masks(keep)
    assert masks.shape == (2, n, h, w) and masks[0, 1].sum() == (regions.labels == 26).sum() and not masks[0, 0].any()
    assert masks[1, 0].all() and not masks[1, 1:].any()
    np.testing.assert_array_equal(region_frames(regions), np.repeat(np.arange(3), 25))
    with pytest.raises(ValueError, match="does not fit"):
        frame_grid(2, 4, 4, rows=5, cols=5)


def test_slico_per_frame_numbers_regions_frame_major():
    frames = np.zeros((2, 40, 40, 3), np.uint8)
    frames[0, :, 20:] = 200
    frames[1, 20:] = (0, 200, 0)
    regions = frame_superpixels(frames, n_segments=4)
    counts = regions.params["frame_regions"]
    assert regions.labels.shape == (2, 40, 40) and sum(counts) == regions.n_regions
    assert set(np.unique(regions.labels[0])) == set(range(counts[0]))
    assert set(np.unique(regions.labels[1])) == set(range(counts[0], regions.n_regions))


# -- explaining a clip ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def toy_clip(tmp_path_factory):
    """Two frames of the shapes world as a video file: a blue triangle, then a red circle beside it."""
    frames = np.full((2, 112, 112, 3), 10, np.uint8)
    yy, xx = np.mgrid[:112, :112]
    for f in frames:
        f[(yy > 30) & (yy < 80) & (np.abs(xx - 30) < (yy - 30) / 2)] = (50, 90, 230)
    frames[1][(yy - 56) ** 2 + (xx - 80) ** 2 < 16 ** 2] = (220, 40, 40)
    return write_video(tmp_path_factory.mktemp("clip") / "clip.mp4", frames, fps=2), frames


@pytest.mark.parametrize("strategy", ["greedy", "efficient", "pooled", "lazy", "bidirectional"])
def test_every_strategy_orders_a_clips_regions(strategy, shipped_model, toy_clip):
    from eagle_pipelines.api import explain, expected_forward_passes
    from eagle_pipelines.core.video import VideoAttribution

    path, frames = toy_clip
    a = explain(shipped_model, path, PROMPT, strategy=strategy, n_frames=2, rows=2, cols=3, max_new_tokens=8)
    assert isinstance(a, VideoAttribution) and a.labels.shape == (2, 112, 112) and a.n_regions == 12
    assert sorted(a.order.tolist()) == list(range(12))
    passes, exact = expected_forward_passes(strategy, 12)
    assert a.forward_passes == passes if exact else a.forward_passes >= passes
    answer = shipped_model.generate_video(shipped_model.model_clip(frames), PROMPT, max_new_tokens=8)
    assert a.answer == answer.text
    np.testing.assert_allclose(a.full_score, answer.token_probs, atol=2e-5)
    assert a.saliency().shape == (2, 112, 112)
    assert a.frame_importance().sum() == pytest.approx(1.0)
    assert a.meta["video"]["indices"] == [0, 1] and a.meta["video"]["fps"] == 2.0


def test_video_attribution_saves_and_draws(shipped_model, toy_clip, tmp_path):
    from PIL import Image

    from eagle_pipelines.api import explain
    from eagle_pipelines.core.attribution import Attribution
    from eagle_pipelines.core.plotting import save_frame_overlays
    from eagle_pipelines.core.video import VideoAttribution

    path, frames = toy_clip
    a = explain(shipped_model, path, PROMPT, n_frames=2, rows=2, cols=2, max_new_tokens=8)
    a.save(tmp_path / "a")
    back = VideoAttribution.load(tmp_path / "a.npz")
    np.testing.assert_array_equal(back.labels, a.labels)
    assert back.order.tolist() == a.order.tolist() and back.meta["video"] == a.meta["video"]
    assert Attribution.load(tmp_path / "a.npz").labels.ndim == 3
    gif = a.gif(frames, tmp_path / "a.gif", duration_ms=300)
    with Image.open(gif) as im:
        assert im.n_frames == 2 and im.info["duration"] == 300
    pngs = save_frame_overlays(a, frames, tmp_path / "frames")
    assert [p.name for p in pngs] == ["frame_00.png", "frame_01.png"] and all(p.stat().st_size for p in pngs)
    import matplotlib

    matplotlib.use("Agg")
    fig = a.plot(frames)
    assert len(fig.axes) == 4


def test_video_arguments_are_checked(shipped_model, toy_clip, tmp_path):
    from eagle_pipelines.api import explain

    path, frames = toy_clip
    with pytest.raises(ValueError, match="even integer"):
        explain(shipped_model, path, PROMPT, n_frames=3)
    with pytest.raises(ValueError, match="fewer than 16"):
        explain(shipped_model, path, PROMPT, n_frames=2, rows=40, cols=40)
    with pytest.raises(ValueError, match="apply to a video"):
        explain(shipped_model, frames[0], PROMPT, n_frames=2)
    with pytest.raises(ValueError, match="label map"):
        explain(shipped_model, frames, PROMPT, regions=RegionMap(np.zeros((2, 10, 10), np.int32), {}))


def test_eagle_explain_takes_a_video_file_and_a_folder_of_frames(shipped_model, toy_clip, tmp_path, capsys):
    from PIL import Image

    from eagle_pipelines.core.video import VideoAttribution
    from eagle_pipelines.explain_cli import main

    path, frames = toy_clip
    folder = tmp_path / "frames"
    folder.mkdir()
    for k, f in enumerate(frames):
        Image.fromarray(f).save(folder / f"{k:03d}.png")
    out = tmp_path / "out"
    assert main([str(path), "--frames", "2", "--grid", "2x2", "--max-new-tokens", "8", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "share of the search's gain per frame" in text
    for suffix in (".npz", ".json", ".png", ".gif"):
        assert (out / f"clip.mp4{suffix}").stat().st_size > 0
    from_file = VideoAttribution.load(out / "clip.mp4.npz")
    assert from_file.labels.shape == (2, 112, 112) and from_file.n_regions == 8
    assert main([str(folder), "--video", "--frames", "2", "--grid", "2x2", "--max-new-tokens", "8", "--no-plot",
                 "--out", str(out)]) == 0
    from_folder = VideoAttribution.load(out / "frames.npz")  # the same pixels (lossless video): the same result
    assert from_folder.order.tolist() == from_file.order.tolist()
    np.testing.assert_allclose(from_folder.insertion, from_file.insertion, atol=1e-6)
    assert main([str(path), "--frames", "2", "--grid", "2x2", "--max-new-tokens", "8", "--out", str(out)]) == 0
    assert "already explained from the same inputs" in capsys.readouterr().out
    assert main([str(path), "--frames", "3", "--out", str(out)]) == 2
    assert "--frames must be an even number" in capsys.readouterr().err
