"""Every report's explorer, built in-process from small synthetic records and driven by clicking in headless
Chromium (Debian's chromium, as tests/integration/test_browser.py drives it), and the figures' readability: maps on the colour
image, titles that are wrapped instead of clipped, the mitigation heat maps' colour bars beside the cells.

- eagle_coco / eagle_mmvp (reporting/explorer.py): one scope at a time (a token selected: only EAGLE has a map and
  curves; a baseline's panel says it has no per-token map), the colour/grey toggle, thumbnails as the image
  selector, the question beside the answer;
- eagle_repope: the wrong answer, the counter token's map, the removal sequence step by step, the correcting step;
- eagle_video: the frame selector and the frame-importance strip, each frame's own map;
- eagle_mitigation: per token, N and S per layer and the token's regions; plain against guided answers.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from eagle_pipelines.core.attribution import Attribution  # noqa: E402
from eagle_pipelines.core.diagnostics import Diagnostics, plot_diagnostics  # noqa: E402
from eagle_pipelines.core.joint import JointAttribution, image_view  # noqa: E402
from eagle_pipelines.core.plotting import attribution_display, fit_title  # noqa: E402
from eagle_pipelines.core.video import VideoAttribution  # noqa: E402
from eagle_pipelines.reporting.explorer import ExplorerImage, explorer_data, explorer_html  # noqa: E402
from eagle_pipelines.reporting.explorers.mitigation import mitigation_explorer, mitigation_html  # noqa: E402
from eagle_pipelines.reporting.explorers.repope import repope_explorer, repope_html  # noqa: E402
from eagle_pipelines.reporting.explorers.video import video_explorer, video_html  # noqa: E402
from eagle_pipelines.reporting.html_page import document  # noqa: E402
from tests.chromium import CHROMIUM, devtools  # noqa: E402

needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed")


# --- synthetic records -----------------------------------------------------------------------------------------------
def quadrants(size: int = 40) -> np.ndarray:
    half = size // 2
    labels = np.zeros((size, size), np.int32)
    labels[:half, half:], labels[half:, :half], labels[half:, half:] = 1, 2, 3
    return labels


def red_green(size: int = 40) -> np.ndarray:
    """Top half red, bottom half green."""
    image = np.zeros((size, size, 3), np.uint8)
    image[: size // 2, :, 0] = 220
    image[size // 2:, :, 1] = 200
    return image


def answer_attribution(image_id: int = 7, answer: str = "a red circle") -> Attribution:
    """Token 0 rises then falls along the order (not monotone); token 1 rises."""
    ins = np.array([[0.9, 0.2], [0.3, 0.8], [0.9, 0.8], [0.9, 0.8]])
    dele = np.array([[0.1, 0.8], [0.8, 0.2], [0.1, 0.2], [0.1, 0.2]])
    return Attribution(order=np.array([2, 0, 1, 3]), insertion=ins, deletion=dele,
                       objective=np.array([1.1, 1.7, 1.7, 1.7]), area=np.array([0.25, 0.5, 0.75, 1.0]),
                       full_score=np.array([0.9, 0.8]), empty_score=np.array([0.1, 0.2]), labels=quadrants(),
                       target_positions=[1, 2], target_token_ids=[5, 6], target_words=[" red", " circle"],
                       answer=answer, prompt="Is there a red circle?",
                       meta={"image_id": image_id, "level": "sentence"})


JOINT_PROMPT = "Is there a red circle?"


def joint_record() -> JointAttribution:
    """4 regions (quadrants) and the 5 words of JOINT_PROMPT (candidates 4..8: Is, there, a, red, circle) in one
    joint order: red, region 2, circle, regions 0 and 1, Is, there, a, region 3. Token 0's insertion gains: red 0.4,
    region 2 0.2, circle 0.1, region 1 0.1 (prompt share 0.5 / 0.8 = 0.625); token 1's: region 2 0.4, regions 0
    and 3 0.1 each (prompt share 0)."""
    ins = np.array([[0.5, 0.2], [0.7, 0.6], [0.8, 0.6], [0.8, 0.7], [0.9, 0.7], [0.9, 0.7], [0.9, 0.7],
                    [0.9, 0.7], [0.9, 0.8]])
    dele = np.array([[0.6, 0.7], [0.4, 0.3], [0.3, 0.3], [0.3, 0.25], [0.2, 0.25], [0.2, 0.25], [0.2, 0.25],
                     [0.2, 0.25], [0.1, 0.2]])
    units = [{"text": m.group(), "start": m.start(), "end": m.end(), "positions": [10 + k], "token_ids": [50 + k]}
             for k, m in enumerate(re.finditer(r"\w+", JOINT_PROMPT))]
    return JointAttribution(
        order=np.array([7, 2, 8, 0, 1, 4, 5, 6, 3]), insertion=ins, deletion=dele,
        objective=ins.mean(axis=1) + 1 - dele.mean(axis=1),
        area=np.array([0, 0.25, 0.25, 0.5, 0.75, 0.75, 0.75, 0.75, 1.0]), full_score=np.array([0.9, 0.8]),
        empty_score=np.array([0.1, 0.2]), labels=quadrants(), n_image=4, units=units,
        target_positions=[1, 2], target_token_ids=[5, 6], target_words=[" Yes", ","], answer="Yes,",
        prompt=JOINT_PROMPT, meta={"image_id": 5, "level": "sentence"})


def joint_items() -> list[ExplorerImage]:
    return [ExplorerImage(5, red_green(), question=JOINT_PROMPT, label="joint", sentence=("s5", image_view(
        joint_record())), curves={"s5": {"eagle": curve([0.1, 0.7, 0.9], [0.9, 0.3, 0.1])}})]


def curve(ins, dele):
    return {"x": [0, 0.5, 1], "insertion": ins, "deletion": dele}


def coco_items() -> list[ExplorerImage]:
    items = []
    for image_id, label in ((1, "pair 1: red circle (not green circle)"), (2, "pair 1: green circle (not red "
                                                                               "circle)")):
        a = answer_attribution(image_id)
        tam = np.linspace(0, 1, 1600).reshape(40, 40)
        item = ExplorerImage(image_id, red_green(), question=f"Is there a red circle? ({image_id})", label=label,
                             sentence=(f"s{image_id}", a), maps={f"s{image_id}": {"tam": tam}},
                             curves={f"s{image_id}": {"eagle": curve([0.1, 0.7, 0.9], [0.9, 0.3, 0.1]),
                                                      "tam": curve([0.4, 0.5, 0.9], [0.9, 0.6, 0.4])}},
                             random={f"s{image_id}": np.array([3, 1, 0, 2])})
        items.append(item)
    return items


def repope_samples() -> list[dict]:
    a = answer_attribution(3, "No")
    correction = {"ks": [0, 1, 2, 3], "answers": ["Yes", "Yes", "No", "No"], "corrected_k": 2, "amcr": 0.5,
                  "correcting_region": 0, "order": [2, 0, 1, 3], "removed_area": [0.0, 0.25, 0.5, 0.75]}
    cause = np.zeros((40, 40), bool)
    cause[2:10, 2:10] = True
    return [{"image": red_green(), "attribution": a, "correction": correction, "question_id": 12,
             "text": "Is there a green square in the image?", "label": "no", "answer": "Yes", "cause_mask": cause}]


def clip_attribution() -> tuple[np.ndarray, VideoAttribution]:
    """3 frames of 20 × 20, two regions each (left, right); the shape appears in frame 2's right half."""
    labels = np.zeros((3, 20, 20), np.int32)
    for k in range(3):
        labels[k, :, :10], labels[k, :, 10:] = 2 * k, 2 * k + 1
    frames = np.full((3, 20, 20, 3), 40, np.uint8)
    frames[1, 5:15, 12:18] = (230, 40, 40)
    order = np.array([3, 2, 0, 1, 4, 5])
    ins = np.array([[0.7], [0.75], [0.8], [0.8], [0.85], [0.9]])
    return frames, VideoAttribution(
        order=order, insertion=ins, deletion=1 - ins, objective=np.array([1.5, 1.55, 1.6, 1.6, 1.65, 1.7]),
        area=np.linspace(1 / 6, 1, 6), full_score=np.array([0.9]), empty_score=np.array([0.1]), labels=labels,
        target_positions=[0], target_token_ids=[5], target_words=["square"], answer="square",
        prompt="What appears?", meta={"video": {"timestamps": [0.0, 0.5, 1.0]}})


def diagnostics() -> Diagnostics:
    layers, tokens = 4, 3
    full = np.log(np.full((layers, tokens), 0.6))
    text = np.log(np.array([[0.1, 0.55, 0.2]] * layers))
    part = np.log(np.full((layers, tokens), 0.5))
    return Diagnostics(logp_full=full, logp_text=text, logp_part=part, tokens=["Yes", ",", " it"],
                       token_ids=[1, 2, 3], part_regions=[[0], [1, 2], [3]], part_area=[0.25, 0.5, 0.25],
                       prompt="Is there a green square?", answer="Yes, it", meta={"task_id": 4, "kind": "biased",
                                                                                 "image_id": 1})


def mitigation_data() -> dict:
    settings = [{"label": "plain", "best": False, "answers": {4: "Yes, it"}},
                {"label": "guided strength 1", "best": True, "answers": {4: "No"}}]
    return mitigation_explorer([{"diag": diagnostics(), "image": red_green(), "labels": quadrants()}], settings)


# --- the data and the figures (no browser) ---------------------------------------------------------------------------
def test_a_token_has_only_its_own_maps_in_both_backgrounds():
    data = explorer_data(coco_items())
    image = data["images"][0]
    assert image["question"].startswith("Is there a red circle?") and image["label"].startswith("pair 1: red")
    assert image["thumb"].startswith("data:image/jpeg;base64,")
    assert set(image["views"]["answer"]["maps"]) == {"eagle", "random", "tam"}
    token = image["views"]["t0"]
    assert set(token["maps"]) == {"eagle"} and set(token["curves"]) == {"eagle"} and "fallback" not in token
    for maps in image["views"]["answer"]["maps"].values():
        assert set(maps) == {"colour", "grey"} and maps["colour"] != maps["grey"]


def test_a_joint_item_shows_its_prompt_words_by_rank_and_the_modality_share():
    """The ranks, gains and shares of ``joint_record`` as computed by hand (its docstring)."""
    from matplotlib import colormaps

    data = explorer_data(joint_items())
    views = data["images"][0]["views"]
    answer = views["answer"]["prompt"]
    words = [(g["text"], g["rank"]) for g in answer["segments"] if "rank" in g]
    assert words == [("Is", 6), ("there", 7), ("a", 8), ("red", 1), ("circle", 3)]
    assert "".join(g["text"] for g in answer["segments"]) == JOINT_PROMPT  # the plain text between them kept
    assert answer["steps"] == 9 and answer["n_regions"] == 4
    assert answer["share"] == pytest.approx((0.625 + 0.0) / 2, abs=1e-3)  # the mean over the two tokens
    rank = {g["text"]: g for g in answer["segments"] if "rank" in g}
    hexed = lambda v: "#" + "".join(f"{int(round(255 * c)):02x}" for c in colormaps["YlOrRd"](v)[:3])  # noqa: E731
    assert rank["red"]["bg"] == hexed(0.08 + 0.87 * 1.0) and rank["red"]["fg"] == "#fff"  # first: darkest
    assert rank["a"]["bg"] == hexed(0.08 + 0.87 * (1 - 7 / 8)) and rank["a"]["fg"] == "#000"
    t0 = {g["text"]: g["gain"] for g in views["t0"]["prompt"]["segments"] if "rank" in g}
    t1 = {g["text"]: g["gain"] for g in views["t1"]["prompt"]["segments"] if "rank" in g}
    assert t0 == pytest.approx({"Is": 0, "there": 0, "a": 0, "red": 0.4, "circle": 0.1})
    assert t1 == pytest.approx({"Is": 0, "there": 0, "a": 0, "red": 0, "circle": 0})
    assert views["t0"]["prompt"]["share"] == pytest.approx(0.625) and views["t1"]["prompt"]["share"] == 0
    page = explorer_html(data)
    assert 'id="ex-prompt"' in page and "modality share" in page
    assert '"text":"circle","rank":3' in page  # the data the page's script reads
    # no prompt units: no prompt in any view, the page as before
    plain = explorer_data(coco_items())["images"][0]["views"]
    assert not any("prompt" in v for v in plain.values())
    # eagle_repope's explorer shows the question's words of a joint record too
    sample = {**repope_samples()[0], "attribution": image_view(joint_record())}
    rec = repope_explorer([sample])["records"][0]
    assert [(g["text"], g["rank"]) for g in rec["prompt"]["segments"] if "rank" in g] == words
    assert "prompt" not in repope_explorer(repope_samples())["records"][0]


def test_the_colour_background_keeps_the_objects_colour_and_grey_does_not():
    a = answer_attribution()
    red = np.zeros((40, 40, 3), np.uint8)
    red[..., 0] = 220
    green = np.zeros((40, 40, 3), np.uint8)
    green[..., 1] = 112  # the same luminance as the red (0.299 × 220 ≈ 0.587 × 112)
    kwargs = {"labels": a.labels, "order": a.order, "numbers": False}
    on_red = attribution_display(red, a.saliency(), background="colour", **kwargs).rgb.astype(int)
    on_green = attribution_display(green, a.saliency(), background="colour", **kwargs).rgb.astype(int)
    inside = (slice(150, 230), slice(20, 100))  # region 2 (bottom left of the 256-pixel picture), ranked first: lit
    assert on_red[inside][..., 0].mean() > on_red[inside][..., 1].mean() + 40
    assert on_green[inside][..., 1].mean() > on_green[inside][..., 0].mean() + 40
    grey_red = attribution_display(red, a.saliency(), background="grey", **kwargs).rgb.astype(int)
    grey_green = attribution_display(green, a.saliency(), background="grey", **kwargs).rgb.astype(int)
    assert np.abs(grey_red - grey_green).max() <= 3
    with pytest.raises(ValueError, match="background"):
        attribution_display(red, a.saliency(), background="sepia")


def _inside(fig, artist) -> bool:
    fig.canvas.draw()
    box = artist.get_window_extent(fig.canvas.get_renderer())
    return box.x0 >= 0 and box.x1 <= fig.bbox.width and box.y1 <= fig.bbox.height


def test_a_long_title_is_wrapped_inside_the_figure():
    fig, axes = plt.subplots(1, 3, figsize=(8, 3))
    long = "'" + "Describe every object in this photograph and its colour " * 4 + "' → 'a red circle'"
    fit_title(fig, long)
    assert fig._suptitle.get_text().count("\n") >= 2 and _inside(fig, fig._suptitle)
    plt.close(fig)
    frames, clip = clip_attribution()
    clip.prompt = long
    fig = clip.plot(frames)
    assert _inside(fig, fig._suptitle)
    plt.close(fig)


def test_the_mitigation_heat_maps_keep_their_colour_bars_beside_the_cells():
    fig = plot_diagnostics(diagnostics(), title="biased: 'Is there a green square in the image? Answer yes or no.' "
                                                "-> 'Yes, it is there'" * 2)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    heat = [ax for ax in fig.axes if ax.images]
    bars = [ax for ax in fig.axes if not ax.images]
    assert len(heat) == 2 and len(bars) == 2
    for bar in bars:
        for ax in heat:
            assert not bar.get_window_extent(renderer).overlaps(ax.get_window_extent(renderer))
    assert min(t.get_fontsize() for ax in heat for t in ax.texts) >= 9
    assert _inside(fig, fig._suptitle)
    plt.close(fig)


def test_repope_video_and_mitigation_data_carry_what_the_page_shows():
    rec = repope_explorer(repope_samples())["records"][0]
    assert rec["answer"] == "Yes" and rec["counter"] == "No" and rec["corrected_step"] == 3
    assert [s["answer"] for s in rec["steps"]] == ["Yes", "Yes", "No"]  # up to the correcting step
    assert set(rec["map"]) == {"colour", "grey"}
    frames, clip = clip_attribution()
    video = video_explorer([("c1", frames, clip, clip.prompt)])["records"][0]
    assert len(video["frames"]) == 3 and video["top_frame"] == 1
    assert abs(sum(f["share"] for f in video["frames"]) - 1) < 1e-3
    mit = mitigation_data()["records"][0]
    assert [a["text"] for a in mit["answers"]] == ["Yes, it", "No"] and mit["answers"][1]["best"]
    assert len(mit["tokens"]) == 3 and len(mit["tokens"][0]["n"]) == 4


def test_an_mmvp_image_is_named_by_what_differs_in_its_pair():
    from eagle_pipelines.pipelines.experiment.report import image_label

    class Index:
        entries = {1: {"pair": 0, "objects": ["red circle", "blue square"], "file_name": "1.png"},
                   2: {"pair": 0, "objects": ["green circle", "blue square"], "file_name": "2.png"},
                   3: {"file_name": "000000000003.jpg"}}

        def image_info(self, i):
            return self.entries[i]

        def image_ids(self):
            return list(self.entries)

    split = type("Split", (), {"index": Index()})()
    assert image_label(split, 1) == "pair 1: red circle (not green circle)"
    assert image_label(split, 2) == "pair 1: green circle (not red circle)"
    assert image_label(split, 3) == "000000000003.jpg"
    from eagle_pipelines.pipelines.experiment.report import _row_title

    asked = {"image_id": 1, "item": "1", "prompt": "Is there a red circle?\n(a) Yes\n(b) No"}
    assert _row_title(split, asked) == "pair 1: red circle (not green circle)\nIs there a red circle?"
    assert _row_title(split, {"image_id": 3, "item": "3", "prompt": "Describe the image."}) == "000000000003.jpg"


# --- clicking in headless Chromium -----------------------------------------------------------------------------------
@contextlib.contextmanager
def browser(tmp_path: Path, body: str):
    page_file = tmp_path / "report.html"
    page_file.write_text(document("explorer test", {"run": "synthetic"}, body, {}))
    with devtools(tmp_path, page_file.as_uri(), window="1400,1000", timeout=20) as page:
        yield page


def _attr(element: str, name: str) -> str:
    return f"document.getElementById('{element}').getAttribute('{name}')"


@pytest.mark.slow  # starts a browser
@needs_chromium
def test_coco_explorer_keeps_one_scope_and_toggles_the_background(tmp_path):
    with browser(tmp_path, explorer_html(explorer_data(coco_items()))) as page:
        page.wait("document.getElementById('ex-map') && document.getElementById('ex-map').naturalWidth > 0")
        assert page.js("document.querySelectorAll('#ex-images .ex-image img').length") == 2  # thumbnails
        assert "pair 1: red circle" in page.js("document.getElementById('ex-images').textContent")
        assert "#1" not in page.js("document.getElementById('ex-images').textContent")
        assert page.js("document.getElementById('ex-question').textContent").startswith("Is there a red circle?")
        # a token, then TAM: no TAM map for a token, said plainly by the caption and the note alike
        page.js("document.querySelector('.ex-token[data-view=\"t0\"]').click()")
        page.wait(_attr("ex-map", "data-view") + " === 't0'")
        assert page.js("[...document.querySelectorAll('#ex-ins polyline')].map(l => l.dataset.method)") == ["eagle"]
        assert "Not monotone" in page.js("document.getElementById('ex-curve-note').textContent")
        page.js("(() => { const s = document.getElementById('ex-method'); s.value = 'tam'; "
                "s.dispatchEvent(new Event('change')); })()")
        page.wait(_attr("ex-map", "data-method") + " === 'tam'")
        caption = page.js("document.getElementById('ex-map-caption').textContent")
        note = page.js("document.getElementById('ex-note').textContent")
        assert "token" in caption and "no map" in caption and "no per-token map" in note
        assert "whole answer's map is shown" not in note
        assert page.js("document.getElementById('ex-map').style.display") == "none"
        # the whole answer: TAM's own map and curves, no note
        page.js("document.querySelector('.ex-whole[data-view=\"answer\"]').click()")
        page.wait(_attr("ex-map", "data-view") + " === 'answer'")
        assert page.js("document.getElementById('ex-note').textContent") == ""
        methods = page.js("[...document.querySelectorAll('#ex-ins polyline')].map(l => l.dataset.method)")
        assert set(methods) == {"eagle", "tam"}
        colour = page.js("document.getElementById('ex-map').src")
        page.js("document.querySelector('#ex-bg [data-bg=\"grey\"]').click()")
        page.wait(_attr("ex-map", "data-bg") + " === 'grey'")
        assert page.js("document.getElementById('ex-map').src") != colour
        assert "grey copy" in page.js("document.getElementById('ex-map-caption').textContent")
        # the second image by its thumbnail: its own question
        page.js("document.querySelectorAll('#ex-images .ex-image')[1].click()")
        page.wait("document.getElementById('ex-question').textContent.includes('(2)')")


@pytest.mark.slow  # starts a browser
@needs_chromium
def test_a_joint_item_colours_the_prompt_beside_the_map(tmp_path):
    body = explorer_html(explorer_data(joint_items())) + repope_html(repope_explorer(
        [{**repope_samples()[0], "attribution": image_view(joint_record())}]))
    with browser(tmp_path, body) as page:
        page.wait("document.getElementById('ex-map') && document.getElementById('ex-map').naturalWidth > 0")
        assert page.js("document.getElementById('ex-prompt').style.display") == ""
        shown = "[...document.querySelectorAll('#ex-prompt .ex-word')].map(w => w.textContent + w.dataset.rank)"
        assert page.js(shown) == ["Is6", "there7", "a8", "red1", "circle3"]
        red = "document.querySelector('#ex-prompt .ex-word[data-rank=\"1\"]')"
        assert page.js(f"getComputedStyle({red}).backgroundColor") != "rgba(0, 0, 0, 0)"
        assert page.js(f"getComputedStyle({red}).color") == "rgb(255, 255, 255)"
        page.js("document.querySelector('.ex-token[data-view=\"t0\"]').click()")
        page.wait(_attr("ex-map", "data-view") + " === 't0'")
        assert "prompt 0.63" in page.js("document.getElementById('ex-facts').textContent")
        assert "insertion gain 0.4" in page.js(f"{red}.title")
        page.js("document.querySelector('.ex-token[data-view=\"t1\"]').click()")
        page.wait(_attr("ex-map", "data-view") + " === 't1'")
        assert "prompt 0.00 \u00b7 regions 1.00" in page.js("document.getElementById('ex-facts').textContent")
        assert page.js("[...document.querySelectorAll('#rx-prompt .xp-word')].length") == 5
        assert "modality share" in page.js("document.getElementById('rx-prompt').textContent")


@pytest.mark.slow  # starts a browser
@needs_chromium
def test_repope_explorer_walks_the_removal_sequence(tmp_path):
    with browser(tmp_path, repope_html(repope_explorer(repope_samples()))) as page:
        page.wait("document.querySelectorAll('#rx-steps .xp-step').length === 3")
        assert page.js("document.getElementById('rx-answer').textContent") == "Yes"
        assert "\u201cNo\u201d" in page.js("document.getElementById('rx-map-caption').textContent")
        assert page.js("document.querySelectorAll('#rx-thumbs img').length") == 1
        # it opens on the correcting step
        assert page.js(_attr("rx-step-img", "data-step")) == "3"
        assert "No" in page.js("document.getElementById('rx-step-answer').textContent")
        assert "Corrected at step 3" in page.js("document.getElementById('rx-fixed').textContent")
        first = page.js("document.getElementById('rx-step-img').src")
        page.js("document.querySelector('#rx-steps [data-step=\"1\"]').click()")
        page.wait(_attr("rx-step-img", "data-step") + " === '1'")
        assert page.js("document.getElementById('rx-step-img').src") != first
        assert page.js("document.getElementById('rx-step-answer').className") == "bad"
        colour = page.js("document.getElementById('rx-map').src")
        page.js("document.querySelector('#rx-bg [data-bg=\"grey\"]').click()")
        page.wait(_attr("rx-map", "data-bg") + " === 'grey'")
        assert page.js("document.getElementById('rx-map').src") != colour


@pytest.mark.slow  # starts a browser
@needs_chromium
def test_video_explorer_selects_frames_from_the_strip_and_the_buttons(tmp_path):
    frames, clip = clip_attribution()
    with browser(tmp_path, video_html(video_explorer([("c1", frames, clip, clip.prompt)]))) as page:
        page.wait("document.querySelectorAll('#vx-strip .vx-bar').length === 3")
        assert page.js(_attr("vx-map", "data-frame")) == "1"  # the top frame first
        start = page.js("document.getElementById('vx-map').src")
        page.js("document.querySelector('#vx-strip .vx-bar[data-frame=\"2\"]')"
                ".dispatchEvent(new MouseEvent('click', {bubbles: true}))")
        page.wait(_attr("vx-map", "data-frame") + " === '2'")
        assert page.js("document.getElementById('vx-map').src") != start
        assert "frame 3 of 3" in page.js("document.getElementById('vx-map-caption').textContent")
        page.js("document.querySelector('#vx-frames [data-frame=\"0\"]').click()")
        page.wait(_attr("vx-map", "data-frame") + " === '0'")
        assert page.js("document.getElementById('vx-question').textContent") == "What appears?"


@pytest.mark.slow  # starts a browser
@needs_chromium
def test_mitigation_explorer_shows_each_tokens_layers_and_regions(tmp_path):
    with browser(tmp_path, mitigation_html(mitigation_data())) as page:
        page.wait("document.querySelectorAll('#mx-n rect').length === 4")
        rows = page.js("[...document.querySelectorAll('#mx-answers tr')].map(r => r.textContent)")
        assert any("plain" in r and "Yes, it" in r for r in rows) and any("best" in r and "No" in r for r in rows)
        first = page.js("document.getElementById('mx-map').src")
        widths = page.js("[...document.querySelectorAll('#mx-n rect')].map(r => r.getAttribute('width'))")
        page.js("document.querySelector('#mx-tokens [data-token=\"1\"]').click()")
        page.wait(_attr("mx-map", "data-token") + " === '1'")
        assert page.js("document.getElementById('mx-map').src") != first
        assert page.js("[...document.querySelectorAll('#mx-n rect')].map(r => r.getAttribute('width'))") != widths
        assert "Prior-driven" in page.js("document.getElementById('mx-verdict').textContent")
        assert page.js("document.querySelector('#mx-tokens [data-token=\"1\"]').classList.contains('prior')")
