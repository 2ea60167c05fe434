"""eagle_mitigation's explorer: one diagnosed answer at a time (image thumbnails as the selector): the prompt, the
plain (unguided) answer beside every guided setting's answer for the same task, and the answer's tokens; per token
its necessity N and sufficiency S at every layer (two bar charts, the prior threshold drawn) and the token's top-k
EAGLE regions (the "part" S keeps) over the image, in colour or on a grey copy.

``mitigation_explorer`` takes the diagnosed answers (``Diagnostics``), their working images and region maps, and
the sweep's answers per setting; ``mitigation_html`` is the page's section."""

from __future__ import annotations

import numpy as np

from eagle_pipelines.core.plotting import _grey, outlined
from eagle_pipelines.reporting.explorers.common import maps_of, section, thumb


def regions_picture(image: np.ndarray, mask: np.ndarray, background: str = "colour", dim: float = 0.3) -> np.ndarray:
    """`image` (colour or a grey copy) dimmed outside `mask`, the mask's edge in white."""
    base = image.astype(np.float32) if background == "colour" else np.repeat(
        (_grey(image) * 255)[..., None], 3, axis=2)
    shown = np.where(mask[..., None], base, base * dim).clip(0, 255).astype(np.uint8)
    return outlined(shown, [(mask, (255, 255, 255))])


def _round(values) -> list[float]:
    return [round(float(v), 3) for v in values]


def mitigation_explorer(samples: list[dict], settings: list[dict]) -> dict:
    """`samples`: per diagnosed answer ``{"diag": Diagnostics, "image": (H, W, 3) uint8, "labels": (H, W) region
    map the diagnostics' EAGLE searches ran on}``; `settings`: per setting (sweep order, plain decoding first)
    ``{"label", "best", "answers": {task_id: text}}``."""
    records = []
    for s in samples:
        diag, image, labels = s["diag"], s["image"], np.asarray(s["labels"])
        task = diag.meta.get("task_id")
        n, suff = diag.necessity, diag.sufficiency
        prior = diag.prior_driven()
        tokens = []
        for t, word in enumerate(diag.tokens or [str(i) for i in range(n.shape[1])]):
            regions = diag.part_regions[t] if t < len(diag.part_regions) else []
            mask = np.isin(labels, regions)
            tokens.append({"text": str(word), "n": _round(n[:, t]), "s": _round(suff[:, t]),
                           "prior": bool(prior[t]), "regions": [int(r) for r in regions],
                           "area": round(float(diag.part_area[t]), 3) if t < len(diag.part_area) else None,
                           "map": maps_of(lambda bg, m=mask: regions_picture(image, m, bg))})
        answers = [{"setting": st["label"], "best": bool(st.get("best")), "plain": i == 0,
                    "text": st["answers"].get(task)} for i, st in enumerate(settings) if task in st["answers"]]
        kind = str(diag.meta.get("kind", ""))
        records.append({"id": str(task), "label": f"{kind} #{task}", "thumb": thumb(image), "kind": kind,
                        "prompt": diag.prompt, "answer": diag.answer, "tokens": tokens, "answers": answers,
                        "top_k": diag.top_k, "threshold": diag.prior_threshold, "layers": int(diag.n_layers)})
    return {"records": records}


SCRIPT = r"""
(function () {
  const data = JSON.parse(document.getElementById('mx-data').textContent);
  const $ = (id) => document.getElementById(id);
  const state = {rec: 0, tok: 0};
  const rec = () => data.records[state.rec];
  function bars(svg, values, title, threshold) {
    const W = 380, H = 30 + 18 * values.length, L = 56, R = 46;
    const lo = Math.min(0, ...values, threshold === null ? 0 : threshold);
    const hi = Math.max(0, ...values, threshold === null ? 0 : threshold, 1e-6);
    const x = v => L + (v - lo) / (hi - lo) * (W - L - R);
    let s = '<text x="0" y="12">' + title + '</text>';
    values.forEach((v, i) => {
      const y = 20 + 18 * (values.length - 1 - i);
      s += '<text x="' + (L - 6) + '" y="' + (y + 11) + '" text-anchor="end">layer ' + (i + 1) + '</text>';
      s += '<rect data-layer="' + (i + 1) + '" x="' + Math.min(x(0), x(v)) + '" y="' + (y + 2) + '" width="' +
           Math.max(1, Math.abs(x(v) - x(0))) + '" height="12" fill="' + (v >= 0 ? '#3b6fb6' : '#c0504d') + '"/>';
      s += '<text x="' + (Math.max(x(0), x(v)) + 3) + '" y="' + (y + 12) + '">' + v.toFixed(2) + '</text>';
    });
    s += '<line x1="' + x(0) + '" x2="' + x(0) + '" y1="18" y2="' + (H - 8) + '" stroke="#555"/>';
    if (threshold !== null) s += '<line x1="' + x(threshold) + '" x2="' + x(threshold) + '" y1="18" y2="' +
      (H - 8) + '" stroke="#b00020" stroke-dasharray="3 2"/>';
    svg.setAttribute('height', H); svg.setAttribute('width', W); svg.innerHTML = s;
  }
  function render() {
    const r = rec(), t = r.tokens[state.tok];
    XP.thumbs($('mx-thumbs'), data.records, state.rec, (i) => { state.rec = i; state.tok = 0; render(); });
    $('mx-prompt').textContent = r.prompt;
    const tab = $('mx-answers'); tab.innerHTML = '<tr><th>decoding</th><th>answer</th></tr>';
    r.answers.forEach((a) => {
      const tr = XP.el('tr', {'data-setting': a.setting});
      tr.appendChild(XP.el('td', {}, (a.plain ? 'plain (no guidance)' : a.setting) + (a.best ? ' \u2605 best' : '')));
      tr.appendChild(XP.el('td', {}, a.text === null ? '(not answered)' : a.text));
      tab.appendChild(tr);
    });
    const box = $('mx-tokens'); box.textContent = '';
    r.tokens.forEach((tk, i) => {
      const b = XP.el('button', {class: 'xp-tok' + (i === state.tok ? ' on' : '') + (tk.prior ? ' prior' : ''),
                                 'data-token': i}, tk.text.trim() || '\u2423');
      b.title = tk.prior ? 'prior-driven: N at the last layer below the threshold' : 'N ' + tk.n[tk.n.length - 1];
      b.onclick = () => { state.tok = i; render(); };
      box.appendChild(b);
    });
    $('mx-map').src = t.map[XP.bg];
    $('mx-map').setAttribute('data-token', state.tok);
    $('mx-map-caption').textContent = 'token \u201c' + t.text.trim() + '\u201d: its top-' + r.top_k +
      ' EAGLE regions (' + (t.area === null ? '?' : Math.round(100 * t.area)) + '% of the image), the part S keeps';
    bars($('mx-n'), t.n, 'necessity N per layer (nats; dashes: threshold ' + r.threshold + ')', r.threshold);
    bars($('mx-s'), t.s, 'sufficiency S per layer (top-' + r.top_k + ' regions only)', null);
    $('mx-verdict').textContent = t.prior ?
      'Prior-driven: with the image removed this token is about as likely (N below ' + r.threshold + ').' :
      'Image-driven: the image raises this token\'s log-probability by ' + t.n[t.n.length - 1] + ' nats.';
  }
  if (data.records.length) { XP.toggle($('mx-bg'), render); render(); }
})();
"""

BODY = """
 <div class="xp-bar">diagnosed answer:</div><div class="xp-thumbs" id="mx-thumbs"></div>
 <div class="xp-q"><b>prompt</b> <span id="mx-prompt"></span></div>
 <table class="xp-t" id="mx-answers"></table>
 <div class="xp-bar">tokens of the plain answer (red: prior-driven): <span id="mx-tokens"></span></div>
 <div class="xp-bar" id="mx-bg"></div>
 <div class="xp-row">
  <figure style="margin:0"><img id="mx-map" class="xp-map" alt="the token's regions">
   <figcaption id="mx-map-caption" class="xp-note"></figcaption></figure>
  <div><svg id="mx-n"></svg><br><svg id="mx-s"></svg><div id="mx-verdict" class="xp-note"></div></div>
 </div>"""


def mitigation_html(data: dict | None) -> str:
    if not data or not data.get("records"):
        return ""
    intro = ("Pick a diagnosed answer by its image: its prompt, the plain answer beside each guided setting's, "
             "then a token of the plain answer: its necessity N (log p with the image \u2212 without) and "
             "sufficiency S (its top-k regions alone) at every layer, and those regions over the image.")
    return section("Explorer", intro, "mx", BODY, data, SCRIPT)
