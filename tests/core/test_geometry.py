"""Ground truth in photo pixels goes through each processor's own resize, crop and padding (core/geometry.py).

LLaVA-1.5's processor resizes the shortest edge and centre-crops: an object outside the crop must not land inside
the model image (it did when the whole photo's mask was squashed onto it), and an object cut by the crop keeps only
its visible part. Checked against the processor itself, run with nearest resampling on the object's mask.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import CLIPImageProcessor, LlavaImageProcessor

from eagle_pipelines.core.evaluate import object_at, score_methods
from eagle_pipelines.core.geometry import PhotoGrid
from eagle_pipelines.models.llava import LlavaAdapter

PHOTO = (40, 30)  # h, w: shortest edge 30 -> 28, so 40 -> 37 rows, centre crop 28 drops rows 0-3 and 32-36


class _Processor:
    def __init__(self, image_processor):
        self.image_processor = image_processor


def _adapter(image_processor) -> LlavaAdapter:
    return LlavaAdapter(torch.nn.Identity(), _Processor(image_processor))


def _clip():
    return CLIPImageProcessor(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28})


def _processor_mask(image_processor, mask: np.ndarray) -> np.ndarray:
    """The processor's own view of a mask: the mask as an image, nearest resampling, no rescale or normalise."""
    image = np.repeat(mask[..., None].astype(np.uint8) * 255, 3, axis=-1)
    out = image_processor(images=[image], do_rescale=False, do_normalize=False, return_tensors="np",
                          resample=Image.Resampling.NEAREST)["pixel_values"][0]
    return out[0] > 127


def _objects():
    above = np.zeros(PHOTO, dtype=bool)
    above[0:3, :] = True  # wholly in the rows the crop drops
    cut = np.zeros(PHOTO, dtype=bool)
    cut[30:40, 5:15] = True  # straddles the crop's lower edge
    return above, cut


def test_cropping_processor_drops_an_object_outside_the_crop_and_cuts_one_it_straddles():
    ip = _clip()
    grid = _adapter(ip).photo_grid(*PHOTO)
    assert grid.model_shape == (28, 28)
    # rows: resize 40 -> 37 (scale 37/40), crop from row 4 of the resized image
    centres = (np.arange(28) + 4 + 0.5) * 40 / 37  # model row centres in photo rows (a tie may round down)
    assert (np.abs(grid.rows + 0.5 - centres) <= 0.5 + 1e-6).all()
    assert grid.rows[0] == 4 and grid.rows[-1] == 34
    above, cut = _objects()
    for obj in (above, cut):
        np.testing.assert_array_equal(grid.to_model(obj), _processor_mask(ip, obj))
    assert not grid.to_model(above).any()
    squashed = np.asarray(Image.fromarray(above).resize((28, 28), Image.Resampling.NEAREST))
    assert squashed.any()  # the old mapping put the object the model never sees into its image
    seen = grid.to_model(cut)
    assert seen.any() and seen.sum() < np.asarray(Image.fromarray(cut).resize((28, 28))).sum()
    rows = np.flatnonzero(seen.any(axis=1))
    assert rows.max() == 27 and grid.rows[rows.min()] >= 30


def test_point_game_is_undefined_for_an_object_the_crop_removes_and_scored_on_the_visible_part():
    grid = _adapter(_clip()).photo_grid(*PHOTO)
    above, cut = _objects()
    saliency = np.zeros((28, 28), dtype=np.float32)
    saliency[0, :] = 1.0  # the peak on the model image's top row: where the squashed object used to land

    def scorer(masks):
        return masks.reshape(len(masks), -1).mean(axis=1, keepdims=True)

    scorer.target_positions = (0,)
    row = score_methods(scorer, {"m": (saliency, None)}, 4, object_at(grid, above, (0, 0, 30, 3)))[0]
    assert np.isnan(row["point_game_box"]) and np.isnan(row["point_game_mask"])
    row = score_methods(scorer, {"m": (saliency, None)}, 4, object_at(grid, cut, (5, 30, 10, 10)))[0]
    assert row["point_game_mask"] == 0.0 and row["point_game_box"] == 0.0
    saliency[27, 10] = 2.0  # inside the visible part of the cut object
    row = score_methods(scorer, {"m": (saliency, None)}, 4, object_at(grid, cut, (5, 30, 10, 10)))[0]
    assert row["point_game_mask"] == 1.0 and row["point_game_box"] == 1.0


def test_pad_to_square_processor_marks_padding_and_keeps_objects_out_of_it():
    ip = LlavaImageProcessor(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28}, do_pad=True)
    grid = _adapter(ip).photo_grid(40, 20)  # padded to 40x40 with 10 columns each side, then resized to 28
    assert (grid.rows >= 0).all()
    padded = np.flatnonzero(grid.cols < 0)
    assert len(padded) > 0 and padded.min() == 0 and padded.max() == 27
    full = np.ones((40, 20), dtype=bool)
    np.testing.assert_array_equal(grid.to_model(full), _processor_mask(ip, full))
    assert not grid.to_model(full)[:, padded].any()


def test_a_plain_resize_maps_like_nearest_resampling_and_back():
    grid = PhotoGrid.from_source(
        np.asarray(Image.fromarray(np.arange(40 * 30, dtype=np.int32).reshape(40, 30)).resize(
            (15, 20), Image.Resampling.NEAREST)), (40, 30))
    assert grid.model_shape == (20, 15)
    mask = np.zeros((40, 30), dtype=bool)
    mask[10:20, 6:12] = True
    np.testing.assert_array_equal(grid.to_model(mask),
                                  np.asarray(Image.fromarray(mask).resize((15, 20), Image.Resampling.NEAREST)))
    model_map = np.arange(20 * 15, dtype=np.float32).reshape(20, 15)
    back = grid.to_photo(model_map)
    assert back.shape == (40, 30)
    np.testing.assert_array_equal(back[grid.rows][:, grid.cols], model_map)  # sampled pixels take their value
    assert back[0, 0] == back[1, 1] == model_map[0, 0]  # and their neighbours the nearest model pixel's
    assert PhotoGrid.identity((4, 5)).is_identity()


def test_a_map_goes_back_to_the_photo_with_the_cropped_rows_at_the_minimum():
    grid = _adapter(_clip()).photo_grid(*PHOTO)
    model_map = np.random.default_rng(0).random((28, 28)).astype(np.float32) + 1.0
    back = grid.to_photo(model_map)
    assert back.shape == PHOTO
    assert (back[:3] == model_map.min()).all() and (back[-3:] == model_map.min()).all()  # cropped off
    photo_row = int(grid.rows[10])
    np.testing.assert_array_equal(back[photo_row, grid.cols], model_map[10])


def test_a_non_separable_source_is_refused():
    source = np.arange(16).reshape(4, 4)
    source[0, 0], source[0, 1] = source[0, 1], source[0, 0]
    with pytest.raises(ValueError, match="not separable"):
        PhotoGrid.from_source(source, (4, 4))
