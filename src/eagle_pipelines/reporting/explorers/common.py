"""What every explorer of a report shares: a map in both backgrounds (``maps_of``: the colour image and the greyscale
copy, as JPEG data URLs), image thumbnails, the style, a few lines of JavaScript (``COMMON_JS``: an element
builder, the thumbnail selector, the colour/grey toggle) and the section's frame (``section``). Everything lives in
the page (no library, works offline)."""

from __future__ import annotations

import html


from eagle_pipelines.reporting.explorer import THUMB_SIDE, data_url, script_json, thumb  # noqa: F401 - shared


def maps_of(draw) -> dict[str, str]:
    """``{"colour": url, "grey": url}``: `draw(background)` (an RGB array) on each background."""
    return {bg: data_url(draw(bg)) for bg in ("colour", "grey")}


STYLE = """
.xp { border: 1px solid #ddd; border-radius: 6px; padding: 12px 14px; margin: 1em 0; }
.xp button { font: inherit; cursor: pointer; }
.xp .xp-thumbs { display: flex; flex-wrap: wrap; gap: 6px; margin: 4px 0 10px; }
.xp .xp-thumb { border: 2px solid #ccc; border-radius: 4px; background: #fff; padding: 2px; font-size: 11px;
  max-width: 150px; text-align: center; }
.xp .xp-thumb img { display: block; margin: 0 auto 2px; max-width: 64px; max-height: 64px; }
.xp .xp-thumb.on { border-color: #d55e00; box-shadow: 0 0 0 1px #d55e00; }
.xp .xp-row { display: flex; flex-wrap: wrap; gap: 18px; align-items: flex-start; }
.xp figure { max-width: 300px; }
.xp .xp-map { width: 288px; height: auto; border: 1px solid #ccc; display: block; }
.xp .xp-small { width: 150px; height: auto; border: 1px solid #ccc; display: block; }
.xp .xp-note { font-size: 12px; color: #8a5300; max-width: 560px; }
.xp .xp-q { font-size: 15px; margin: 4px 0; } .xp .xp-q b { color: #555; font-weight: 600; }
.xp .xp-bar { margin: 6px 0; font-size: 13px; }
.xp .xp-tok { border: 2px solid transparent; border-radius: 4px; padding: 1px 5px; margin: 0 1px; background: #f2f2f2; }
.xp .xp-tok.on { border-color: #d55e00; }
.xp .xp-tok.prior { color: #b00020; }
.xp .xp-step { border: 1px solid #bbb; border-radius: 4px; background: #fff; margin: 0 4px 4px 0; padding: 1px 7px; }
.xp .xp-step.on { background: #222; color: #fff; } .xp .xp-step.fix { border-color: #1a7f37; border-width: 2px; }
.xp table.xp-t { border-collapse: collapse; font-size: 12px; } .xp table.xp-t td, .xp table.xp-t th {
  padding: 2px 8px; border-bottom: 1px solid #eee; text-align: left; }
.xp .ok { color: #1a7f37; font-weight: 600; } .xp .bad { color: #b00020; font-weight: 600; }
.xp svg text { font: 11px system-ui, sans-serif; fill: #333; }
.xp .xp-prompt { max-width: 288px; font-size: 14px; line-height: 1.9; margin-top: 8px; white-space: pre-wrap; }
.xp .xp-word { border-radius: 3px; padding: 1px 3px; }
"""

COMMON_JS = r"""
window.XP = window.XP || {
  bg: 'colour',
  el(tag, attrs, text) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  },
  thumbs(box, items, current, pick) {
    box.textContent = '';
    items.forEach((it, i) => {
      const b = XP.el('button', {class: 'xp-thumb' + (i === current ? ' on' : ''), 'data-index': i,
                                 title: it.label});
      b.appendChild(XP.el('img', {src: it.thumb, alt: it.label}));
      b.appendChild(XP.el('span', {}, it.label));
      b.onclick = () => pick(i);
      box.appendChild(b);
    });
  },
  toggle(box, rerender) {
    box.textContent = '';
    box.appendChild(XP.el('span', {}, 'maps on: '));
    for (const bg of ['colour', 'grey']) {
      const b = XP.el('button', {class: 'xp-step' + (XP.bg === bg ? ' on' : ''), 'data-bg': bg},
                      bg === 'colour' ? 'the colour image' : 'a grey copy');
      b.onclick = () => { XP.bg = bg; XP.listeners.forEach(f => f()); };
      box.appendChild(b);
    }
    XP.listeners.push(rerender);
  },
  listeners: [],
};
"""


def section(title: str, intro: str, root: str, body: str, data: dict, script: str) -> str:
    """An explorer's section: its heading and introduction, the ``<div id=root>`` holding `body`, the data as JSON
    (``<script type=application/json id=root-data>``) and its script (after ``COMMON_JS``)."""
    return f"""<h2>{html.escape(title)}</h2>
<p>{intro}</p>
<style>{STYLE}</style>
<div class="xp" id="{root}">{body}</div>
<script type="application/json" id="{root}-data">{script_json(data)}</script>
<script>{COMMON_JS}</script>
<script>{script}</script>
"""
