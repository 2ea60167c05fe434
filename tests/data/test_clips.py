"""The embedded clips (data/clips.py, io/clip_dataset.py) and the video stage's training pieces (models/toy.py)."""

from __future__ import annotations


import numpy as np
import pytest
import yaml

from eagle_pipelines.data.clips import (
    ClipFormatError,
    ClipParams,
    clip_records,
    generate_clip,
    generate_clip_split,
)
from eagle_pipelines.data.params import ShapesParams

from tests.conftest import ROOT


@pytest.fixture(scope="module")
def shapes():
    return ShapesParams(**yaml.safe_load((ROOT / "conf/base/parameters_data_preparation.yml").read_text())["shapes"])


@pytest.fixture(scope="module")
def clips():
    return ClipParams(**yaml.safe_load((ROOT / "conf/base/parameters_clips.yml").read_text())["clips"])


def test_a_clip_is_deterministic_per_seed_split_and_index(shapes, clips):
    a, b = generate_clip(shapes, clips, "eval", 5), generate_clip(shapes, clips, "eval", 5)
    assert np.array_equal(a.frames, b.frames) and a.event_frame == b.event_frame
    assert not np.array_equal(a.frames, generate_clip(shapes, clips, "val", 5).frames)
    other_seed = shapes.model_copy(update={"seed": 1})
    assert not np.array_equal(a.frames, generate_clip(other_seed, clips, "eval", 5).frames)
    small = generate_clip_split(shapes, clips, "eval", range(3))[0]
    large = generate_clip_split(shapes, clips, "eval", range(6))[0]
    assert all(np.array_equal(small[k], large[k]) for k in small)  # a larger split keeps the clips it shares


def test_the_event_happens_in_one_frame_at_its_mask_and_distractors_stay(shapes, clips):
    lo, hi = shapes.background_range
    frames_seen = set()
    for i in range(40):
        clip = generate_clip(shapes, clips, "train", i)
        n = clips.frames
        assert clip.frames.shape == (n, shapes.image_size, shapes.image_size, 3) and clip.frames.dtype == np.uint8
        assert clip.answer == f"a {clip.event.name}"
        assert clip.event.name not in {d.name for d in clip.distractors}
        assert clips.distractors[0] <= len(clip.distractors) <= clips.distractors[1]
        masks = clip.event_masks
        assert masks[clip.event_frame].sum() > 100 and masks.sum() == masks[clip.event_frame].sum()
        rgb = np.asarray(shapes.colours[clip.event.colour])
        noise = shapes.object_noise
        for f in range(n):
            pixels = clip.frames[f][clip.event.mask].astype(int)
            if f == clip.event_frame:  # exactly the painted pixels carry the event object's colour
                assert np.all(np.abs(pixels - rgb) <= noise)
            else:  # background where it appears, in every other frame
                assert pixels.min() >= lo and pixels.max() <= hi
            for d in clip.distractors:  # static: the same place, its colour, in every frame
                assert np.all(np.abs(clip.frames[f][d.mask].astype(int) - np.asarray(shapes.colours[d.colour]))
                              <= noise)
                assert not (d.mask & clip.event.mask).any()
        frames_seen.add(clip.event_frame)
    assert frames_seen == set(range(clips.frames))  # the event frame is drawn over every frame


def test_annotations_round_trip_in_the_youtube_vis_layout(shapes, clips):
    frames, annotations = generate_clip_split(shapes, clips, "val", range(4))
    assert sorted(frames)[:2] == ["val_000000/frame_00", "val_000000/frame_01"]
    records = clip_records(annotations)
    assert [r.clip_id for r in records] == [7_000_000 + i for i in range(4)]
    for i, record in enumerate(records):
        clip = generate_clip(shapes, clips, "val", i)
        assert record.answer == clip.answer and record.event_frame == clip.event_frame
        assert record.prompt == clips.prompt
        assert np.array_equal(record.event_masks(), clip.event_masks)
        track = record.event_track
        assert [s is not None for s in track["segmentations"]] == [f == clip.event_frame for f in range(clips.frames)]
        x, y, w, h = track["bboxes"][clip.event_frame]
        rows, cols = np.nonzero(clip.event.mask)
        assert (x, y, w, h) == (cols.min(), rows.min(), cols.max() - cols.min() + 1, rows.max() - rows.min() + 1)
    broken = {**annotations, "annotations": [a for a in annotations["annotations"] if a["id"] != 1]}
    with pytest.raises(ClipFormatError, match="val_000000 has no track of its event object"):
        clip_records(broken)


def test_clip_split_dataset_saves_whole_and_refuses_changed_frames(shapes, clips, tmp_path):
    from eagle_pipelines.io.clip_dataset import ClipSplitDataset

    ds = ClipSplitDataset(str(tmp_path / "eval"))
    ds.save(generate_clip_split(shapes, clips, "eval", range(3)))
    split = ds.load()
    assert [r.name for r in split.records] == ["eval_000000", "eval_000001", "eval_000002"]
    loaded = split.clip("eval_000001")
    assert np.array_equal(loaded.frames, generate_clip(shapes, clips, "eval", 1).frames)
    stamp = (tmp_path / "eval" / "split.json").stat().st_mtime_ns
    ds.save(generate_clip_split(shapes, clips, "eval", range(3)))  # unchanged: nothing rewritten
    assert (tmp_path / "eval" / "split.json").stat().st_mtime_ns == stamp
    frame = tmp_path / "eval/images/eval_000001/frame_02.png"
    from PIL import Image

    Image.fromarray(np.zeros((112, 112, 3), np.uint8)).save(frame)
    with pytest.raises(ClipFormatError, match="eval_000001 changed since it was answered"):
        split.frames("eval_000001", loaded.sha)
    frame.write_bytes(b"not a png")
    with pytest.raises(ClipFormatError, match="eval_000001: frame 'eval_000001/frame_02.png' cannot be read"):
        split.clip("eval_000001")


def test_clip_parameters_are_validated():
    from eagle_pipelines.parameters import ParameterError, parse

    with pytest.raises(ParameterError, match="frames must be even"):
        parse("clips", {"frames": 3})
    with pytest.raises(ParameterError, match="clips.splits.val"):
        parse("clips", {"splits": {"val": 0}})


# --- the video stage's training pieces ----------------------------------------------------------------------------
def test_extend_vocabulary_keeps_every_id_and_trains(tiny_processor, tiny_model):
    import copy

    import torch

    from eagle_pipelines.models.toy import extend_vocabulary

    processor, model = copy.deepcopy(tiny_processor), copy.deepcopy(tiny_model)
    old = processor.tokenizer.get_vocab()
    rows = model.get_input_embeddings().weight.detach().clone()
    added = extend_vocabulary(model, processor, ["What appears in the video?", "a red circle"])
    tok = processor.tokenizer
    assert "What" in added and "video" in added and "red" not in added
    assert {w: tok.get_vocab()[w] for w in old} == old  # every existing token keeps its id
    assert sorted(tok.get_vocab()[w] for w in added) == list(range(len(old), len(old) + len(added)))
    assert model.get_input_embeddings().weight.shape[0] == len(tok) == model.get_output_embeddings().weight.shape[0]
    assert torch.equal(model.get_input_embeddings().weight[: len(old)], rows)
    ids = tok("What appears in the video?", add_special_tokens=False)["input_ids"]
    assert tok.unk_token_id not in ids and tok.decode(ids) == "What appears in the video?"
    assert extend_vocabulary(model, processor, ["What appears in the video?"]) == []
    model.train()
    out = model(input_ids=torch.tensor([ids]), labels=torch.tensor([ids]))
    out.loss.backward()  # the resized embeddings are trainable
    assert model.get_input_embeddings().weight.grad.shape == model.get_input_embeddings().weight.shape


def test_batch_loss_weights_images_and_clips_by_answer_tokens(tiny_processor, tiny_model, shapes, clips):
    import copy

    import torch

    from eagle_pipelines.models.qwen_vl import QwenVLAdapter
    from eagle_pipelines.models.toy import ClipSample, TrainingSample, batch_loss, encode_training_batch, \
        extend_vocabulary

    processor, model = copy.deepcopy(tiny_processor), copy.deepcopy(tiny_model)
    extend_vocabulary(model, processor, [clips.prompt])
    adapter = QwenVLAdapter(model, processor, name="tiny")
    c0, c1 = generate_clip(shapes, clips, "train", 0), generate_clip(shapes, clips, "train", 1)
    images = [TrainingSample(c0.frames[0], "Describe the image.", "a red circle and a blue square"),
              TrainingSample(c1.frames[1], "Describe the image.", "a green triangle")]
    videos = [ClipSample(c0.frames, clips.prompt, c0.answer), ClipSample(c1.frames, clips.prompt, c1.answer)]

    def encode(samples):
        return adapter.video_inputs([s.frames for s in samples], [s.prompt for s in samples],
                                    answers=[s.answer for s in samples])

    with torch.no_grad():
        alone = batch_loss(model, processor, images)
        assert torch.equal(alone, model(**encode_training_batch(processor, images)).loss)
        img_batch, vid_batch = encode_training_batch(processor, images), encode(videos)
        n_img = int((img_batch["labels"][:, 1:] != -100).sum())  # 7 + 3 answer tokens, each + <|im_end|>
        n_vid = int((vid_batch["labels"][:, 1:] != -100).sum())
        assert (n_img, n_vid) == (8 + 4, 4 + 4)
        expected = (model(**img_batch).loss * n_img + model(**vid_batch).loss * n_vid) / (n_img + n_vid)
        assert torch.allclose(batch_loss(model, processor, images + videos, encode), expected)
    with pytest.raises(ValueError, match="clip samples need a clip encoder"):
        batch_loss(model, processor, videos)
