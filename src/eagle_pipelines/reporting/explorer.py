"""The report's interactive explorer: one answer at a time, its tokens clickable, each token's (or object's) map
over the image, its insertion and deletion curves and its influence, and a method selector for the baselines of
the same target. It lives inside report.html (the data as JSON in the page, the maps as JPEG data URLs, a few
lines of JavaScript without any library), so the page stays one file that works offline.

``explorer_data`` builds the JSON from the run's attributions, baseline maps and evaluation curves;
``explorer_html`` turns it into the page's section.

Views, per image: ``answer`` (the sentence-level attribution: the whole answer), ``t<i>`` (token i of the answer:
the same EAGLE order seen through that token's own curves, ``core.plotting.token_saliency``) and ``w<j>`` (the
j-th explained object: its own word-level search, the object's box drawn). One scope at a time: a view shows only
its own maps and curves; a method without a map for the view (a baseline explains whole targets, not single
tokens) gets a panel that says so, never another view's map. Every map comes drawn on the colour image and on a
grey copy (the page's toggle); the images are picked by their thumbnails; an entry is one question (its image, its
question beside its answer, its ``label``: e.g. what differs within an MMVP pair). A joint record's view
(``core/joint.py: image_view``, ``prompt_units: words``) also carries its prompt (``prompt_view``): the words
coloured by their joint rank under the map, and the modality share beside N_t (docs/joint.md).
"""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass, field

import numpy as np

from eagle_pipelines.core.attribution import Attribution
from eagle_pipelines.core.evaluate import order_saliency
from eagle_pipelines.core.plotting import attribution_display, sensitivity, sensitivity_scale, token_saliency, top_mask
from eagle_pipelines.reporting.figures import KEEP, _influence_norm, display_name, influence_colours, method_style

#: the maps' longest side in the page (pixels) and their JPEG quality: about 10 kB a map
MAP_SIDE = 288
JPEG_QUALITY = 82


@dataclass
class ExplorerImage:
    """What the explorer shows of one image: the working image, its sentence-level attribution (or None) and
    word-level attributions (key, Attribution), and per target key the baselines' maps ``{method: map}`` and the
    evaluation's curves ``{method: {"x", "insertion", "deletion"}}``; `random` per target key: the random floor's
    region order."""

    image_id: int
    image: np.ndarray
    sentence: tuple[str, Attribution] | None = None
    words: list[tuple[str, Attribution]] = field(default_factory=list)
    maps: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    curves: dict[str, dict[str, dict]] = field(default_factory=dict)
    random: dict[str, np.ndarray] = field(default_factory=dict)
    question: str = ""
    label: str = ""


#: the thumbnails' longest side (pixels) in an image selector
THUMB_SIDE = 64


def thumb(rgb: np.ndarray) -> str:
    """A small JPEG data URL of `rgb` for an image selector."""
    return data_url(rgb, side=THUMB_SIDE, quality=75)


def data_url(rgb: np.ndarray, side: int = MAP_SIDE, quality: int = JPEG_QUALITY) -> str:
    """`rgb` shrunk to `side` on its longest side (never enlarged) as a JPEG data URL."""
    from PIL import Image

    picture = Image.fromarray(np.ascontiguousarray(rgb))
    if max(picture.size) > side:
        picture.thumbnail((side, side), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    picture.save(buf, format="JPEG", quality=quality, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _both(image: np.ndarray, saliency: np.ndarray, **kwargs) -> dict[str, str]:
    """``attribution_display`` on the colour image and on a grey copy: ``{"colour": url, "grey": url}``."""
    return {bg: data_url(attribution_display(image, saliency, background=bg, **kwargs).rgb)
            for bg in ("colour", "grey")}


def _rounded(values, digits: int = 3) -> list[float]:
    return [round(float(v), digits) for v in values]


def _curve(x, insertion, deletion) -> dict:
    x, ins, dele = (np.asarray(v, dtype=float) for v in (x, insertion, deletion))
    return {"x": _rounded(x), "ins": _rounded(ins), "del": _rounded(dele),
            "auc": [round(float(np.trapezoid(ins, x)), 4), round(float(np.trapezoid(dele, x)), 4)]}


def _token_curve(a: Attribution, t: int) -> dict:
    """Token t's own curves under EAGLE's order (x = [0] + area; the empty / full image first)."""
    x = np.concatenate([[0.0], a.area])
    return _curve(x, np.concatenate([[a.empty_score[t]], a.insertion[:, t]]),
                  np.concatenate([[a.full_score[t]], a.deletion[:, t]]))


def _maps(item: ExplorerImage, key: str, a: Attribution, box, scale: float = 1.0) -> dict[str, str]:
    """The displays of one target: EAGLE (scaled by `scale`), the random floor and every baseline."""
    out = {"eagle": _both(item.image, a.saliency(), labels=a.labels, order=a.order, scale=scale, boxes=box)}
    if key in item.random:
        order = item.random[key]
        out["random"] = _both(item.image, order_saliency(order, a.labels), labels=a.labels, order=order, boxes=box)
    keep = float(top_mask(a.saliency(), KEEP, a.labels, a.order).mean())  # every method lights as much
    for method, saliency in sorted(item.maps.get(key, {}).items()):
        out[method] = _both(item.image, saliency, keep=keep, boxes=box)
    return out


def _curves(item: ExplorerImage, key: str) -> dict[str, dict]:
    return {m: _curve(c["x"], c["insertion"], c["deletion"]) for m, c in sorted(item.curves.get(key, {}).items())}


def _hex(colour) -> str:
    return "#" + "".join(f"{int(round(255 * c)):02x}" for c in colour[:3])


def prompt_view(a: Attribution, token: int | None = None) -> dict | None:
    """A view's prompt when its attribution is a joint record's image view (``core/joint.py: image_view``,
    ``meta["joint"]``): the prompt as segments, each prompt unit with its rank in the joint order (1 = first, of
    ``steps``), its colour (dark red: early) and its insertion gain (token `token`'s, else the mean over the
    tokens); ``share``: the prompt's share of the insertion gains (the token's, else the mean), beside N_t. None
    without prompt units."""
    joint = a.meta.get("joint") if isinstance(a.meta, dict) else None
    if not joint or not joint.get("units"):
        return None
    from matplotlib import colormaps

    cmap, steps = colormaps["YlOrRd"], int(joint["steps"])
    text, segments, at = str(joint["prompt"]), [], 0
    for unit in sorted(joint["units"], key=lambda u: u["start"]):
        if unit["start"] > at:
            segments.append({"text": text[at:unit["start"]]})
        early = 1.0 - (int(unit["rank"]) - 1) / max(steps - 1, 1)  # 1: the first step, 0: the last
        gains = [float(g) for g in unit["gain"]]
        gain = gains[token] if token is not None else float(np.mean(gains)) if gains else 0.0
        segments.append({"text": text[unit["start"]:unit["end"]], "rank": int(unit["rank"]),
                         "gain": round(gain, 3), "bg": _hex(cmap(0.08 + 0.87 * early)),
                         "fg": "#fff" if early > 0.6 else "#000"})
        at = unit["end"]
    if at < len(text):
        segments.append({"text": text[at:]})
    shares = [p for p in joint.get("prompt_share", []) if p is not None]
    share = (joint["prompt_share"][token] if token is not None else
             round(float(np.mean(shares)), 3) if shares else None)
    return {"segments": segments, "steps": steps, "n_regions": int(joint["n_regions"]), "share": share}


def prompt_entry(a: Attribution, token: int | None = None) -> dict:
    """``{"prompt": prompt_view(...)}`` for a joint record's view; nothing otherwise (the JSON as before)."""
    found = prompt_view(a, token)
    return {} if found is None else {"prompt": found}


def _image_data(item: ExplorerImage, norm) -> dict:
    views: dict[str, dict] = {}
    tokens: list[dict] = []
    objects: list[dict] = []
    answer = ""
    if item.sentence is not None:
        key, a = item.sentence
        answer = a.answer
        views["answer"] = {"title": "the whole answer (sentence level)", "level": "sentence",
                           "influence": round(float(np.mean(a.influence)), 3) if len(a.influence) else None,
                           "maps": _maps(item, key, a, []), "curves": _curves(item, key),
                           **prompt_entry(a)}
        colours = influence_colours(a.influence, norm)
        for t, (word, value, colour) in enumerate(zip(a.target_words, a.influence, colours)):
            name = f"t{t}"
            views[name] = {"title": f"token \u201c{word.strip()}\u201d (sentence level, its own curves)",
                           "level": "token", "influence": round(float(value), 3),
                           "maps": {"eagle": _both(item.image, token_saliency(a, t), labels=a.labels,
                                                   order=a.order)},
                           "curves": {"eagle": _token_curve(a, t)}, **prompt_entry(a, t)}
            tokens.append({"text": word, "view": name, "position": int(a.target_positions[t]),
                           "bg": "#" + "".join(f"{int(255 * c):02x}" for c in colour[:3]),
                           "fg": "#000" if value < 0.6 * norm.vmax else "#fff"})
    for j, (key, a) in enumerate(item.words):
        name = f"w{j}"
        answer = answer or a.answer
        box = [tuple(a.meta["bbox"])] if a.meta.get("bbox") else []
        word = " ".join(w.strip() for w in a.target_words) or a.meta.get("category", "")
        scale = sensitivity_scale(a)
        views[name] = {"title": f"object \u201c{word}\u201d (word level: its own search; white box: the object)",
                       "level": "word", "influence": round(float(np.mean(a.influence)), 3),
                       "sensitivity": round(sensitivity(a), 3), "scale": round(scale, 3),
                       "maps": _maps(item, key, a, box, scale), "curves": _curves(item, key),
                       **prompt_entry(a)}
        objects.append({"label": word, "view": name, "positions": [int(p) for p in a.target_positions]})
    for token in tokens:  # a token of an explained object names it (the page marks it)
        token["object"] = next((o["view"] for o in objects if token["position"] in o["positions"]), None)

    return {"id": int(item.image_id), "answer": answer, "photo": data_url(item.image), "thumb": thumb(item.image),
            "label": item.label or f"image {item.image_id}", "question": item.question, "tokens": tokens,
            "objects": objects, "views": views,
            "first": "answer" if "answer" in views else (objects[0]["view"] if objects else None)}


def explorer_data(items: list[ExplorerImage], protocol: str = "pixels") -> dict:
    """The explorer's JSON: the methods (EAGLE first, the random floor, then the baselines), and per image its
    answer tokens (coloured by influence), objects and views (see the module docstring)."""
    attributions = [a for item in items for _, a in ([item.sentence] if item.sentence else [])]
    norm = _influence_norm(attributions)
    methods = {"eagle", *(m for item in items for maps in item.maps.values() for m in maps)}
    if any(item.random for item in items):
        methods.add("random")
    ordered = sorted(methods, key=lambda m: (m != "eagle", m != "random", m))
    return {"protocol": protocol, "influence_max": round(float(norm.vmax), 3),
            "methods": [{"id": m, "name": display_name(m), "colour": method_style(m)["color"]} for m in ordered],
            "images": [_image_data(item, norm) for item in items]}


# --- the page's section -------------------------------------------------------------------------------------------
STYLE = """
#explorer { border: 1px solid #ddd; border-radius: 6px; padding: 12px 14px; margin: 1em 0; }
#explorer .ex-row { display: flex; flex-wrap: wrap; gap: 18px; align-items: flex-start; }
#explorer .ex-bar { margin: 6px 0 10px; font-size: 13px; }
#explorer button { font: inherit; cursor: pointer; }
#explorer #ex-images { display: flex; flex-wrap: wrap; gap: 6px; margin-top: 4px; }
#explorer .ex-image { border: 2px solid #ccc; background: #fff; border-radius: 4px; padding: 2px; font-size: 11px;
  max-width: 150px; text-align: center; }
#explorer .ex-image img { display: block; margin: 0 auto 2px; max-width: 64px; max-height: 64px; }
#explorer .ex-image.on { border-color: #d55e00; box-shadow: 0 0 0 1px #d55e00; }
#explorer .ex-q { font-size: 15px; margin: 4px 0; } #explorer .ex-q b { color: #555; font-weight: 600; }
#explorer .ex-whole.on, #explorer .ex-bgbtn.on, #explorer .ex-object.on { background: #222; color: #fff; }
#explorer #ex-answer { font-size: 17px; line-height: 2.1; margin: 6px 0; }
#explorer .ex-token { border: 2px solid transparent; border-radius: 4px; padding: 1px 4px; margin: 0 1px; }
#explorer .ex-token.obj { text-decoration: underline; text-decoration-thickness: 2px; }
#explorer .ex-token.on { border-color: #d55e00; box-shadow: 0 0 0 1px #d55e00; }
#explorer .ex-whole, #explorer .ex-bgbtn, #explorer .ex-object { border: 1px solid #999; border-radius: 12px;
  background: #f4f4f4;
  padding: 1px 10px; margin: 0 4px 4px 0; font-size: 13px; }
#explorer figure { margin: 0; }
#explorer #ex-map { width: 288px; height: auto; image-rendering: auto; border: 1px solid #ccc; display: block; }
#explorer #ex-photo { width: 96px; height: auto; border: 1px solid #ccc; display: block; margin-top: 6px; }
#explorer .ex-note { font-size: 12px; color: #8a5300; min-height: 1.2em; max-width: 288px; }
#explorer .ex-facts { font-size: 13px; }
#explorer .ex-facts td { padding: 1px 8px 1px 0; }
#explorer .ex-inf { display: inline-block; height: 10px; background: #3b6fb6; vertical-align: middle; }
#explorer svg text { font: 11px system-ui, sans-serif; fill: #333; }
#explorer .ex-legend { font-size: 12px; max-width: 560px; }
#explorer #ex-prompt { max-width: 288px; font-size: 14px; line-height: 1.9; margin-top: 8px; white-space: pre-wrap; }
#explorer #ex-prompt .ex-word { border-radius: 3px; padding: 1px 3px; }
#explorer #ex-prompt .ex-prompt-note { font-size: 12px; color: #555; line-height: 1.3; white-space: normal; }
#explorer .ex-legend span { display: inline-block; margin-right: 12px; }
#explorer .ex-legend i { display: inline-block; width: 18px; height: 3px; vertical-align: middle; margin-right: 4px; }
"""

SCRIPT = r"""
(function () {
  const data = JSON.parse(document.getElementById('explorer-data').textContent);
  const $ = (id) => document.getElementById(id);
  const state = {image: 0, view: null, method: 'eagle', bg: 'colour'};
  const colour = Object.fromEntries(data.methods.map(m => [m.id, m.colour]));
  const names = Object.fromEntries(data.methods.map(m => [m.id, m.name]));
  const img = () => data.images[state.image];
  function mapOf(view, method) {  // one scope: the view's own map or none
    const own = img().views[view];
    return own.maps[method] ? own.maps[method][state.bg] : null;
  }
  function curvesOf(view) { return img().views[view].curves; }
  function monotone(c) {
    for (let i = 1; i < c.x.length; i++) if (c.ins[i] < c.ins[i - 1] - 0.02 || c.del[i] > c.del[i - 1] + 0.02)
      return false;
    return true;
  }
  function el(tag, attrs, text) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function drawImages() {
    const bar = $('ex-images'); bar.textContent = '';
    data.images.forEach((im, i) => {
      const b = el('button', {class: 'ex-image' + (i === state.image ? ' on' : ''), 'data-image': i,
                              title: im.label + (im.question ? ': ' + im.question : '')});
      b.appendChild(el('img', {src: im.thumb, alt: im.label}));
      b.appendChild(el('span', {}, im.label));
      b.onclick = () => { state.image = i; state.view = img().first; render(); };
      bar.appendChild(b);
    });
    const tg = $('ex-bg'); tg.textContent = '';
    tg.appendChild(el('span', {}, 'maps on: '));
    for (const bg of ['colour', 'grey']) {
      const b = el('button', {class: 'ex-bgbtn' + (state.bg === bg ? ' on' : ''), 'data-bg': bg},
                   bg === 'colour' ? 'the colour image' : 'a grey copy');
      b.onclick = () => { state.bg = bg; render(); };
      tg.appendChild(b);
    }
  }
  function drawAnswer() {
    const box = $('ex-answer'); box.textContent = '';
    const im = img();
    $('ex-question').textContent = im.question || '';
    $('ex-question-row').style.display = im.question ? '' : 'none';
    if (im.views.answer) {
      const whole = el('button', {class: 'ex-whole' + (state.view === 'answer' ? ' on' : ''),
                                  'data-view': 'answer'}, 'whole answer');
      whole.onclick = () => select('answer'); box.appendChild(whole);
    }
    if (!im.tokens.length) box.appendChild(el('span', {}, im.answer));
    im.tokens.forEach((t) => {
      const b = el('button', {class: 'ex-token' + (t.object ? ' obj' : '') + (state.view === t.view ? ' on' : ''),
                              'data-view': t.view, title: 'influence ' + im.views[t.view].influence +
                              (t.object ? ' (part of an explained object)' : '')}, t.text.trim() || '\u2423');
      b.style.background = t.bg; b.style.color = t.fg;
      b.onclick = () => select(t.view); box.appendChild(b);
    });
    const objects = $('ex-objects'); objects.textContent = '';
    if (im.objects.length) objects.appendChild(el('span', {}, 'objects: '));
    im.objects.forEach((o) => {
      const b = el('button', {class: 'ex-object' + (state.view === o.view ? ' on' : ''), 'data-view': o.view},
                   o.label);
      b.onclick = () => select(o.view); objects.appendChild(b);
    });
  }
  function drawMethods() {
    const sel = $('ex-method'); sel.textContent = '';
    data.methods.forEach((m) => {
      const found = mapOf(state.view, m.id);
      const token = img().views[state.view].level === 'token';
      sel.appendChild(el('option', {value: m.id}, m.name + (found ? '' : token ? ' (no per-token map)' :
                                                                          ' (no map)')));
    });
    if (!data.methods.some(m => m.id === state.method)) state.method = 'eagle';
    sel.value = state.method;
  }
  function drawMap() {
    const view = img().views[state.view], found = mapOf(state.view, state.method);
    const map = $('ex-map');
    map.style.display = found ? '' : 'none';
    if (found) map.src = found;
    map.setAttribute('data-view', state.view);
    map.setAttribute('data-method', state.method);
    map.setAttribute('data-bg', state.bg);
    map.alt = names[state.method] + ': ' + view.title;
    $('ex-map-caption').textContent = names[state.method] + ' \u2014 ' + view.title +
      (found ? ', drawn on ' + (state.bg === 'colour' ? 'the colour image' : 'a grey copy') : ': no map');
    $('ex-note').textContent = !found ? (view.level === 'token' ?
      names[state.method] + ' has no per-token map: it explains whole targets, not single tokens. Pick ' +
      '\u201cwhole answer\u201d to compare it with EAGLE, or EAGLE for this token.' :
      names[state.method] + ' made no map for this target.') :
      (view.level === 'word' && state.method === 'eagle' && view.scale < 1 ?
       'map \u00d7 ' + view.scale + ': the word\'s sensitivity is ' + view.sensitivity +
       ' (the reference scales by 1.5 \u00d7 (max insertion \u2212 empty score))' : '');
    $('ex-photo').src = img().photo;
  }
  function drawPrompt() {  // a joint record: the prompt's words coloured by their rank in the joint order
    const box = $('ex-prompt'), p = img().views[state.view].prompt;
    box.textContent = ''; box.style.display = p ? '' : 'none';
    if (!p) return;
    box.appendChild(el('div', {class: 'ex-prompt-note'}, 'prompt: its words ranked with the ' + p.n_regions +
      ' regions in one joint order of ' + p.steps + ' steps (darker: earlier; hover: rank and insertion gain)'));
    p.segments.forEach((g) => {
      if (g.rank === undefined) { box.appendChild(document.createTextNode(g.text)); return; }
      const w = el('span', {class: 'ex-word', 'data-rank': g.rank,
                            title: 'rank ' + g.rank + ' of ' + p.steps + '; insertion gain ' + g.gain}, g.text);
      w.style.background = g.bg; w.style.color = g.fg;
      box.appendChild(w);
      box.appendChild(el('sub', {}, String(g.rank)));
    });
  }
  function drawFacts() {
    const view = img().views[state.view];
    const curves = curvesOf(state.view), mine = curves[state.method];
    const rows = [];
    if (view.influence !== null && view.influence !== undefined) {
      const w = Math.max(2, Math.round(120 * view.influence / data.influence_max));
      rows.push(['influence', view.influence.toFixed(3) + ' <span class="ex-inf" style="width:' + w + 'px"></span>' +
                 ' (high: the image, low: language prior)']);
    }
    if (view.prompt && view.prompt.share !== null && view.prompt.share !== undefined)
      rows.push(['modality share', 'prompt ' + view.prompt.share.toFixed(2) + ' \u00b7 regions ' +
                 (1 - view.prompt.share).toFixed(2) + ' (of the joint insertion gains)']);
    if (view.sensitivity !== undefined) rows.push(['sensitivity', view.sensitivity.toFixed(3)]);
    if (mine) rows.push(['insertion AUC', mine.auc[0].toFixed(3) + ' (higher is better)'],
                        ['deletion AUC', mine.auc[1].toFixed(3) + ' (lower is better)']);
    $('ex-facts').innerHTML = rows.map(r => '<tr><td>' + r[0] + '</td><td>' + r[1] + '</td></tr>').join('');
  }
  function chart(svg, key, title, xlabel) {
    const W = 270, H = 190, L = 34, R = 8, T = 20, B = 32;
    const x = v => L + v * (W - L - R), y = v => H - B - v * (H - T - B);
    let s = '<rect x="' + L + '" y="' + T + '" width="' + (W - L - R) + '" height="' + (H - T - B) +
            '" fill="#fafafa" stroke="#ccc"/>';
    for (const v of [0, 0.5, 1]) {
      s += '<text x="' + (L - 4) + '" y="' + (y(v) + 4) + '" text-anchor="end">' + v + '</text>';
      s += '<text x="' + x(v) + '" y="' + (H - B + 14) + '" text-anchor="middle">' + v + '</text>';
    }
    s += '<text x="' + (L + (W - L - R) / 2) + '" y="' + (H - 4) + '" text-anchor="middle">' + xlabel + '</text>';
    s += '<text x="' + L + '" y="13">' + title + '</text>';
    const curves = curvesOf(state.view);
    const order = Object.keys(curves).sort((a, b) => (a === state.method) - (b === state.method));
    for (const m of order) {
      const c = curves[m], on = m === state.method;
      const pts = c.x.map((v, i) => x(key === 'del' ? v : v).toFixed(1) + ',' + y(c[key][i]).toFixed(1)).join(' ');
      s += '<polyline data-method="' + m + '" points="' + pts + '" fill="none" stroke="' + colour[m] +
           '" stroke-width="' + (on ? 3 : 1.3) + '" stroke-opacity="' + (on ? 1 : 0.55) + '"' +
           (on ? '' : ' stroke-dasharray="4 2"') + '/>';
    }
    svg.innerHTML = s;
  }
  function drawLegend() {
    const curves = curvesOf(state.view), view = img().views[state.view];
    $('ex-legend').innerHTML = Object.keys(curves).map(m => '<span><i style="background:' + colour[m] +
      '"></i>' + names[m] + (m === state.method ? ' (selected)' : '') + '</span>').join('');
    const notes = [];
    if (!curves[state.method]) notes.push(names[state.method] + ' has no curves for ' + view.title +
      (view.level === 'token' ? ' (no per-token map); the curves drawn are EAGLE\'s for this token.' : '.'));
    const bent = Object.keys(curves).filter(m => !monotone(curves[m]));
    if (bent.length) notes.push('Not monotone (' + bent.map(m => names[m]).join(', ') + '): ' +
      (view.level === 'token' ? 'one token\'s probability is read at each step of an order chosen for the ' +
       'whole answer, so a region can help this token after it was removed or hurt it once inserted; the ' +
       'curve goes up and down where the regions help other tokens.' :
       'a region can lower the explained tokens\' probability when inserted (or raise it when removed): ' +
       'the curve follows the model, not a sorted list.'));
    $('ex-curve-note').textContent = notes.join(' ');
  }
  function select(view) { state.view = view; render(); }
  function render() {
    if (!state.view) state.view = img().first;
    $('explorer').setAttribute('data-scope', img().views[state.view].level);
    drawImages(); drawAnswer(); drawMethods(); drawMap(); drawPrompt(); drawFacts();
    chart($('ex-ins'), 'ins', 'insertion', 'area kept');
    chart($('ex-del'), 'del', 'deletion', 'area removed');
    drawLegend();
  }
  $('ex-method').onchange = (e) => { state.method = e.target.value; render(); };
  if (data.images.length) { state.view = img().first; render(); }
  else { $('explorer').textContent = 'No attribution to explore in this run.'; }
})();
"""


def script_json(data) -> str:
    """`data` as JSON that is safe inside a ``<script>`` element: ``<``, ``>`` and ``&`` (and the JavaScript line
    separators U+2028/U+2029) written as ``\\uXXXX`` escapes, so no answer or label (``</script>``, ``<!--<script``)
    can end the element or switch the HTML parser's script state; ``JSON.parse`` reads the same strings back."""
    text = json.dumps(data, separators=(",", ":"))
    for char in "<>&\u2028\u2029":
        text = text.replace(char, f"\\u{ord(char):04x}")
    return text


def explorer_html(data: dict | None) -> str:
    """The explorer's section of the page (an empty string without data)."""
    if not data or not data.get("images"):
        return ""
    payload = script_json(data)
    protocol = html.escape(data.get("protocol", "pixels"))
    return f"""<h2>Explorer</h2>
<p>Click a token of the answer to see its map over the image (EAGLE's order seen through that token's own
insertion and deletion curves), its curves and its influence; <em>whole answer</em> shows the sentence-level
attribution, an object (underlined tokens) its own word-level search. The selector shows the random floor and the
baselines for the same target (curves: {protocol} protocol for the baselines; EAGLE's token curves are its own
region curves); the baselines explain whole targets, so with a token selected only EAGLE has a map and curves.
Bright: the top quarter of the image by the method's ranking; numbers: EAGLE's first regions. The toggle draws the
maps on the colour image or on a grey copy. Where EAGLE ranked the prompt's words too (prompt_units: words), the
prompt under the map has its words coloured by their rank in the joint order, and the modality share (the prompt's
and the regions' parts of the insertion gain) stands next to the influence.</p>
<style>{STYLE}</style>
<div id="explorer">
 <div class="ex-bar">image: <div id="ex-images"></div></div>
 <div class="ex-bar" id="ex-bg"></div>
 <div class="ex-q" id="ex-question-row"><b>question</b> <span id="ex-question"></span></div>
 <div id="ex-answer"></div>
 <div class="ex-bar" id="ex-objects"></div>
 <div class="ex-bar">method: <select id="ex-method"></select></div>
 <div class="ex-row">
  <figure><img id="ex-map" alt="map"><figcaption id="ex-map-caption"></figcaption>
   <div class="ex-note" id="ex-note"></div><div id="ex-prompt" style="display:none"></div></figure>
  <div><svg id="ex-ins" width="270" height="190"></svg><svg id="ex-del" width="270" height="190"></svg>
   <div class="ex-legend" id="ex-legend"></div>
   <div class="ex-note" id="ex-curve-note" style="max-width:560px"></div>
   <table class="ex-facts" id="ex-facts"></table>
   <img id="ex-photo" alt="the image"></div>
 </div>
</div>
<script type="application/json" id="explorer-data">{payload}</script>
<script>{SCRIPT}</script>
"""
