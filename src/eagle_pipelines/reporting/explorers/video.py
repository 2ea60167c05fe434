"""eagle_video's explorer: one clip at a time (its first frame's thumbnail as the selector): the question and the
answer, the explained words, the frame-importance strip (each frame's share of the search's gain, a bar per frame;
click one) and the selected frame's map (core.plotting.video_frame_displays: one colour scale over the clip, the
clip's first regions numbered in whichever frame they lie), in colour or on a grey copy, beside the frame itself.

``video_explorer`` takes (key, frames, VideoAttribution, question) per clip; ``video_html`` is the page's section."""

from __future__ import annotations

import numpy as np

from eagle_pipelines.core.plotting import video_frame_displays
from eagle_pipelines.reporting.explorer import data_url
from eagle_pipelines.reporting.explorers.common import section, thumb


def video_explorer(clips: list[tuple[str, np.ndarray, object, str]], keep: float = 0.1) -> dict:
    records = []
    for key, frames, a, question in clips:
        frames = np.asarray(frames)
        shown = {bg: video_frame_displays(a, frames, keep=keep, background=bg) for bg in ("colour", "grey")}
        shares = a.frame_importance()
        times = a.timestamps
        top = a.top_frame()
        records.append({
            "id": str(key), "label": str(key), "thumb": thumb(frames[top]), "question": question,
            "answer": a.answer, "explained": " ".join(w.strip() for w in a.target_words),
            "top_frame": int(top),
            "frames": [{"time": round(float(times[k]), 2), "share": round(float(shares[k]), 4),
                        "photo": data_url(frames[k]),
                        "map": {bg: data_url(shown[bg][k].rgb) for bg in shown},
                        "ranks": [int(r) for r, _, _ in shown["colour"][k].ranks]}
                       for k in range(len(frames))]})
    return {"records": records}


SCRIPT = r"""
(function () {
  const data = JSON.parse(document.getElementById('vx-data').textContent);
  const $ = (id) => document.getElementById(id);
  const state = {rec: 0, frame: 0};
  const rec = () => data.records[state.rec];
  function strip() {
    const r = rec(), n = r.frames.length, W = 40 * n + 40, H = 120, B = 22;
    const top = Math.max(...r.frames.map(f => f.share), 1e-6);
    let s = '';
    r.frames.forEach((f, k) => {
      const h = Math.max(1, (H - B - 20) * f.share / top), x = 20 + 40 * k;
      s += '<g class="vx-bar" data-frame="' + k + '" style="cursor:pointer">' +
           '<rect x="' + x + '" y="' + (H - B - h) + '" width="30" height="' + h + '" fill="' +
           (k === state.frame ? '#d55e00' : '#3b528b') + '"/>' +
           '<rect x="' + x + '" y="10" width="30" height="' + (H - B - 10) + '" fill="transparent"/>' +
           '<text x="' + (x + 15) + '" y="' + (H - 8) + '" text-anchor="middle">' + (k + 1) + '</text>' +
           '<text x="' + (x + 15) + '" y="' + (H - B - h - 3) + '" text-anchor="middle">' +
           Math.round(100 * f.share) + '%</text></g>';
    });
    const svg = $('vx-strip');
    svg.setAttribute('width', W); svg.setAttribute('height', H); svg.innerHTML = s;
    svg.querySelectorAll('.vx-bar').forEach(g => {
      g.onclick = () => { state.frame = +g.getAttribute('data-frame'); render(); };
    });
  }
  function render() {
    const r = rec(), f = r.frames[state.frame];
    XP.thumbs($('vx-thumbs'), data.records, state.rec, (i) => { state.rec = i; state.frame = rec().top_frame;
                                                               render(); });
    $('vx-question').textContent = r.question;
    $('vx-answer').textContent = r.answer;
    $('vx-explained').textContent = r.explained;
    const bar = $('vx-frames'); bar.textContent = '';
    r.frames.forEach((fr, k) => {
      const b = XP.el('button', {class: 'xp-step' + (k === state.frame ? ' on' : ''), 'data-frame': k},
                      'frame ' + (k + 1) + (k === r.top_frame ? ' \u2605' : ''));
      b.onclick = () => { state.frame = k; render(); };
      bar.appendChild(b);
    });
    strip();
    $('vx-map').src = f.map[XP.bg];
    $('vx-map').setAttribute('data-frame', state.frame);
    $('vx-photo').src = f.photo;
    $('vx-map-caption').textContent = 'frame ' + (state.frame + 1) + ' of ' + r.frames.length + ' (t = ' +
      f.time + ' s): ' + Math.round(100 * f.share) + '% of the search\'s gain' +
      (f.ranks.length ? '; the clip\'s regions ranked ' + f.ranks.join(', ') + ' lie here' :
       '; none of the clip\'s first regions lie here (dimmed)');
  }
  if (data.records.length) { XP.toggle($('vx-bg'), render); state.frame = rec().top_frame; render(); }
})();
"""

BODY = """
 <div class="xp-bar">clip:</div><div class="xp-thumbs" id="vx-thumbs"></div>
 <div class="xp-q"><b>question</b> <span id="vx-question"></span></div>
 <div class="xp-q"><b>answer</b> <span id="vx-answer"></span> &nbsp;
  <b>explained</b> <span id="vx-explained"></span></div>
 <div class="xp-bar">frame importance (each frame's share of the search's gain; click a bar or a frame;
  \u2605: the frame of the region ranked first):</div>
 <svg id="vx-strip"></svg>
 <div class="xp-bar" id="vx-frames"></div>
 <div class="xp-bar" id="vx-bg"></div>
 <div class="xp-row">
  <figure style="margin:0"><img id="vx-map" class="xp-map" alt="the frame's map">
   <figcaption id="vx-map-caption" class="xp-note"></figcaption></figure>
  <figure style="margin:0"><img id="vx-photo" class="xp-small" alt="the frame"><figcaption class="xp-note">the frame
   as the model saw it</figcaption></figure>
 </div>"""


def video_html(data: dict | None) -> str:
    if not data or not data.get("records"):
        return ""
    intro = ("Pick a clip by its thumbnail (the frame EAGLE ranks first). The strip shows which moment the answer "
             "relies on; click a frame to see its map on one colour scale over the whole clip (lit: the clip's "
             "first regions; a frame holding none is dimmed).")
    return section("Explorer", intro, "vx", BODY, data, SCRIPT)
