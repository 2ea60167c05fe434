"""What reproducing the paper's tables for one model costs, before a run (``make paper-cost MODEL=<preset>``).

    python -m eagle_pipelines.paper_cost --model qwen2_5_vl_3b                  # GPU figure: an assumption
    python -m eagle_pipelines.paper_cost --model qwen2_5_vl_3b --seconds-per-pass 0.03
    python -m eagle_pipelines.paper_cost --model toy --measure                  # time this machine's passes

Counts, per table of the paper (COCO caption sentence level, COCO word level, MMVP), the forward passes the paper
environment's configuration (conf/paper over conf/base) will make, in the reference's unit: one (masked) image
through the model. Per explained sample of n regions (``superpixels.n_segments``) and s pixel steps
(``evaluation.pixel_steps``):

- search: the strategy's own count (``engine.expected_forward_passes``; greedy n(n+1), 4,160 at n = 64);
- evaluation: the random floor's region curves 2n, the pixel protocol of EAGLE's and the random floor's maps 2·2s,
  and 2s per baseline map;
- baselines (``baselines.methods``): one teacher-forced pass each, plus LLaVA-CAM's noisy copies and IGOS++'s
  iterations × 4 integrated-gradient paths × ig_steps images (+2 for its keyword test at sentence level), each
  with a backward pass, counted as 3 forward passes (a backward pass costs about two); Captum n + 1;
- generation (caption and MMVP tables): the answer, at most max_new_tokens decoding steps per image, counted as
  passes (an upper bound: each is a one-token step over the cache).

Hours = passes × seconds per pass / 3600. The seconds per pass are either given (``--seconds-per-pass``), measured
here (``--measure``: the preset's model scores a batch of masked copies of one image, as the search does), or, for a
model of the paper, the paper's own EAGLE seconds per sample (COCO caption, sentence level) ÷ 4,160 (its greedy
passes at n = 64): the reference's one-image-per-pass loop on the paper's GPU, an assumption, not measured here.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).parents[2]
#: a backward pass costs about two forward passes
BACKWARD_FACTOR = 3
#: the paper's samples per table where the configuration does not fix them (reference.md: ~275 caption, ~300
#: object samples; the reference's coco_single_target_once lists have 306 entries; MMVP has 300 questions)
PAPER_SAMPLES = {"coco_caption/sentence": 275, "coco_caption/word": 306, "mmvp/sentence": 300}


@dataclass(frozen=True)
class TableCost:
    """The forward passes of one paper table: samples and the passes of one sample, by component."""

    table: str
    samples: int
    samples_from: str
    regions: int
    search: int
    evaluation: int
    baselines: int
    generation: int

    @property
    def per_sample(self) -> int:
        return self.search + self.evaluation + self.baselines + self.generation

    @property
    def passes(self) -> int:
        return self.samples * self.per_sample


def baseline_passes(methods, settings: dict, n: int, level: str) -> int:
    """Forward-pass equivalents of the baselines' maps for one sample (``settings``: method -> its parameters)."""
    total = 0
    for method in methods:
        total += 1  # the teacher-forced pass on the intact image
        s = settings.get(method, {})
        if method == "llava_cam":
            total += BACKWARD_FACTOR * int(s.get("samples", 1))
        elif method == "igos_pp":
            total += BACKWARD_FACTOR * int(s.get("iterations", 1)) * 4 * int(s.get("ig_steps", 1))
            total += 2 if level == "sentence" else 0
        elif method == "captum":
            total += n + 1
    return total


def evaluation_passes(n: int, pixel_steps: int, n_baselines: int) -> int:
    """The shared protocol for one sample: random region curves 2n; pixel curves of EAGLE's and the random
    floor's maps 2·2·steps; 2·steps per baseline map (EAGLE's own region curves come from its search)."""
    return 2 * n + 4 * pixel_steps + 2 * pixel_steps * n_baselines


def table_costs(params: dict, search_passes: int) -> list[TableCost]:
    """The cost of each paper table the configuration `params` (validated groups: attribution, superpixels,
    evaluation, baselines, eval_data, eagle_coco, eagle_mmvp) makes; `search_passes`: one explanation's search."""
    n = params["superpixels"].n_segments
    steps = params["evaluation"].pixel_steps
    baselines = params["baselines"]
    methods = list(baselines.methods)
    settings = {m: baselines.settings(m) for m in methods}
    attribution, coco, mmvp = params["attribution"], params["eagle_coco"], params["eagle_mmvp"]
    eval_data = params["eval_data"]
    if eval_data.source == "coco":
        images = min(eval_data.coco.images, coco.max_images or eval_data.coco.images)
        caption = (images, f"eval_data.coco.images{' / eagle_coco.max_images' if coco.max_images else ''}")
        word = ((images, "one object per image at most (word_selection: once)") if attribution.word_selection
                == "once" else (PAPER_SAMPLES["coco_caption/word"], f"the paper's count (word_selection: {attribution.word_selection})"))
    else:
        caption = (PAPER_SAMPLES["coco_caption/sentence"], f"the paper's count (eval_data.source: {eval_data.source})")
        word = (PAPER_SAMPLES["coco_caption/word"], f"the paper's count (eval_data.source: {eval_data.source})")
    questions = mmvp.max_questions or PAPER_SAMPLES["mmvp/sentence"]
    tables = []
    for table, (samples, origin), tokens in (("coco_caption/sentence", caption, coco.max_new_tokens),
                                             ("coco_caption/word", word, 0),
                                             ("mmvp/sentence", (questions, "eagle_mmvp.max_questions or MMVP's 300"),
                                              mmvp.max_new_tokens)):
        level = table.split("/")[1]
        if level not in attribution.levels:
            continue
        tables.append(TableCost(table, samples, origin, n, search_passes,
                                evaluation_passes(n, steps, len(methods)),
                                baseline_passes(methods, settings, n, level), tokens))
    return tables


def hours(passes: int, seconds_per_pass: float) -> float:
    return passes * seconds_per_pass / 3600


def paper_seconds_per_pass(paper_model: str | None, n: int = 64) -> float | None:
    """The paper's EAGLE seconds per sample (COCO caption, sentence level) ÷ n(n+1): the reference's rate per
    masked image on the paper's GPU (one image per pass). None for a model the paper does not report."""
    if paper_model is None:
        return None
    from eagle_pipelines.reporting.paper import read_paper_tables

    paper = read_paper_tables()
    cell = paper[(paper["task"] == "coco_caption") & (paper["level"] == "sentence") & (paper["model"] == paper_model)
                 & (paper["method"] == "eagle") & (paper["metric"] == "seconds_per_sample")]
    return float(cell["value"].iloc[0]) / (n * (n + 1)) if len(cell) else None


def load_params(model: str, env: str = "paper") -> dict:
    """The validated parameter groups of `env` (conf/<env> over conf/base) for the model preset `model`."""
    from kedro.config import OmegaConfigLoader

    from eagle_pipelines import settings
    from eagle_pipelines.parameters import parse

    loader = OmegaConfigLoader(conf_source=str(ROOT / "conf"), env=env, runtime_params={"model": model},
                               **settings.CONFIG_LOADER_ARGS)
    raw = loader["parameters"]
    groups = ["attribution", "superpixels", "evaluation", "baselines", "eval_data", "eagle_coco", "eagle_mmvp",
              "paper_comparison"]
    return {g: parse(g, raw.get(g, {})) for g in groups}


def known_presets(env: str = "paper") -> set[str]:
    """The model presets of conf/<env>/globals.yml (empty when the environment has none)."""
    from kedro.config import OmegaConfigLoader

    from eagle_pipelines import settings

    loader = OmegaConfigLoader(conf_source=str(ROOT / "conf"), env=env, **settings.CONFIG_LOADER_ARGS)
    try:
        return set((loader["globals"] or {}).get("paper_models", {}))
    except Exception:  # noqa: BLE001 - no globals in this environment
        return set()


def measure_seconds_per_pass(model: str, env: str = "paper", batch: int = 8, repeats: int = 2,
                             prompt: str | None = None) -> tuple[float, str]:
    """Seconds per masked image of the preset's model on this machine: one answer to a seeded random 640×480
    photo, then `repeats` scorings of `batch` masked copies (after one warm-up scoring), composed as the
    configuration's ``superpixels.compose`` says (``processor``: the photo masked, the processor re-run per copy).
    Returns the figure and the device."""
    import numpy as np
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(ROOT)
    with KedroSession.create(ROOT, env=env, runtime_params={"model": model}) as session:
        context = session.load_context()
        vlm = context.catalog.load("vlm")
        params = load_params(model, env)
    photo = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    from eagle_pipelines.core.geometry import working_image

    text = prompt or params["eagle_coco"].prompt
    compose = params["superpixels"].compose
    answer = vlm.generate(vlm.model_image(photo), text, max_new_tokens=8)
    if not answer.token_ids:
        raise ValueError(f"the model {model!r} gave an empty answer to {text!r}; try --prompt")
    image = working_image(vlm, photo, compose)  # masks on the photo with compose: processor, as the search does
    scorer = vlm.scorer(image, text, list(answer.token_ids), list(range(len(answer.token_ids))), batch_size=batch,
                        compose=compose)
    masks = np.random.default_rng(1).random((batch, *image.shape[:2])) < 0.5
    scorer(masks)  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        scorer(masks)
    return (time.perf_counter() - start) / (repeats * batch), str(getattr(vlm, "device", "cpu"))


def report(model: str, tables: list[TableCost], seconds_per_pass: float | None, source: str) -> str:
    lines = [f"Paper tables for model preset {model!r} (conf/paper over conf/base); passes = images through the model",
             f"{'table':<22} {'samples':>7} {'regions':>7} {'search':>7} {'eval':>6} {'baselines':>9} {'gen':>4} "
             f"{'per sample':>10} {'passes':>12} {'hours':>8}"]
    total = 0
    for t in tables:
        total += t.passes
        h = f"{hours(t.passes, seconds_per_pass):8.1f}" if seconds_per_pass else f"{'?':>8}"
        lines.append(f"{t.table:<22} {t.samples:>7} {t.regions:>7} {t.search:>7} {t.evaluation:>6} {t.baselines:>9} "
                     f"{t.generation:>4} {t.per_sample:>10,} {t.passes:>12,} {h}")
    h = f"{hours(total, seconds_per_pass):8.1f}" if seconds_per_pass else f"{'?':>8}"
    lines.append(f"{'total':<22} {'':>7} {'':>7} {'':>7} {'':>6} {'':>9} {'':>4} {'':>10} {total:>12,} {h}")
    lines.append("samples: " + "; ".join(f"{t.table}: {t.samples_from}" for t in tables))
    lines.append(f"seconds per pass: {seconds_per_pass:.4g} ({source})" if seconds_per_pass else
                 f"seconds per pass: unknown ({source}); give --seconds-per-pass or --measure")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eagle_pipelines.paper_cost", description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="qwen2_5_vl_3b", help="model preset (conf/paper/globals.yml)")
    parser.add_argument("--env", default="paper")
    parser.add_argument("--seconds-per-pass", type=float, default=None)
    parser.add_argument("--measure", action="store_true", help="time the preset's model on this machine")
    parser.add_argument("--prompt", default=None, help="with --measure: the prompt (default eagle_coco.prompt)")
    args = parser.parse_args(argv)
    import warnings

    warnings.filterwarnings("ignore", message=r"register_new_resolver\(\) is deprecated")
    from eagle_pipelines.engine import expected_forward_passes
    from eagle_pipelines.parameters import ParameterError

    presets = known_presets(args.env)
    if presets and args.model not in presets:
        print(f"error: {args.model!r} is not a model preset of conf/{args.env}/globals.yml; choose one of "
              f"{', '.join(sorted(presets))}", file=sys.stderr)
        return 2
    try:
        params = load_params(args.model, args.env)
    except ParameterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - an unknown preset fails inside the config loader
        print(f"error: model preset {args.model!r}: {str(exc).splitlines()[0]} (presets: conf/paper/globals.yml)",
              file=sys.stderr)
        return 2
    attribution = params["attribution"]
    n = params["superpixels"].n_segments
    search, _exact = expected_forward_passes(attribution.strategy, n, attribution.search_params())
    tables = table_costs(params, search)
    comparison = params["paper_comparison"]
    if args.seconds_per_pass is not None:
        spp, source = args.seconds_per_pass, "given"
    elif args.measure:
        spp, device = measure_seconds_per_pass(args.model, args.env, prompt=args.prompt)
        source = f"measured here on {device}"
    else:
        paper_model = comparison.paper_models.get(args.model)
        spp = paper_seconds_per_pass(paper_model)
        source = (f"ASSUMPTION, not measured here: the paper's EAGLE {paper_model} COCO-caption seconds per sample "
                  "/ 4,160 greedy passes (the reference's one-image-per-pass loop on the paper's GPU)"
                  if spp else f"the paper has no figure for {args.model!r}")
    print(report(args.model, tables, spp, source))
    return 0 if spp is None or math.isfinite(spp) else 1


if __name__ == "__main__":
    raise SystemExit(main())
