"""Metrics on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from eagle_pipelines.core.metrics import (
    Curves,
    MetricError,
    deletion_auc,
    faithfulness,
    highest_confidence,
    insertion_auc,
    pixel_order_masks,
    point_game,
    sensitive_tokens,
)


def _curves():
    # two steps at areas 0.5 and 1; token 0 is visual (0 -> 0.6 -> 1), token 1 a prior (0.9 throughout)
    return Curves(area=np.array([0.5, 1.0]),
                  insertion=np.array([[0.6, 0.9], [1.0, 0.9]]),
                  deletion=np.array([[0.2, 0.9], [0.0, 0.9]]))


def test_insertion_and_deletion_auc_are_trapezoids_with_the_reference_start_points():
    c = _curves()
    # insertion: x [0, .5, 1], y = [mean(0, .9), mean(.6, .9), mean(1, .9)] = [.45, .75, .95]
    assert insertion_auc(c) == pytest.approx(0.5 * (0.45 + 0.75) / 2 + 0.5 * (0.75 + 0.95) / 2)
    # deletion: y = [mean(1, .9), mean(.2, .9), mean(0, .9)] = [.95, .55, .45]
    assert deletion_auc(c) == pytest.approx(0.5 * (0.95 + 0.55) / 2 + 0.5 * (0.55 + 0.45) / 2)
    assert highest_confidence(c) == pytest.approx(0.95)


def test_sensitive_tokens_keep_only_tokens_the_image_moves():
    c = _curves()
    assert sensitive_tokens(c).tolist() == [0]
    row = faithfulness(c)
    # token 0 alone: insertion y = [0, .6, 1] -> .15 + .4 = .55; deletion y = [1, .2, 0] -> .3 + .05 = .35
    assert row["insertion_auc_sensitive"] == pytest.approx(0.55)
    assert row["deletion_auc_sensitive"] == pytest.approx(0.35)
    assert row["highest_confidence_sensitive"] == pytest.approx(1.0)
    assert row["n_sensitive_tokens"] == 1


def test_no_sensitive_token_is_reported_as_missing_and_an_empty_token_set_is_an_error():
    flat = Curves(np.array([0.5, 1.0]), np.full((2, 2), 0.5), np.full((2, 2), 0.5))
    row = faithfulness(flat)
    assert row["insertion_auc_sensitive"] is None and row["n_sensitive_tokens"] == 0
    with pytest.raises(MetricError, match="empty token set"):
        insertion_auc(flat, np.array([], dtype=int))
    with pytest.raises(MetricError, match="shapes disagree"):
        Curves(np.array([1.0]), np.zeros((2, 1)), np.zeros((2, 1)))


def test_point_game_box_mask_and_ties():
    sal = np.zeros((4, 6))
    sal[1, 4] = 1.0
    assert point_game(sal, box=(3, 0, 2, 2))  # x 3..4, y 0..1 holds (1, 4)
    assert not point_game(sal, box=(0, 0, 3, 4))
    mask = np.zeros((4, 6), bool)
    mask[1, 4] = True
    assert point_game(sal, mask=mask)
    assert not point_game(sal, mask=np.roll(mask, 1, axis=1))
    tie = np.ones((4, 6))
    assert point_game(tie, mask=np.roll(mask, 1, axis=1))  # a flat map's maximum is everywhere
    with pytest.raises(MetricError, match="exactly one"):
        point_game(sal)
    with pytest.raises(MetricError, match="no pixel"):
        point_game(sal, mask=np.zeros((4, 6), bool))


def test_pixel_protocol_keeps_the_top_fraction_of_pixels():
    sal = np.array([[0.1, 0.9], [0.5, 0.9]])
    masks, area = pixel_order_masks(sal, steps=2)
    assert area.tolist() == [0.5, 1.0]
    assert masks[0].tolist() == [[False, True], [False, True]]  # the two 0.9 pixels
    assert masks[1].all()
    masks4, area4 = pixel_order_masks(sal, steps=4)
    assert masks4[0].tolist() == [[False, True], [False, False]]  # tie broken by raster order
    assert masks4[2].tolist() == [[False, True], [True, True]]


def test_the_reports_headline_table_compares_methods_under_the_pixel_protocol():
    import pandas as pd

    from eagle_pipelines.pipelines.experiment.report import headline

    metrics = pd.DataFrame([
        {"method": "eagle", "level": "word", "protocol": "pixels", "n_samples": 3, "insertion_auc": 0.9,
         "deletion_auc": 0.2, "ahc": 1.0, "point_game_mask": 1.0},
        {"method": "eagle", "level": "word", "protocol": "regions", "n_samples": 3, "insertion_auc": 0.95,
         "deletion_auc": 0.1, "ahc": 1.0, "point_game_mask": 1.0},
        {"method": "tam", "level": "word", "protocol": "pixels", "n_samples": 3, "insertion_auc": 0.6,
         "deletion_auc": 0.5, "ahc": 1.0, "point_game_mask": 0.0},
        {"method": "random", "level": "sentence", "protocol": "pixels", "n_samples": 2, "insertion_auc": 0.7,
         "deletion_auc": 0.7, "ahc": 0.9, "point_game_mask": None},
        {"method": "eagle", "level": "sentence", "protocol": "pixels", "n_samples": 2, "insertion_auc": 0.8,
         "deletion_auc": 0.4, "ahc": 0.9, "point_game_mask": None},
    ])
    table = headline(metrics)
    assert list(zip(table.level, table.method)) == [("sentence", "eagle"), ("sentence", "random"),
                                                    ("word", "eagle"), ("word", "tam")]
    assert table.loc[2, "insertion_auc"] == 0.9  # the pixel row, not the region row
    assert list(table.columns) == ["level", "method", "n_samples", "insertion_auc", "deletion_auc",
                                   "point_game_mask"]
