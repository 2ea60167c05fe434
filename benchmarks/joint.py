"""Joint prompt-word + image-region attribution against known causes, on the embedded yes/no questions.

    python benchmarks/joint.py                         # every embedded question, 16 SLICO regions
    python benchmarks/joint.py --questions 8 --regions 12

The embedded eagle_mmvp set (conf/base/parameters_eagle_mmvp.yml: image pairs that differ in one object's colour,
"Is there a red circle in the image?" asked of both) has known causes: the object word of the question (its shape
word, e.g. "circle"; the colour word is counted in a second column) and, where the object is in the image, the
object's regions (the pixels where the two images of a pair differ: exactly the recoloured object). Per method:

- ``prompt_hit``: the first prompt unit of the order is the shape word (every question);
  ``prompt_hit_name``: it is the shape or the colour word;
- ``region_hit``: the first region of the order has most of its pixels on the object (questions whose object is
  in the image);
- ``insertion_auc`` / ``deletion_auc``: the joint curves (``core/joint.py: joint_auc``, mean over answer tokens);
- ``passes``: forward passes per answer to make the order (the curves of Captum's and random's orders cost 2N
  more, not counted).

Methods (the ``method`` column):

- ``eagle-joint (<strategy>)``: ``explain(..., prompt_units="words", strategy=...)`` for each of
  ``--strategies`` (default ``pooled greedy efficient``: explain()'s default beside the two that re-score every
  candidate in context; ``pooled`` ranks by single candidates and places a question's words and object, which
  count only together, last: docs/method.md, "Joint attribution"); ``eagle-joint`` when only one is given;
- ``captum-feature-ablation``: Captum's own ``LLMAttribution(FeatureAblation)`` over the same units
  (``core/baselines/captum_joint.py``: an ``ImageMaskInput`` over the superpixel map, black baseline, joined with a
  ``TextTemplateInput`` whose values are the prompt units), the removed unit's word replaced by the pad token's
  text once per token, checked to encode exactly as EAGLE-joint's removal rule; units ranked by Captum's
  attribution (the drop of the explained tokens' log-probability when it alone is removed); one pass per
  candidate (region or unit) plus the full input;
- ``captum-feature-ablation (cut)``: the same with Captum's default text baseline ``""`` (the word cut out, later
  tokens shifted) for the ranking; its curves still use EAGLE-joint's rule (``--captum-text-baselines``);
- ``random``: a random order of the same units.

Writes data/08_reporting/benchmarks/joint.csv (one row per method) and joint_questions.csv (one row per question
and method). Not part of the test suite.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from eagle_pipelines.api import explain, load_model
from eagle_pipelines.core.joint import JointScorer, joint_auc, neutral_token_id, prompt_units
from eagle_pipelines.core.regions import superpixels
from eagle_pipelines.core.search import CountingScorer, SearchTrace, complete_trace
from eagle_pipelines.parameters import parse
from eagle_pipelines.pipelines.eagle_mmvp.nodes import embedded_questions

ROOT = Path(__file__).parents[1]
OUT = ROOT / "data/08_reporting/benchmarks"


def questions(limit: int | None):
    conf = lambda name: yaml.safe_load((ROOT / f"conf/base/parameters_{name}.yml").read_text())  # noqa: E731
    shapes = parse("shapes", conf("data_preparation")["shapes"])
    params = parse("eagle_mmvp", conf("eagle_mmvp")["eagle_mmvp"])
    images, _info, rows = embedded_questions(shapes, params)
    pixels = {k: np.asarray(v.convert("RGB")) for k, v in images.items()}
    out = []
    for row in rows[:limit]:
        k = row["pair"]
        a, b = pixels[str(2 * k + 1)], pixels[str(2 * k + 2)]
        name = re.search(r"Is there an? (\w+) (\w+)", row["prompt"]).groups()
        out.append({**row, "image": pixels[str(row["image_id"])], "object_mask": np.any(a != b, axis=-1),
                    "colour": name[0], "shape": name[1], "present": row["reference"] == "Yes"})
    return out


def first_prompt_unit(order, n_image, units):
    return next((units[int(i) - n_image] for i in order if i >= n_image), None)


def first_region(order, n_image):
    return next(int(i) for i in order if i < n_image)


def on_object(labels, region, mask):
    inside = mask[labels == region]
    return bool(inside.size and inside.mean() > 0.5)


def evaluate(order, trace, n_image, units, labels, q):
    unit = first_prompt_unit(order, n_image, units)
    text = (unit.text if hasattr(unit, "text") else unit["text"]).lower() if unit is not None else ""
    return {"first_unit": text, "first_step": "region" if order[0] < n_image else text,
            "prompt_hit": text == q["shape"], "prompt_hit_name": text in (q["shape"], q["colour"]),
            "region_hit": float(on_object(labels, first_region(order, n_image), q["object_mask"])) if q["present"]
            else np.nan,
            "insertion_auc": float(joint_auc(trace.insertion, trace.deletion[-1]).mean()),
            "deletion_auc": float(joint_auc(trace.deletion, trace.insertion[-1]).mean())}


def method_name(strategy: str, strategies: list[str]) -> str:
    return "eagle-joint" if len(strategies) == 1 else f"eagle-joint ({strategy})"


CAPTUM_ROWS = {"neutral": "captum-feature-ablation", "empty": "captum-feature-ablation (cut)"}


def run(n_questions: int | None, n_regions: int, seed: int, model_path: str, strategies: list[str],
        text_baselines: list[str]) -> pd.DataFrame:
    from eagle_pipelines.core.baselines.captum_joint import joint_feature_ablation

    model = load_model(model_path)
    tok = model.processor.tokenizer
    rng = np.random.default_rng(seed)
    rows = []
    for q in questions(n_questions):
        seen = model.model_image(q["image"])
        mask = q["object_mask"]
        if mask.shape != seen.shape[:2]:
            raise ValueError(f"the model sees {seen.shape[:2]}, the object mask is {mask.shape}")
        regions = superpixels(seen, n_segments=n_regions)
        answer = model.generate(seen, q["prompt"], max_new_tokens=8)
        first = len(rows)
        for strategy in strategies:
            a = explain(model, seen, q["prompt"], regions=regions, prompt_units="words", answer=answer,
                        strategy=strategy)
            eagle = SearchTrace(a.order, a.insertion, a.deletion, a.objective)
            rows.append({"item": q["item"], "method": method_name(strategy, strategies), "answer": a.answer,
                         "present": q["present"], "passes": a.forward_passes,
                         **evaluate(a.order, eagle, a.n_image, a.units, regions.labels, q)})
        # the same units, the same removal rule, the same curves for the other methods
        scorer = model.scorer(seen, q["prompt"], answer.token_ids, a.target_positions)
        units = prompt_units(tok, scorer.sequence["input_ids"].tolist()[:scorer.prompt_length], q["prompt"])
        joint = JointScorer(scorer, regions, units, neutral_token_id(tok))
        counting = CountingScorer(joint, joint.n)
        tf = model.teacher_forced(seen, q["prompt"], answer.token_ids)
        for text_baseline in text_baselines:
            captum = joint_feature_ablation(tf, a.target_positions, regions.labels, units, joint.neutral,
                                            text_baseline=text_baseline)
            order = captum.order()
            trace = complete_trace(counting, order, {}, 1.0, 1.0)
            rows.append({"item": q["item"], "method": CAPTUM_ROWS[text_baseline], "answer": a.answer,
                         "present": q["present"], "passes": captum.forward_passes,
                         **evaluate(order, trace, joint.n_image, units, regions.labels, q)})
        order = rng.permutation(joint.n)
        trace = complete_trace(counting, order, {}, 1.0, 1.0)
        rows.append({"item": q["item"], "method": "random", "answer": a.answer, "present": q["present"],
                     "passes": 0, **evaluate(order, trace, joint.n_image, units, regions.labels, q)})
        print(f"{q['item']} ({a.answer}): " + " | ".join(
            f"{r['method']}: {r['first_unit']!r} region {r['region_hit']} ins {r['insertion_auc']:.3f}"
            for r in rows[first:]), flush=True)
    return pd.DataFrame(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--questions", type=int, default=None, help="the first N embedded questions (default: all)")
    p.add_argument("--regions", type=int, default=16)
    p.add_argument("--seed", type=int, default=0, help="of the random orders")
    p.add_argument("--model", default=str(ROOT / "data/06_models/toy_qwen2_5_vl"))
    p.add_argument("--strategies", nargs="+", default=["pooled", "greedy", "efficient"],
                   help="EAGLE-joint's strategies (default: pooled greedy efficient)")
    p.add_argument("--captum-text-baselines", nargs="+", default=["neutral", "empty"], choices=list(CAPTUM_ROWS),
                   help="Captum's removal of a prompt unit: neutral (our pad-token rule, the captum-feature-ablation "
                        "row), empty (Captum's default cut-out, the '(cut)' row)")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    args = p.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    per_question = run(args.questions, args.regions, args.seed, args.model, args.strategies,
                       args.captum_text_baselines)
    OUT.mkdir(parents=True, exist_ok=True)
    per_question.to_csv(OUT / "joint_questions.csv", index=False, float_format="%.4f")
    table = per_question.groupby("method", sort=False).agg(
        questions=("item", "size"), prompt_hit=("prompt_hit", "mean"), prompt_hit_name=("prompt_hit_name", "mean"),
        region_hit=("region_hit", "mean"), insertion_auc=("insertion_auc", "mean"),
        deletion_auc=("deletion_auc", "mean"), passes=("passes", "mean")).reset_index()
    table.to_csv(OUT / "joint.csv", index=False, float_format="%.4f")
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
