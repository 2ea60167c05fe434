"""The figures read at a glance and show what they claim: the attribution display (greyscale base, top regions lit
and numbered, smoothing, sensitivity scaling), each token's own map, the reference's three figure types, curves
whose legends stay off the data, the report explorer's data and the kedro-viz previews. Synthetic attributions
whose values are worked out by hand; no model."""

from __future__ import annotations

import base64
import io
import json

import matplotlib
import numpy as np
import pytest
from PIL import Image

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from eagle_pipelines.core.attribution import Attribution  # noqa: E402
from eagle_pipelines.core.plotting import (  # noqa: E402
    attribution_display,
    outlined,
    sensitivity,
    sensitivity_scale,
    smooth,
    token_saliency,
    top_mask,
)
from eagle_pipelines.reporting import figures  # noqa: E402


def quadrants(size: int = 40) -> np.ndarray:
    """Four regions of a quarter of the image each: 0 top left, 1 top right, 2 bottom left, 3 bottom right."""
    half = size // 2
    labels = np.zeros((size, size), np.int32)
    labels[:half, half:], labels[half:, :half], labels[half:, half:] = 1, 2, 3
    return labels


def two_tokens(**meta) -> Attribution:
    """Order [2, 0, 1, 3]. Token 0 ("red") is decided by the first region (0.1 -> 0.9), token 1 ("circle") by the
    second (0.2 -> 0.8). Objective (λ = 1, mean over tokens): 1.1, 1.7, 1.7, 1.7 from 0.3 on the empty set."""
    ins = np.array([[0.9, 0.2], [0.9, 0.8], [0.9, 0.8], [0.9, 0.8]])
    dele = np.array([[0.1, 0.8], [0.1, 0.2], [0.1, 0.2], [0.1, 0.2]])
    return Attribution(order=np.array([2, 0, 1, 3]), insertion=ins, deletion=dele,
                       objective=np.array([1.1, 1.7, 1.7, 1.7]), area=np.array([0.25, 0.5, 0.75, 1.0]),
                       full_score=np.array([0.9, 0.8]), empty_score=np.array([0.1, 0.2]), labels=quadrants(),
                       target_positions=[1, 2], target_token_ids=[5, 6], target_words=["red", "circle"],
                       answer="a red circle", prompt="Describe the image.",
                       meta={"image_id": 7, "level": "sentence", **meta})


def weak_word() -> Attribution:
    """A word the image barely moves: mean insertion at most 0.4 against 0.2 on a black image."""
    return Attribution(order=np.array([1, 0, 2, 3]), insertion=np.array([[0.3], [0.35], [0.4], [0.4]]),
                       deletion=np.array([[0.35], [0.3], [0.25], [0.2]]), objective=np.array([0.95, 1.05, 1.15, 1.2]),
                       area=np.array([0.25, 0.5, 0.75, 1.0]), full_score=np.array([0.4]),
                       empty_score=np.array([0.2]), labels=quadrants(), target_positions=[2],
                       target_token_ids=[6], target_words=["circle"], answer="a red circle",
                       meta={"image_id": 7, "level": "word", "bbox": [20, 0, 20, 20], "category": "red circle"})


# --- what a display shows -----------------------------------------------------------------------------------------
def test_each_token_has_its_own_map_over_the_same_order():
    a = two_tokens()
    # token 0: all its gain (1.6) comes with region 2, the first of the order; the rest adds nothing
    np.testing.assert_allclose(token_saliency(a, 0)[[0, 0, 39, 39], [0, 39, 0, 39]], [0, 0, 1, 0])
    # token 1: nothing from region 2, all of its 1.2 with region 0: both are still "ahead of" its gain
    np.testing.assert_allclose(token_saliency(a, 1)[[0, 0, 39, 39], [0, 39, 0, 39]], [1, 0, 1, 0])
    # the mean over the tokens (Attribution.saliency): gains 0.8 then 0.6 of 1.4
    np.testing.assert_allclose(a.saliency()[[0, 0, 39, 39], [0, 39, 0, 39]], [1 - 0.8 / 1.4, 0, 1, 0], atol=1e-6)


def test_sensitivity_scales_a_weak_word_as_the_reference_does():
    assert sensitivity(two_tokens()) == pytest.approx(0.85 - 0.15)
    assert sensitivity_scale(two_tokens()) == 1.0  # 1.5 x 0.7 is capped at 1
    assert sensitivity(weak_word()) == pytest.approx(0.2)
    assert sensitivity_scale(weak_word()) == pytest.approx(0.3)


def test_the_lit_area_is_the_first_regions_up_to_keep_or_the_top_pixels():
    a = two_tokens()
    assert top_mask(a.saliency(), 0.25, a.labels, a.order).sum() == 400  # region 2 alone covers a quarter
    lit = top_mask(a.saliency(), 0.3, a.labels, a.order)  # one more region needed: 2 and 0
    assert set(np.unique(a.labels[lit])) == {0, 2} and lit.mean() == 0.5
    ramp = np.tile(np.linspace(0, 1, 100), (10, 1))
    assert top_mask(ramp, 0.2).sum() == 200 and top_mask(ramp, 0.2)[:, 80:].all()


def test_smoothing_follows_the_reference_and_keeps_small_images_readable():
    step = np.zeros((200, 200), np.float32)
    step[:, :100] = 1
    smoothed = smooth(step)  # 1/20: 10 x 10 cells
    assert smoothed.shape == step.shape
    assert smoothed[:, 0].min() > 0.99 and smoothed[:, -1].max() < 0.01
    assert 0.3 < smoothed[100, 100] < 0.7 and np.all(np.diff(smoothed[100]) <= 1e-6)
    assert smoothed.mean() == pytest.approx(0.5, abs=0.01)
    # 40 px: 1/20 would leave 2 cells; at least 6 are kept, so a quadrant stays a quadrant
    small = smooth(quadrants().astype(np.float32) / 3)
    assert small[5, 5] < 0.05 and small[35, 35] > 0.95
    np.testing.assert_array_equal(smooth(step, factor=1), step)


def test_the_display_ignores_the_objects_colour_lights_the_top_regions_and_numbers_them():
    a = two_tokens()
    red = np.zeros((40, 40, 3), np.uint8)
    red[..., 0] = 200
    green = np.zeros((40, 40, 3), np.uint8)
    green[..., 1] = 102  # the same luminance as the red
    on_red = attribution_display(red, a.saliency(), labels=a.labels, order=a.order, numbers=False)
    on_green = attribution_display(green, a.saliency(), labels=a.labels, order=a.order, numbers=False)
    assert on_red.rgb.shape == (280, 280, 3)  # upscaled by 7 to a short side of at least 256
    assert np.abs(on_red.rgb.astype(int) - on_green.rgb).max() <= 2  # a greyscale base: colour does not leak

    shown = on_red.rgb.astype(float).sum(axis=2)
    lit, dimmed = shown[150:270, 10:130].mean(), shown[150:270, 150:270].mean()  # region 2 vs region 3
    assert lit > 2.5 * dimmed
    # ranks 1-3 sit inside regions 2, 0 and 1 (the order), at the upscaled size
    big = np.kron(a.labels, np.ones((7, 7), np.int32))
    assert [(r, int(big[int(y), int(x)])) for r, y, x in on_red.ranks] == [(1, 2), (2, 0), (3, 1)]
    numbered = attribution_display(red, a.saliency(), labels=a.labels, order=a.order)
    y, x = (int(v) for v in numbered.ranks[0][1:])
    assert not np.array_equal(numbered.rgb[y - 8:y + 8, x - 8:x + 8], on_red.rgb[y - 8:y + 8, x - 8:x + 8])

    # sensitivity scaling pulls the first region's colour down the colour map (yellow -> blue-violet)
    scaled = attribution_display(red, a.saliency(), labels=a.labels, order=a.order, scale=0.3, numbers=False)
    assert scaled.rgb[150:270, 10:130].astype(float).sum(axis=2).mean() < 0.8 * lit


def test_outlines_and_boxes_are_drawn_where_they_belong():
    mask = np.zeros((40, 40), bool)
    mask[10:20, 10:20] = True
    picture = outlined(np.zeros((40, 40, 3), np.uint8), [(mask, (255, 40, 40))])
    red = np.all(picture == (255, 40, 40), axis=2)
    rows, cols = np.nonzero(red)
    assert red.any() and rows.min() == 70 and rows.max() == 139 and cols.min() == 70 and cols.max() == 139
    assert not red[80:130, 80:130].any()  # the outline, not the area
    boxed = attribution_display(np.zeros((40, 40, 3), np.uint8), np.zeros((40, 40)), keep=1.0,
                                boxes=[(20, 0, 20, 20)]).rgb
    assert np.all(boxed[50, 140] == 255) and np.all(boxed[50, 139] == 0)  # x = 20 (x 7), edged in black


# --- the reference's figure types ---------------------------------------------------------------------------------
def _texts_with_boxes(fig) -> list:
    return [t for ax in fig.axes for t in ax.texts if t.get_bbox_patch() is not None]


def _overlaps(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def _title_clear_of_panels(fig) -> None:
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    top = fig._suptitle.get_window_extent(renderer)
    for ax in fig.axes:
        assert not _overlaps(top, ax.get_window_extent(renderer)), "the figure's title is drawn over a panel"
        if ax.get_title():
            assert not _overlaps(top, ax.title.get_window_extent(renderer)), ax.get_title()


def test_sentence_figure_has_an_influence_strip_a_colour_bar_and_a_clear_title():
    a = two_tokens()
    image = np.full((40, 40, 3), 90, np.uint8)
    fig = figures.sentence_figure([(image, a)], 0, [{"tam": np.linspace(0, 1, 1600).reshape(40, 40)}])
    titles = [ax.get_title() for ax in fig.axes]
    assert {"EAGLE", "random floor", "TAM"} <= set(titles)
    assert all(ax.title.get_fontsize() >= 9 for ax in fig.axes if ax.get_title())
    assert any(ax.get_ylabel() == "saliency" for ax in fig.axes)  # the maps' colour bar
    tokens = _texts_with_boxes(fig)
    assert [t.get_text() for t in tokens] == ["red", "circle"]
    # "circle" (influence 0.6) is drawn darker than "red" (0.8 - 0.1 ... see influence_scores)
    darkness = [1 - np.mean(t.get_bbox_patch().get_facecolor()[:3]) for t in tokens]
    assert (darkness[0] > darkness[1]) == (a.influence[0] > a.influence[1])
    _title_clear_of_panels(fig)
    plt.close(fig)


def test_word_figure_scales_the_map_by_sensitivity_and_highlights_the_word():
    weak = weak_word()
    fig = figures.word_figure([(np.full((40, 40, 3), 90, np.uint8), weak)], [{"tam": np.ones((40, 40))}],
                              [["a", "red", "circle"]])
    eagle = next(ax for ax in fig.axes if ax.get_title().startswith("EAGLE"))
    assert "sensitivity 0.20" in eagle.get_title() and "\u00d7 0.30" in eagle.get_title()
    words = _texts_with_boxes(fig)
    assert [t.get_text() for t in words] == ["a", "red", "circle"]
    highlighted = [tuple(np.round(t.get_bbox_patch().get_facecolor()[:3], 2)) for t in words]
    assert highlighted == [(1.0, 1.0, 1.0), (1.0, 1.0, 1.0), figures.HIGHLIGHT]  # position 2 only
    # the white box of the object: x 20..40, y 0..20 at 7x
    picture = eagle.get_images()[0].get_array()
    assert np.all(picture[60, 140] == 255) and np.all(picture[60, 139] == 0)
    _title_clear_of_panels(fig)
    plt.close(fig)


def _six_regions() -> Attribution:
    labels = np.repeat(np.repeat(np.arange(6, dtype=np.int32).reshape(2, 3), 20, axis=0), 20, axis=1)
    ins = np.linspace(0.1, 0.9, 6)[:, None]
    return Attribution(order=np.array([3, 4, 5, 0, 1, 2]), insertion=ins, deletion=ins[::-1].copy(),
                       objective=np.linspace(1, 2, 6), area=np.arange(1, 7) / 6, full_score=np.array([0.9]),
                       empty_score=np.array([0.1]), labels=labels, target_positions=[0], target_token_ids=[3],
                       target_words=["No"], answer="No", meta={"image_id": 9})


def test_hallucination_figure_shows_the_removal_sequence_with_its_answers_and_the_trigger():
    a = _six_regions()
    # the k lowest-ranked removed: k = 1 removes region 2, ..., k = 5 removes 4 (order[-5]): the trigger
    fix = {"ks": [1, 2, 3, 4, 5], "answers": ["Yes", "Yes", "Yes, a square", "Yes", "No"], "corrected_k": 5,
           "amcr": 5 / 6, "removed_area": [k / 6 for k in range(1, 6)], "correcting_region": 4,
           "removed_regions": [4, 5, 0, 1, 2], "order": [3, 4, 5, 0, 1, 2]}
    sample = {"image": np.full((40, 60, 3), 120, np.uint8), "attribution": a, "correction": fix,
              "question_id": 12, "text": "Is there a blue square in the image?", "label": "no", "answer": "Yes",
              "cause_mask": a.labels == 4}
    fig = figures.hallucination_figure([sample], most_steps=4)
    steps = [ax for ax in fig.axes if ax.get_title().lstrip("\u2026 ").startswith("step")]
    # five steps, four drawn: spread, the first and the correcting one always
    assert [ax.get_title().split(":")[0] for ax in steps] == ["step 1", "step 2", "\u2026 step 4", "step 5"]
    assert [ax.get_xlabel() for ax in steps] == ["Yes", "Yes", "Yes", "No"]
    assert steps[-1].xaxis.label.get_color() == "#1a7f37" and steps[0].xaxis.label.get_color() == "#b00020"
    first, last = (ax.get_images()[0].get_array() for ax in (steps[0], steps[-1]))
    assert np.all(first == (255, 215, 0), axis=2).any()  # the region removed at step 1, in yellow
    assert np.all(last == (255, 40, 40), axis=2).any()  # the trigger, in red
    assert np.all(last == (40, 220, 40), axis=2).any()  # the true cause, in green, still visible
    # removed regions are black as the model saw them: at step 5 only region 3 (bottom left) keeps its pixels
    assert last[200, 50].tolist() == [120, 120, 120] and last[50, 50].tolist() == [0, 0, 0]
    assert last[200, 350].tolist() == [0, 0, 0] and first[200, 50].tolist() == [120, 120, 120]
    first_panel = next(ax for ax in fig.axes if ax.get_title().startswith("Q12"))
    assert "hallucinated: Yes" in first_panel.get_xlabel() and "revised: No" in first_panel.get_xlabel()
    _title_clear_of_panels(fig)
    plt.close(fig)


# --- curves -------------------------------------------------------------------------------------------------------
def _curve_rows() -> list[dict]:
    rows = []
    for method, ins, dele in (("eagle", [0, 1, 1], [1, 0, 0]), ("captum", [0, 1, 1], [1, 0, 0]),
                              ("tam", [0, 0.5, 1], [1, 0.5, 0]), ("random", [0, 0, 1], [1, 1, 0])):
        for protocol in ("regions", "pixels") if method in ("eagle", "random") else ("pixels",):
            rows.append({"method": method, "level": "sentence", "protocol": protocol,
                         "curve": {"x": [0, 0.5, 1], "insertion": ins, "deletion": dele}})
    return rows


def test_curves_show_every_method_distinguishably_with_the_legend_off_the_data():
    fig = figures.method_curves(_curve_rows(), "sentence", "pixels")
    legend = fig.legends[0]
    labels = [t.get_text() for t in legend.get_texts()]
    assert labels == ["EAGLE: ins 0.750, del 0.250", "Captum FA: ins 0.750, del 0.250",
                      "TAM: ins 0.500, del 0.500", "random: ins 0.250, del 0.750"]  # EAGLE first, the floor last
    fig.canvas.draw()
    box = legend.get_window_extent(fig.canvas.get_renderer())
    for ax in fig.axes:
        assert not _overlaps(box, ax.get_window_extent(fig.canvas.get_renderer()))
    # EAGLE and Captum lie on the same curve: both stay visible (EAGLE wide underneath, Captum thin on top)
    lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
    assert lines["eagle"].get_linewidth() > 2 * lines["captum"].get_linewidth()
    assert lines["eagle"].get_zorder() < lines["captum"].get_zorder()
    styles = {(line.get_color(), str(line.get_linestyle()), str(line.get_dashes() if hasattr(line, "get_dashes")
                                                                 else "")) for line in lines.values()}
    assert len({line.get_color() for line in lines.values()}) == 4 and len(styles) == 4
    plt.close(fig)


def test_amcr_curves_give_each_method_its_line_and_numbers():
    records = [{"methods": {"eagle": {"amcr": 0.05, "corrected": True}, "random": {"amcr": 1.0, "corrected": False}}},
               {"methods": {"eagle": {"amcr": 0.2, "corrected": True}, "random": {"amcr": 0.5, "corrected": True}}}]
    fig = figures.amcr_curves(records, ["eagle", "random"], 0.1)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["EAGLE: AMCR 0.125, CSR 0.50", "random: AMCR 0.750, CSR 0.00"]
    eagle = next(line for line in fig.axes[0].get_lines() if line.get_label() == "eagle")
    x, y = eagle.get_data()
    assert y[np.searchsorted(x, 0.1)] == 0.5 and y[-1] == 1.0  # half corrected by 10 %, all by 20 %
    plt.close(fig)


# --- the explorer's data and the page -----------------------------------------------------------------------------
def _explorer_item():
    from eagle_pipelines.reporting.explorer import ExplorerImage

    sentence, word = two_tokens(), weak_word()
    item = ExplorerImage(7, np.full((40, 40, 3), 90, np.uint8), ("sentence/7", sentence), [("word/7_1", word)])
    ramp = np.linspace(0, 1, 1600).reshape(40, 40)
    item.maps = {"sentence/7": {"tam": ramp}, "word/7_1": {"tam": ramp[::-1].copy()}}
    item.random = {"sentence/7": np.array([3, 2, 1, 0]), "word/7_1": np.array([0, 1, 2, 3])}
    item.curves = {"sentence/7": {"eagle": {"x": [0, 0.5, 1], "insertion": [0.1, 0.9, 0.9],
                                            "deletion": [0.9, 0.2, 0.1]},
                                  "tam": {"x": [0, 0.5, 1], "insertion": [0.1, 0.3, 0.9],
                                          "deletion": [0.9, 0.8, 0.1]}}}
    return item


def test_explorer_data_gives_each_token_its_map_curves_and_influence():
    from eagle_pipelines.reporting.explorer import explorer_data

    data = explorer_data([_explorer_item()])
    assert [m["id"] for m in data["methods"]] == ["eagle", "random", "tam"]
    image = data["images"][0]
    assert [t["text"] for t in image["tokens"]] == ["red", "circle"]
    assert [t["object"] for t in image["tokens"]] == [None, "w0"]  # position 2 belongs to the explained object
    views = image["views"]
    assert views["t0"]["maps"]["eagle"] != views["t1"]["maps"]["eagle"]  # each token its own map
    assert set(views["answer"]["maps"]) == {"eagle", "random", "tam"} and set(views["t0"]["maps"]) == {"eagle"}
    assert all(src.startswith("data:image/jpeg;base64,") for maps in views["answer"]["maps"].values()
               for src in maps.values())
    # token 0's own curves: the black image (0.1) first, then its insertion curve; AUC by the trapezoid rule
    assert views["t0"]["curves"]["eagle"]["x"] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert views["t0"]["curves"]["eagle"]["ins"] == [0.1, 0.9, 0.9, 0.9, 0.9]
    assert views["t0"]["curves"]["eagle"]["auc"][0] == pytest.approx(0.8)
    assert views["answer"]["curves"]["tam"]["auc"] == [pytest.approx(0.4), pytest.approx(0.65)]
    assert views["w0"]["sensitivity"] == pytest.approx(0.2) and views["w0"]["scale"] == pytest.approx(0.3)
    assert views["t1"]["influence"] == pytest.approx(float(two_tokens().influence[1]), abs=1e-3)
    map_bytes = base64.b64decode(views["t0"]["maps"]["eagle"]["colour"].split(",", 1)[1])
    assert max(Image.open(io.BytesIO(map_bytes)).size) <= 288 and len(map_bytes) < 30_000


def test_the_explorer_section_is_self_contained_and_its_data_reads_back():
    from eagle_pipelines.reporting.explorer import explorer_data, explorer_html

    data = explorer_data([_explorer_item()])
    data["images"][0]["answer"] = "a </script><script>alert(1)</script>"
    page = explorer_html(data)
    assert "</script><script>alert" not in page  # the answer cannot close the data block
    assert 'src="http' not in page and "<link" not in page and "import " not in page  # nothing fetched
    start = page.index('id="explorer-data">') + len('id="explorer-data">')
    assert json.loads(page[start:page.index("</script>", start)]) == data
    assert explorer_html(None) == "" and explorer_html({"images": []}) == ""


def test_a_large_figure_is_embedded_with_a_palette_and_a_small_one_as_it_is():
    from eagle_pipelines.reporting.html_page import image_src

    figure, ax = plt.subplots(figsize=(12, 8))
    ax.imshow(np.random.default_rng(0).normal(size=(300, 450)), cmap="viridis")  # a photo-like, noisy figure
    buf = io.BytesIO()
    figure.savefig(buf, format="png", dpi=110)
    plt.close(figure)
    big = buf.getvalue()
    assert len(big) > 300_000
    shown = base64.b64decode(image_src(big).split(",", 1)[1])
    assert image_src(big).startswith("data:image/png;base64,") and len(shown) < len(big) / 2
    reduced, original = Image.open(io.BytesIO(shown)), Image.open(io.BytesIO(big)).convert("RGB")
    assert reduced.mode == "P" and reduced.size == original.size
    assert np.abs(np.asarray(reduced.convert("RGB"), float) - np.asarray(original, float)).mean() < 12
    small = io.BytesIO()
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(small, format="PNG")
    assert base64.b64decode(image_src(small.getvalue()).split(",", 1)[1]) == small.getvalue()
    assert image_src(base64.b64encode(small.getvalue()).decode()) == image_src(small.getvalue())


# --- datasets -----------------------------------------------------------------------------------------------------
def test_figures_dataset_replaces_stale_figures_and_keeps_the_explorer_as_json(tmp_path):
    from eagle_pipelines.io.report_dataset import FiguresDataset

    dataset = FiguresDataset(str(tmp_path / "figures"))
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    dataset.save({"sentence_overlays": fig, "curves": b"\x89PNG-curves", "explorer": {"images": [1]}})
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == ["curves.png", "explorer.json",
                                                                         "sentence_overlays.png"]
    dataset.save({"sentence": b"\x89PNG-s", "curves": b"\x89PNG-c2"})  # a later run that draws other figures
    loaded = dataset.load()
    assert loaded == {"curves": b"\x89PNG-c2", "sentence": b"\x89PNG-s"}  # nothing stale reaches the report
    assert base64.b64decode(str(dataset.preview())) == b"\x89PNG-c2"


def test_attribution_preview_draws_the_map_over_its_own_image(tmp_path):
    from eagle_pipelines.io.items import AttributionManifestDataset, ItemStore, content_hash

    raw = tmp_path / "data/01_raw/exp/eval"
    (raw / "images").mkdir(parents=True)
    (raw / "annotations").mkdir()
    photo = np.zeros((40, 40, 3), np.uint8)
    photo[:, :, 2] = np.linspace(0, 255, 40, dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(photo).save(buf, format="PNG")
    (raw / "images/eval_7.png").write_bytes(buf.getvalue())
    (raw / "annotations/instances.json").write_text(json.dumps({"images": [{"id": 7, "file_name": "eval_7.png"}]}))
    store = ItemStore(tmp_path / "data/07_model_output/exp/attributions", "attribution")
    store.put("sentence/7", "f1", two_tokens())
    manifest = tmp_path / "data/07_model_output/exp/attributions.json"

    def preview(sha: str) -> tuple[AttributionManifestDataset, np.ndarray]:
        manifest.write_text(json.dumps({"store": str(store.path), "kind": "attribution", "items": {
            "sentence/7": {"fp": "f1", "image_id": 7, "image_sha": sha, "level": "sentence"}}}))
        dataset = AttributionManifestDataset(str(manifest))
        png = base64.b64decode(str(dataset.preview()))
        return dataset, np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))

    dataset, found = preview(content_hash(buf.getvalue()))
    np.testing.assert_array_equal(dataset._image_of(dataset.load().info("sentence/7")), photo)
    other, grey = preview("0000000000000000")  # the bytes changed since: not that image
    assert other._image_of(other.load().info("sentence/7")) is None
    assert found.shape == grey.shape and min(found.shape[:2]) > 200 and not np.array_equal(found, grey)


def test_every_picture_the_readme_and_docs_show_exists():
    import re
    from pathlib import Path

    root = Path(__file__).parents[2]
    pages = [root / "README.md", *sorted((root / "docs").glob("*.md"))]
    links = [(page, target) for page in pages
             for target in re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", page.read_text(encoding="utf-8"))]
    assert any(page.name == "README.md" for page, _ in links)  # the README shows pictures
    missing = [f"{page.relative_to(root)}: {target}" for page, target in links
               if not target.startswith(("http://", "https://")) and not (page.parent / target).is_file()]
    assert not missing, missing
