"""The HTML report and the kedro-viz build render in headless Chromium (Debian's chromium; .ci/run installs it).

The module shares one tiny eagle_coco run (the shipped toy model, 3 images, TAM as the only baseline) and one
``kedro viz build --include-previews`` of it, served on 127.0.0.1 by a server the module starts and stops.

The report's explorer is driven the same way: clicking a token of the answer shows that token's map (the DOM's
image and caption change, and so do the pixels on screen), the method selector shows TAM's map of the same target,
an object shows its own word-level map and another image its own answer.

The kedro-viz checks drive the real app through the Chrome DevTools protocol (a websocket client: ``websockets``,
which kedro-viz's server brings in): the layer bands are drawn with their names in flow order, clicking the
``eagle_coco`` box expands the namespace into its stages, clicking ``eagle_coco.reporting`` expands that stage,
and selecting ``eagle_coco.figures`` / ``eagle_coco.attributions`` / ``eagle_coco.metrics`` shows their
previews in the metadata panel (a decoded ``data:image/png`` image; a table with the metric columns). The built
JSON (build/api) is checked for the same facts, so a failure says whether the build or the app is at fault.
Opened at the Makefile's address (eagle_coco's answers selected), expanding eagle_coco and then a stage keeps the
labels drawn at a readable size (measured on screen).
"""

from __future__ import annotations

import base64
import functools
import http.server
import io
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.chromium import CHROMIUM, FLAGS, DevToolsPage, devtools
from tests.conftest import MODEL_DIR, SHIPPED_MODEL, copy_project

if CHROMIUM is None and os.environ.get("CI"):
    raise RuntimeError("CI must install Debian's chromium (see .ci/run)")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed (apt-get install "
                                                          "chromium)")]
#: a run of about a minute on the CPU
TINY_RUN = {"shapes": {"splits": {"eval": 3}}, "superpixels": {"n_segments": 6}, "evaluation": {"pixel_steps": 4},
            "reporting": {"figure_samples": 2}, "eagle_coco": {"max_new_tokens": 8},
            "baselines": {"methods": ["tam"]}}
STAGES = {"data", "answers", "explanation", "baselines", "evaluation", "reporting"}
ENV = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1"}


# --- the shared run, build and server -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def eagle_coco_run(tmp_path_factory) -> Path:
    """A copy of the project's configuration and shipped model in a fresh folder, after a tiny eagle_coco run."""
    from kedro.framework.session import KedroSession

    project = copy_project(tmp_path_factory.mktemp("project"))
    shutil.copytree(SHIPPED_MODEL, project / MODEL_DIR)
    with KedroSession.create(project_path=project, runtime_params=TINY_RUN) as session:
        session.run(pipeline_names=["eagle_coco"])
    return project


@pytest.fixture(scope="module")
def viz_build(eagle_coco_run) -> Path:
    kedro = str(Path(sys.executable).with_name("kedro"))
    result = subprocess.run([kedro, "viz", "build", "--include-previews"], cwd=eagle_coco_run, env=ENV,
                            capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0 and "Success" in output, output[-3000:]
    return eagle_coco_run / "build"


@pytest.fixture(scope="module")
def viz_url(viz_build):
    """The build served on 127.0.0.1 (a free port) for the module's tests."""
    handler = functools.partial(_QuietHandler, directory=str(viz_build))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass


# --- headless Chromium ---------------------------------------------------------------------------------------------
def _chromium(tmp_path: Path, url: str, *extra: str) -> str:
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    result = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *extra, url], capture_output=True,
                            text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def _screenshot(tmp_path: Path, url: str, out: Path, height: int = 2400) -> np.ndarray:
    _chromium(tmp_path, url, f"--screenshot={out}", f"--window-size=1280,{height}", "--virtual-time-budget=20000")
    return np.asarray(Image.open(out).convert("RGB"))


def _node(name: str, kind: str) -> str:
    """The CSS selector of a flowchart node (kind: data, task, parameters or modularPipeline)."""
    return f'g.pipeline-node[data-node-fullname="{name}"][data-node-type="{kind}"]'


def _click(page: DevToolsPage, name: str, kind: str) -> None:
    selector = json.dumps(_node(name, kind))
    page.wait(f"!!document.querySelector({selector})", what=f"the {kind} node {name} in the flowchart")
    page.js(f"document.querySelector({selector}).dispatchEvent(new MouseEvent('click', {{bubbles: true}}))")


def _shown(page: DevToolsPage, name: str, kind: str) -> bool:
    return page.js(f"!!document.querySelector({json.dumps(_node(name, kind))})")


IMAGE_PREVIEW = """(() => {
    const title = document.querySelector('.pipeline-metadata__title');
    const img = document.querySelector('.pipeline-metadata img.pipeline-metadata__plot-image');
    if (!title || title.textContent !== %s || !img || !img.complete || img.naturalWidth === 0) return null;
    const box = img.getBoundingClientRect();
    return {src: img.src, width: img.naturalWidth, height: img.naturalHeight, shown: box.width * box.height};
})()"""
TABLE_PREVIEW = """(() => {
    const title = document.querySelector('.pipeline-metadata__title');
    const table = document.querySelector('.pipeline-metadata table.preview-table');
    if (!title || title.textContent !== %s || !table) return null;
    return {headers: [...table.querySelectorAll('th')].map(th => th.textContent),
            rows: table.querySelectorAll('tr.preview-table__row').length};
})()"""


# --- the report ----------------------------------------------------------------------------------------------------
def test_report_renders_the_table_and_figures(eagle_coco_run, tmp_path):
    report = eagle_coco_run / "data/08_reporting/eagle_coco/report.html"
    assert report.is_symlink() and os.readlink(report) == "latest/report.html"
    dom = _chromium(tmp_path, report.as_uri(), "--dump-dom", "--virtual-time-budget=10000")
    assert "EAGLE report" in dom and "insertion_auc" in dom and dom.count("<tr") >= 5
    shot = tmp_path / "report_screenshot.png"
    pixels = _screenshot(tmp_path, report.as_uri(), shot)
    assert shot.stat().st_size > 10_000
    # the embedded figures are drawn: far more colours than text on white would give
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 500


EXPLORER = """(() => {
    const map = document.getElementById('ex-map');
    if (!map || !map.complete || map.naturalWidth === 0 || !map.dataset.view) return null;
    return {src: map.src, view: map.dataset.view, method: map.dataset.method,
            caption: document.getElementById('ex-map-caption').textContent,
            note: document.getElementById('ex-note').textContent,
            facts: document.getElementById('ex-facts').textContent,
            tokens: [...document.querySelectorAll('#ex-answer .ex-token')].map(b => b.dataset.view),
            objects: [...document.querySelectorAll('#ex-objects .ex-object')].map(b => b.dataset.view),
            curves: [...document.querySelectorAll('#ex-ins polyline')].map(
                l => l.dataset.method + ':' + l.getAttribute('stroke-width'))};
})()"""


def _explorer_after(page: DevToolsPage, action: str, view: str, method: str) -> dict:
    """Runs `action` in the page, then waits for the map of `view` under `method` to be shown."""
    page.js(action)
    check = (f"(() => {{ const s = {EXPLORER.strip()}; return s && s.view === {json.dumps(view)} && "
             f"s.method === {json.dumps(method)} ? s : null; }})()")
    return page.wait(check, timeout=20, what=f"the explorer's map of {view} under {method}")


def _map_pixels(page: DevToolsPage) -> np.ndarray:
    """The explorer's map as drawn on screen (a crop of a screenshot at its box)."""
    page.js("document.getElementById('ex-map').scrollIntoView({block: 'start'})")
    box = page.js("(() => { const r = document.getElementById('ex-map').getBoundingClientRect(); "
                  "return [r.x, r.y, r.width, r.height]; })()")
    shot = np.asarray(_png(page.send("Page.captureScreenshot", format="png")["data"]).convert("RGB"))
    x, y, w, h = (int(round(v)) for v in box)
    return shot[y + 2:y + h - 2, x + 2:x + w - 2].astype(int)


def test_report_explorer_shows_the_map_of_the_clicked_token(eagle_coco_run, tmp_path):
    report = eagle_coco_run / "data/08_reporting/eagle_coco/report.html"
    page_text = report.read_text()
    # one self-contained file: nothing fetched, and of a reasonable size
    assert 'src="http' not in page_text and "<link" not in page_text and len(page_text) < 4_000_000
    with devtools(tmp_path, report.as_uri()) as page:
        start = page.wait(EXPLORER, what="the explorer's first map")
        assert start["view"] == "answer" and start["method"] == "eagle" and len(start["tokens"]) >= 2
        assert start["src"].startswith("data:image/jpeg;base64,")
        whole = _map_pixels(page)

        # click each token: its own map, caption and influence
        seen = {}
        for view in start["tokens"]:
            state = _explorer_after(page, f"document.querySelector('.ex-token[data-view=\"{view}\"]').click()",
                                    view, "eagle")
            assert "token" in state["caption"] and "influence" in state["facts"], state
            seen[view] = state
        changed = [v for v, state in seen.items() if state["src"] != start["src"]]
        assert changed, "no token's map differs from the whole answer's"
        token = changed[0]
        state = _explorer_after(page, f"document.querySelector('.ex-token[data-view=\"{token}\"]').click()",
                                token, "eagle")
        on_screen = _map_pixels(page)
        assert on_screen.shape == whole.shape and np.abs(on_screen - whole).mean() > 1.0, "the map did not change"

        # the method selector on a token: TAM has no per-token map, and the panel says so (one scope at a time:
        # no other view's map or curves); on the whole answer, TAM's own map and curve
        pick = ("(() => { const s = document.getElementById('ex-method'); s.value = 'tam'; "
                "s.dispatchEvent(new Event('change')); })()")
        tam = _explorer_after(page, pick, token, "tam")
        assert "no per-token map" in tam["note"] and "no map" in tam["caption"]
        assert not any(c.startswith("tam:") for c in tam["curves"])
        back = _explorer_after(page, "document.querySelector('.ex-whole').click()", "answer", "tam")
        assert back["src"] != state["src"] and back["note"] == "" and "tam:3" in back["curves"]

        # an explained object: its own word-level search
        if start["objects"]:
            obj = start["objects"][0]
            word = _explorer_after(page, f"document.querySelector('.ex-object[data-view=\"{obj}\"]').click()",
                                   obj, "tam")
            assert "object" in word["caption"] and word["src"] != back["src"]

        # another image: its own answer and map
        page.js("document.querySelectorAll('#ex-images .ex-image')[1].click()")
        other = page.wait(f"(() => {{ const s = {EXPLORER.strip()}; return s && s.src !== "
                          f"{json.dumps(back['src'])} && s.view === 'answer' ? s : null; }})()", timeout=20,
                          what="the second image's map")
        assert other["tokens"] != start["tokens"] or other["src"] != start["src"]


# --- kedro-viz -----------------------------------------------------------------------------------------------------
def _png(encoded: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(encoded)))
    assert image.format == "PNG"
    return image


def test_kedro_viz_build_lists_layers_namespaces_and_previews(viz_build):
    main = json.loads((viz_build / "api/main").read_text())
    assert {"eagle_coco", *(f"eagle_coco.{stage}" for stage in STAGES)} <= set(main["modular_pipelines"])
    assert STAGES == {child["id"].split(".", 1)[1] for child in main["modular_pipelines"]["eagle_coco"]["children"]
                      if child["type"] == "modularPipeline"}
    nodes = {n["name"]: n for n in main["nodes"]}
    assert nodes["eagle_coco.figures"]["layer"] == "reporting"
    assert "eagle_coco.reporting" in nodes["build_figures"]["modular_pipelines"]

    def details(name: str) -> dict:
        return json.loads((viz_build / "api/nodes" / nodes[name]["id"]).read_text())

    metrics = details("eagle_coco.metrics")
    assert metrics["preview_type"] == "TablePreview" and "insertion_auc" in metrics["preview"]["columns"]
    assert len(metrics["preview"]["data"]) >= 4
    for name in ("eagle_coco.figures", "eagle_coco.attributions"):
        preview = details(name)
        assert preview["preview_type"] == "ImagePreview", name
        assert min(_png(preview["preview"]).size) > 32, name

    layers = main["layers"]
    assert {"raw", "models", "model_input", "model_output", "reporting"} <= set(layers), (
        f"layers {layers}: kedro-viz drops them all when the catalog's layers form a cycle along the flow "
        "(tests/test_hygiene.py::test_layers_follow_the_data_flow names it)")
    assert layers.index("raw") < layers.index("model_input") < layers.index("model_output") < layers.index(
        "reporting")


def test_kedro_viz_shows_layers_expands_eagle_coco_and_renders_previews(viz_url, tmp_path):
    layer_names = "[...document.querySelectorAll('.pipeline-layer-name')].map(e => e.textContent)"
    with devtools(tmp_path, f"{viz_url}?pid=eagle_coco") as page:
        page.wait(f"!!document.querySelector({json.dumps(_node('eagle_coco', 'modularPipeline'))})",
                  what="the eagle_coco box")
        collapsed_labels = page.poll(layer_names, timeout=10)  # drawn with the nodes; [] when there are none
        # collapsed: the experiment is one box
        assert not _shown(page, "eagle_coco.figures", "data")

        _click(page, "eagle_coco", "modularPipeline")
        for stage in STAGES:
            page.wait(f"!!document.querySelector({json.dumps(_node(f'eagle_coco.{stage}', 'modularPipeline'))})",
                      what=f"the stage eagle_coco.{stage} after expanding eagle_coco")
        assert _shown(page, "eagle_coco.answers", "data")
        page.wait(f"!document.querySelector({json.dumps(_node('eagle_coco', 'modularPipeline'))})",
                  what="the eagle_coco box gone once expanded")

        _click(page, "eagle_coco.reporting", "modularPipeline")
        _click(page, "eagle_coco.figures", "data")
        figure = page.wait(IMAGE_PREVIEW % json.dumps("eagle_coco.figures"), what="the figures' preview image")
        assert figure["src"].startswith("data:image/png;base64,") and figure["width"] > 100 and figure["shown"] > 0
        assert _png(figure["src"].split(",", 1)[1]).size == (figure["width"], figure["height"])

        _click(page, "eagle_coco.attributions", "data")
        attribution = page.wait(IMAGE_PREVIEW % json.dumps("eagle_coco.attributions"),
                                what="the attributions' preview image")
        assert attribution["src"].startswith("data:image/png;base64,") and attribution["src"] != figure["src"]

        _click(page, "eagle_coco.metrics", "data")
        table = page.wait(TABLE_PREVIEW % json.dumps("eagle_coco.metrics"), what="the metrics' preview table")
        assert {"method", "level", "protocol", "insertion_auc"} <= set(table["headers"]) and table["rows"] >= 4

        shot = page.send("Page.captureScreenshot", format="png")["data"]
        assert len(np.unique(np.asarray(_png(shot).convert("RGB")).reshape(-1, 3), axis=0)) > 50
        labels = page.js(layer_names)  # of the expanded view, settled by now
        bands = page.js("document.querySelectorAll('rect.pipeline-layer').length")

    # the layer bands, named in flow order (none at all when the catalog's layers form a cycle)
    # collapsed, the experiment's own datasets (model_input, model_output) are inside its box: no store is drawn
    # outside it (the producers output their manifests)
    assert {"raw", "models", "reporting"} <= set(collapsed_labels), (
        f"layer names drawn: {collapsed_labels} (none: the catalog's layers form a cycle, "
        "tests/test_hygiene.py::test_layers_follow_the_data_flow names it)")
    assert {"raw", "models", "model_input", "model_output", "reporting"} <= set(labels), labels
    assert labels.index("raw") < labels.index("model_input") < labels.index("model_output") < labels.index(
        "reporting"), labels
    assert bands == len(labels)


#: the lineage URL the Makefile and README give (`make viz-serve`): eagle_coco with its answers selected
READABLE_VIEW = "?pid=eagle_coco&sn=eagle_coco.answers"
LABEL_HEIGHT = """(() => {
    const text = document.querySelector(%s + ' text');
    return text ? text.getBoundingClientRect().height : null;
})()"""


def test_kedro_viz_keeps_a_readable_zoom_when_a_namespace_expands(viz_url, tmp_path):
    """kedro-viz 12 fits the whole graph whenever the nodes change (an expanded eagle_coco: labels drawn ~5 px
    high), unless a node is selected: then it keeps the zoom and centres on that node. The documented URL selects
    eagle_coco's answers, so expanding eagle_coco, then a stage, keeps the labels at a readable size on screen."""
    stage = _node("eagle_coco.explanation", "modularPipeline")
    with devtools(tmp_path, f"{viz_url}{READABLE_VIEW}") as page:
        page.wait(f"!!document.querySelector({json.dumps(_node('eagle_coco', 'modularPipeline'))})",
                  what="the eagle_coco box")
        _click(page, "eagle_coco", "modularPipeline")
        page.wait(f"!!document.querySelector({json.dumps(stage)})", what="eagle_coco's stages")
        # the zoom settles after kedro-viz's transition: the label's height stops changing
        heights = [page.poll(LABEL_HEIGHT % json.dumps(stage), timeout=10)]
        while len(heights) < 3 or abs(heights[-1] - heights[-3]) > 0.1:
            time.sleep(0.5)
            heights.append(page.js(LABEL_HEIGHT % json.dumps(stage)))
            assert len(heights) < 40, heights
        font = float(page.js(f"parseFloat(getComputedStyle(document.querySelector({json.dumps(stage + ' text')}))"
                             ".fontSize)"))
        expanded = heights[-1]
        assert page.js("document.querySelector('.pipeline-metadata__title').textContent") == "eagle_coco.answers"

        _click(page, "eagle_coco.explanation", "modularPipeline")
        page.wait(f"!document.querySelector({json.dumps(stage)})", what="eagle_coco.explanation expanded")
        inner = _node("eagle_coco.attributions", "data")
        page.wait(f"!!document.querySelector({json.dumps(inner)})", what="the explanation stage's datasets")
        time.sleep(2)  # the transition
        inner_height = page.js(LABEL_HEIGHT % json.dumps(inner))
    # a 14 px label drawn at least 10 px high (about 70 % zoom or more); the fitted view draws it ~5 px high
    assert expanded >= 10 and expanded >= 0.7 * font, (expanded, font)
    assert inner_height >= 10, inner_height
