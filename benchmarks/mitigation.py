"""Evidence-guided decoding swept on the embedded data, outside Kedro (docs/mitigation.md).

    .venv/bin/python benchmarks/mitigation.py --biased 60 --controls 60 \
        --settings "source=attention,strength=1,b=-1,draft=true" "source=eagle,strength=1,b=-1,draft=true"

Every setting answers the same tasks as eagle_mitigation (eagle_repope's question set plus a caption per image);
plain greedy decoding is always the first row. Writes data/08_reporting/benchmarks/mitigation.csv and prints the
table as markdown. One torch thread.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd
import torch
import yaml

from eagle_pipelines.api import load_model
from eagle_pipelines.core.diagnostics import best_setting, setting_metrics
from eagle_pipelines.data.params import ShapesParams
from eagle_pipelines.data.shapes import category_names
from eagle_pipelines.models.guidance import EvidenceCache, GuidedDecoder
from eagle_pipelines.parameters import GuidanceParams, RepopeQuestionParams
from eagle_pipelines.pipelines.eagle_mitigation.nodes import _task_records, prepare_tasks

ROOT = Path(__file__).resolve().parents[1]


def parse_setting(text: str, base: dict) -> GuidanceParams:
    """'source=eagle,strength=1,b=-1,layers=1-2,draft=true' over `base`."""
    values = dict(base)
    for part in filter(None, text.split(",")):
        key, value = part.split("=", 1)
        if key == "layers":
            values[key] = None if value == "half" else tuple(int(v) for v in value.split("-"))
        else:
            values[key] = yaml.safe_load(value)
    return GuidanceParams(**values)


def main(argv=None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--biased", type=int, default=60)
    parser.add_argument("--controls", type=int, default=60)
    parser.add_argument("--settings", nargs="*", default=["source=attention,strength=1,b=-1,draft=true"])
    parser.add_argument("--model", default=str(ROOT / "data/06_models/toy_qwen2_5_vl"))
    parser.add_argument("--out", default=str(ROOT / "data/08_reporting/benchmarks/mitigation.csv"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    conf = yaml.safe_load((ROOT / "conf/base/parameters_data_preparation.yml").read_text())
    mit = yaml.safe_load((ROOT / "conf/base/parameters_eagle_mitigation.yml").read_text())["eagle_mitigation"]
    shapes = ShapesParams(**conf["shapes"])
    questions = RepopeQuestionParams(**{**mit["questions"], "biased": args.biased, "controls": args.controls})
    (images, _, _), tasks = prepare_tasks(shapes, questions, mit["question_template"], mit["caption_prompt"],
                                          mit["question_max_new_tokens"], mit["caption_max_new_tokens"])
    records = _task_records(tasks)
    pixels = {}
    for stem, image in images.items():
        import numpy as np

        pixels[stem] = np.asarray(image)
    by_file = dict(zip(tasks["image_id"], tasks["file_name"]))
    model = load_model(args.model)
    settings = [GuidanceParams(**{**mit["guidance"], "strength": 0.0})]
    settings += [parse_setting(s, mit["guidance"]) for s in args.settings]
    cache = EvidenceCache()
    rows = []
    for setting in settings:
        decoder = GuidedDecoder(model, setting, cache)
        answers, start = [], time.perf_counter()
        for r in records:
            out = decoder.generate(pixels[by_file[r["image_id"]].rsplit(".", 1)[0]], r["prompt"],
                                   r["max_new_tokens"])
            answers.append({**r, "text": out.answer.text, "decode_passes": out.decode_passes,
                            "evidence_passes": out.evidence_passes, "seconds": out.seconds})
        metrics = setting_metrics(answers, shapes.cooccurrence.companion, category_names(shapes))
        rows.append({"setting": setting.label(), **metrics, "wall_seconds": time.perf_counter() - start,
                     "guidance": json.dumps(setting.model_dump(mode="json"))})
        print(f"{setting.label()}: {metrics['hallucination_rate_biased']:.3f} biased yes, "
              f"{metrics['object_hallucination_captions']:.3f} caption hallucination, "
              f"{metrics['accuracy_unbiased']:.3f} acc, {metrics['exact_match_unbiased_captions']:.3f} EM, "
              f"{metrics['seconds_per_answer']:.3f} s/answer", flush=True)
    table = pd.DataFrame(rows)
    best = best_setting(table.to_dict("records"))
    table["best"] = table["setting"] == (best["setting"] if best else None)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False, float_format="%.6g")
    cols = ["setting", "hallucination_rate_biased", "companion_rate_captions", "object_hallucination_captions",
            "accuracy_unbiased", "exact_match_unbiased_captions", "exact_match_biased_captions", "decode_passes",
            "evidence_passes", "seconds_per_answer", "best"]
    print(markdown(table[cols]))
    return table


def markdown(frame: pd.DataFrame) -> str:
    """A markdown table, floats with three decimals."""
    def cell(v):
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
