"""eagle_repope's explorer: one wrong answer at a time (image thumbnails as the selector): the question, the wrong
answer and the label; EAGLE's map of the counter token (the correct answer, teacher-forced) with the trigger in red
and the true cause in green; and the removal sequence, one step at a time: the image as the model saw it with the
regions removed so far blacked out (the one removed at that step outlined in yellow), the answer regenerated after
it, and the step that corrected the answer marked.

``repope_explorer`` takes the samples of ``figures.hallucination_figure`` (the same rows the static figure draws);
``repope_html`` is the page's section."""

from __future__ import annotations

import numpy as np

from eagle_pipelines.core.plotting import attribution_display, outlined
from eagle_pipelines.reporting.explorer import data_url, prompt_entry
from eagle_pipelines.reporting.explorers.common import maps_of, section, thumb

#: the most removal steps one wrong answer carries (the corrected step is always among them)
MOST_STEPS = 24


def _cause(sample: dict):
    if sample.get("cause_mask") is None or not np.any(sample["cause_mask"]):
        return None
    from scipy import ndimage

    return ndimage.binary_dilation(np.asarray(sample["cause_mask"], bool), iterations=2)


def _steps(fix: dict) -> list[int]:
    ks = list(fix["ks"])
    last = ks.index(fix["corrected_k"]) if fix.get("corrected_k") in ks else len(ks) - 1
    shown = list(range(last + 1))
    if len(shown) > MOST_STEPS:
        shown = sorted({round(float(v)) for v in np.linspace(0, last, MOST_STEPS)})
    return shown


def _record(s: dict) -> dict:
    image, a, fix = s["image"], s["attribution"], s["correction"]
    order = np.asarray(fix.get("order") or a.order)
    trigger = fix.get("correcting_region")
    cause = _cause(s)
    marks = [] if cause is None else [(cause, (40, 220, 40))]
    if trigger is not None:
        marks.append((a.labels == trigger, (255, 40, 40)))
    steps = []
    for i in _steps(fix):
        k = int(fix["ks"][i])
        removed = order[len(order) - k:] if k else order[:0]
        keep = ~np.isin(a.labels, removed)
        picture = (image * keep[..., None]).astype(np.uint8)
        corrected = k == fix.get("corrected_k")
        lines = [] if cause is None else [(cause, (40, 220, 40))]
        if corrected and trigger is not None:
            lines.append((a.labels == trigger, (255, 40, 40)))
        elif k:
            lines.append((a.labels == order[len(order) - k], (255, 215, 0)))
        steps.append({"step": i + 1, "k": k, "area": round(float(fix["removed_area"][i]), 3),
                      "answer": str(fix["answers"][i]), "corrected": bool(corrected),
                      "src": data_url(outlined(picture, lines))})
    corrected_step = next((st["step"] for st in steps if st["corrected"]), None)
    qid = str(s["question_id"])
    return {"id": qid, "label": f"Q{qid}", "thumb": thumb(image), "question": str(s["text"]),
            "answer": str(s["answer"]), "truth": str(s["label"]), "counter": a.answer.strip(),
            "map": maps_of(lambda bg: attribution_display(image, a.saliency(), labels=a.labels, order=a.order,
                                                          outlines=marks, background=bg).rgb),
            "steps": steps, "corrected_step": corrected_step, "amcr": round(float(fix.get("amcr", 1.0)), 3),
            "cause": cause is not None, "trigger": trigger is not None,
            **prompt_entry(a)}  # a joint record: the question's words


def repope_explorer(samples: list[dict]) -> dict:
    """The explorer's JSON: one record per wrong answer of `samples` (``hallucination_figure``'s rows)."""
    return {"records": [_record(s) for s in samples if s["correction"].get("ks")]}


SCRIPT = r"""
(function () {
  const data = JSON.parse(document.getElementById('rx-data').textContent);
  const $ = (id) => document.getElementById(id);
  const state = {rec: 0, step: null};
  const rec = () => data.records[state.rec];
  function pickRecord(i) { state.rec = i; state.step = rec().corrected_step || rec().steps.length; render(); }
  function render() {
    const r = rec();
    XP.thumbs($('rx-thumbs'), data.records, state.rec, pickRecord);
    $('rx-question').textContent = r.question;
    $('rx-answer').textContent = r.answer;
    $('rx-truth').textContent = r.truth;
    $('rx-map').src = r.map[XP.bg];
    $('rx-map').setAttribute('data-bg', XP.bg);
    $('rx-map-caption').textContent = 'EAGLE: the regions behind the counter token \u201c' + r.counter +
      '\u201d (the correct answer), drawn on ' + (XP.bg === 'colour' ? 'the colour image' : 'a grey copy') +
      (r.trigger ? '; red: the region whose removal corrected the answer' : '') +
      (r.cause ? '; green: the true cause' : '');
    const pb = $('rx-prompt'); pb.textContent = ''; pb.style.display = r.prompt ? '' : 'none';
    if (r.prompt) {  // a joint record: the question's words coloured by their rank in the joint order
      pb.appendChild(XP.el('div', {class: 'xp-note'}, 'question words ranked with the ' + r.prompt.n_regions +
        ' regions in one joint order of ' + r.prompt.steps + ' steps (darker: earlier); modality share: prompt ' +
        (r.prompt.share === null ? 'n/a' : r.prompt.share.toFixed(2) + ' \u00b7 regions ' +
         (1 - r.prompt.share).toFixed(2))));
      r.prompt.segments.forEach((g) => {
        if (g.rank === undefined) { pb.appendChild(document.createTextNode(g.text)); return; }
        const w = XP.el('span', {class: 'xp-word', 'data-rank': g.rank,
                                 title: 'rank ' + g.rank + ' of ' + r.prompt.steps + '; insertion gain ' + g.gain},
                        g.text);
        w.style.background = g.bg; w.style.color = g.fg; pb.appendChild(w);
        pb.appendChild(XP.el('sub', {}, String(g.rank)));
      });
    }
    const bar = $('rx-steps'); bar.textContent = '';
    r.steps.forEach((st) => {
      const b = XP.el('button', {class: 'xp-step' + (st.step === state.step ? ' on' : '') +
                                 (st.corrected ? ' fix' : ''), 'data-step': st.step},
                      String(st.step) + (st.corrected ? ' \u2713' : ''));
      b.title = st.k + ' regions removed: ' + st.answer;
      b.onclick = () => { state.step = st.step; render(); };
      bar.appendChild(b);
    });
    const st = r.steps.find(s => s.step === state.step) || r.steps[r.steps.length - 1];
    $('rx-step-img').src = st.src;
    $('rx-step-img').setAttribute('data-step', st.step);
    $('rx-step-caption').textContent = 'step ' + st.step + ': ' + st.k + ' lowest-ranked regions removed (' +
      Math.round(100 * st.area) + '% of the image)' + (!st.k ? '' : st.corrected && r.trigger ?
      '; red: removed at this step, and the answer turned right' : '; yellow: removed at this step');
    const said = $('rx-step-answer');
    said.textContent = 'answer after this step: ' + st.answer;
    said.className = st.corrected ? 'ok' : 'bad';
    $('rx-fixed').textContent = r.corrected_step ?
      'Corrected at step ' + r.corrected_step + ' (AMCR ' + r.amcr + ': the area removed by then).' :
      'Never corrected within the search (AMCR counts 1).';
  }
  if (data.records.length) { XP.toggle($('rx-bg'), render); pickRecord(0); }
})();
"""

BODY = """
 <div class="xp-bar">wrong answer:</div><div class="xp-thumbs" id="rx-thumbs"></div>
 <div class="xp-q"><b>question</b> <span id="rx-question"></span></div>
 <div class="xp-q"><b>model's answer</b> <span id="rx-answer" class="bad"></span> &nbsp; <b>label</b>
  <span id="rx-truth"></span></div>
 <div class="xp-bar" id="rx-bg"></div>
 <div class="xp-row">
  <figure style="margin:0"><img id="rx-map" class="xp-map" alt="counter token map">
   <figcaption id="rx-map-caption" class="xp-note"></figcaption>
   <div id="rx-prompt" class="xp-prompt" style="display:none"></div></figure>
  <div><div class="xp-bar">removal sequence (EAGLE's lowest-ranked regions first), step:</div>
   <div id="rx-steps"></div>
   <figure style="margin:0"><img id="rx-step-img" class="xp-map" alt="the image at this step">
    <figcaption id="rx-step-caption" class="xp-note"></figcaption></figure>
   <div id="rx-step-answer"></div><div id="rx-fixed" class="xp-note"></div></div>
 </div>"""


def repope_html(data: dict | None) -> str:
    if not data or not data.get("records"):
        return ""
    intro = ("Pick a wrong answer by its image. Left: EAGLE's map of the counter token (the correct answer, "
             "teacher-forced). Right: the removal sequence: click a step to see the image as the model saw it and "
             "the answer it gave then; \u2713 marks the step that corrected the answer.")
    return section("Explorer", intro, "rx", BODY, data, SCRIPT)
