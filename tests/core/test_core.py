"""Regions, targets, influence, the Attribution record and the resumable partition store."""

from __future__ import annotations

import numpy as np
import pytest

from eagle_pipelines.core.attribution import Attribution
from eagle_pipelines.core.influence import influence_scores
from eagle_pipelines.core.regions import RegionMap, slico
from eagle_pipelines.core.targets import phrase_positions, resolve_targets


def test_slico_gives_a_contiguous_label_map_near_the_requested_count(eval_split):
    image = next(iter(eval_split.images.values()))
    regions = slico(image, n_segments=16)
    assert regions.labels.shape == image.shape[:2] and regions.labels.dtype == np.int32
    assert set(np.unique(regions.labels)) == set(range(regions.n_regions))
    assert 8 <= regions.n_regions <= 32
    assert regions.areas().sum() == pytest.approx(1.0)
    again = slico(image, n_segments=16)
    np.testing.assert_array_equal(regions.labels, again.labels)
    assert regions.params["method"] == "slico" and regions.params["n_segments"] == 16


def test_region_masks_select_the_regions_pixels():
    labels = np.array([[0, 0, 1], [2, 2, 1]], dtype=np.int32)
    masks = RegionMap(labels, {}).masks(np.array([[True, False, False], [False, True, True]]))
    np.testing.assert_array_equal(masks[0], labels == 0)
    np.testing.assert_array_equal(masks[1], labels != 0)


def _decode(words):
    return lambda ids: " ".join(words[i] for i in ids).replace(" ,", ",")


def test_targets_resolve_words_phrases_and_positions():
    words = ["a", "red", "circle", ",", "a", "red", "square", "and", "a", "blue", "triangle"]
    decode, ids = _decode(words), list(range(len(words)))
    assert resolve_targets(decode, ids) == list(range(11))
    assert resolve_targets(decode, ids, ["circle"]) == [2]
    assert phrase_positions(decode, ids, "red square") == [5, 6]
    assert phrase_positions(decode, ids, "red", occurrence=1) == [5]
    assert phrase_positions(decode, ids, "green") == []
    assert resolve_targets(decode, ids, [9, "triangle"]) == [9, 10]
    with pytest.raises(ValueError, match="'green' does not occur"):
        resolve_targets(decode, ids, ["green"])
    with pytest.raises(ValueError, match="outside the answer"):
        resolve_targets(decode, ids, [11])


def test_influence_is_the_area_under_the_insertion_curve_above_its_minimum():
    area = np.array([0.5, 1.0])
    insertion = np.array([[0.8, 0.2], [1.0, 0.2]])
    empty = np.array([0.0, 0.2])
    # token 0: x=[0,.5,1], y=[0,.8,1]: trapezoids .2 + .45 = .65, min 0; token 1: flat .2 -> .2 - .2 = 0
    np.testing.assert_allclose(influence_scores(area, insertion, empty), [0.65, 0.0])


def _attribution(labels):
    n = int(labels.max()) + 1
    rng = np.random.default_rng(0)
    ins, dele = rng.random((n, 2)), rng.random((n, 2))
    return Attribution(order=np.arange(n)[::-1].copy(), insertion=ins, deletion=dele,
                       objective=np.mean(ins + 1 - dele, axis=1), area=np.linspace(1 / n, 1, n),
                       full_score=ins[-1], empty_score=dele[-1], labels=labels, target_positions=[0, 2],
                       target_token_ids=[5, 6], target_words=["red", "circle"], answer="a red circle",
                       meta={"image_id": 7})


def test_attribution_round_trips_and_its_saliency_ranks_earlier_regions_brighter(tmp_path):
    labels = np.repeat(np.arange(4, dtype=np.int32), 3).reshape(2, 6)
    a = _attribution(labels)
    a.save(tmp_path / "x")
    b = Attribution.load(tmp_path / "x")
    for name in ("order", "insertion", "deletion", "objective", "area", "influence", "labels"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert b.meta == {"image_id": 7} and b.target_words == ["red", "circle"]
    for style in ("remaining", "reference"):
        sal = a.saliency(style)
        per_region = [sal[labels == r].mean() for r in range(4)]
        ranks = [per_region[r] for r in a.order]
        assert ranks == sorted(ranks, reverse=True) and ranks[0] == 1.0
    assert not list(tmp_path.glob(".*tmp"))


def test_saliency_styles_computed_by_hand():
    # start = λ1·mean(empty) + λ2·(1 − mean(full)) = 0.1 + 0.1 = 0.2; objective 1.0, 1.01, 1.2, 0.7:
    # gains 0.8, 0.01, 0.19, −0.5 (the last region lowers the objective)
    labels = np.array([[2, 0, 1, 3]], dtype=np.int32)
    a = Attribution(order=np.array([2, 0, 1, 3]), insertion=np.zeros((4, 1)), deletion=np.zeros((4, 1)),
                    objective=np.array([1.0, 1.01, 1.2, 0.7]), area=np.array([0.25, 0.5, 0.75, 1.0]),
                    full_score=np.array([0.9]), empty_score=np.array([0.1]), labels=labels)
    # remaining: 1 − positive gain already realised before the region / total positive gain (1.0)
    np.testing.assert_allclose(a.saliency(), [[1.0, 0.2, 0.19, 0.0]], atol=1e-6)
    # the paper's: −(0.8, 0.81, 1.0, 1.5) min-max normalised over 0.7; the second region looks almost as bright
    # as the first
    np.testing.assert_allclose(a.saliency("reference"), [[1.0, 0.69 / 0.7, 0.5 / 0.7, 0.0]], atol=1e-6)
    with pytest.raises(ValueError, match="remaining"):
        a.saliency("rank")


def test_item_store_makes_only_missing_items_keyed_by_input_content_and_remakes_damaged_ones(tmp_path):
    from eagle_pipelines.io.executors import run_jobs
    from eagle_pipelines.io.items import ItemStore, Job, Manifest, Skipped, fingerprint

    store = ItemStore(tmp_path / "maps", kind="array")
    calls = []

    def jobs(n, content=0):
        def make(i):
            def compute():
                calls.append(i)
                if i == 2:
                    return Skipped("unreadable")
                if i == 5:
                    raise RuntimeError("boom")
                return np.full((2, 2), i + content), {"seconds": 0.1}
            return compute
        return [Job(f"level/{i}", fingerprint("map", i, content), make(i), {"image_id": i}) for i in range(n)]

    manifest = Manifest(run_jobs(store, jobs(4), "maps"))
    assert calls == [0, 1, 2, 3]
    assert list(manifest.items) == ["level/0", "level/1", "level/3"]
    assert manifest.not_made() == {"level/2": "unreadable"}
    array, info = manifest.load("level/3")
    assert array[0, 0] == 3 and info == {"seconds": 0.1}
    # a failing item does not stop the others and is not stored (retried next time); a skip is kept
    calls.clear()
    manifest = Manifest(run_jobs(store, jobs(6), "maps"))
    assert calls == [4, 5] and manifest.failed["level/5"]["reason"] == "RuntimeError: boom"
    assert "level/2" in manifest.skipped
    # other input content under the same keys: every item made anew, never the old one read back
    calls.clear()
    manifest = Manifest(run_jobs(store, jobs(4, content=10), "maps"))
    assert calls == [0, 1, 2, 3] and manifest.load("level/1")[0][0, 0] == 11
    # a damaged file is named, removed and made again
    victim = tmp_path / "maps" / "level" / f"1.{fingerprint('map', 1, 10)}.npz"
    victim.write_bytes(b"PK\x03\x04 truncated")
    calls.clear()
    manifest = Manifest(run_jobs(store, jobs(4, content=10), "maps"))
    assert calls == [1] and manifest.load("level/1")[0][0, 0] == 11
    with pytest.raises(Exception, match="relative path"):
        store.put("../escape", "f", (np.zeros((1, 1)), {}))


def test_images_are_taken_as_arrays_pil_images_or_paths_and_bad_ones_are_named(tmp_path):
    from PIL import Image

    from eagle_pipelines.core.images import as_rgb

    rgb = np.zeros((4, 6, 3), np.uint8)
    rgb[1, 2] = (200, 10, 30)
    Image.fromarray(rgb).save(tmp_path / "x.png")
    for given in (rgb, Image.fromarray(rgb), tmp_path / "x.png", str(tmp_path / "x.png"), rgb / 255.0,
                  np.dstack([rgb, np.full((4, 6), 255, np.uint8)]), rgb.astype(np.int64)):
        out = as_rgb(given)
        assert out.dtype == np.uint8 and out.shape == (4, 6, 3)
        np.testing.assert_array_equal(out, rgb)
    grey = as_rgb(rgb[..., 0])
    assert grey.shape == (4, 6, 3) and (grey[1, 2] == 200).all()
    with pytest.raises(FileNotFoundError, match="nothere.png"):
        as_rgb(tmp_path / "nothere.png")
    (tmp_path / "bad.png").write_text("not an image")
    with pytest.raises(ValueError, match="bad.png' cannot be read"):
        as_rgb(tmp_path / "bad.png")
    with pytest.raises(ValueError, match=r"\[0, 1\]; this one spans \[0, 200\]"):
        as_rgb(rgb.astype(float))
    with pytest.raises(ValueError, match="5 channels"):
        as_rgb(np.zeros((4, 6, 5)))
    with pytest.raises(ValueError, match="got list"):
        as_rgb([1, 2, 3])


def test_plot_shows_an_image_of_another_size_at_the_attributions_resolution(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from PIL import Image

    labels = np.repeat(np.arange(4, dtype=np.int32), 3).reshape(2, 6)
    a = _attribution(labels)
    photo = np.zeros((8, 24, 3), np.uint8)  # 4x the model resolution, as a file
    Image.fromarray(photo).save(tmp_path / "photo.png")
    fig = a.plot(tmp_path / "photo.png")
    shown = fig.axes[0].get_images()[0].get_array()
    assert shown.shape[:2] == (2, 6)
