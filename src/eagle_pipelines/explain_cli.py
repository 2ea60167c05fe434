"""Explain one image from the command line, without a Kedro project.

    eagle-explain photo.jpg                                    # the embedded model, sentence level
    eagle-explain photo.jpg --tokens "red circle" --regions 32 # word level
    eagle-explain photo.jpg --model ~/models/Qwen2.5-VL-3B-Instruct --device cuda --dtype auto \\
        --prompt "Describe the image in one sentence." --strategy greedy --out results/

Prints the answer, the first-ranked regions, the faithfulness AUCs and each explained token's influence, and
writes <out>/<image stem>[_<tokens>].{npz,json} (the Attribution: Attribution.load reads it back) and .png (the
saliency over the image, the curves, the influences). Nothing is downloaded: --model is a local folder.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np

# the shipped embedded model of this checkout (an editable install, as `make` sets up)
DEFAULT_MODEL = str(Path(__file__).resolve().parents[2] / "data/06_models/toy_qwen2_5_vl")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="eagle-explain", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("image", help="an image file (any format PIL reads)")
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help="a local model folder (default: the embedded model, data/06_models/toy_qwen2_5_vl)")
    p.add_argument("--prompt", default="Describe the image.")
    p.add_argument("--tokens", nargs="+", help="words or phrases of the answer to explain (default: all tokens)")
    p.add_argument("--strategy", default="pooled", choices=["pooled", "greedy", "efficient", "lazy"])
    p.add_argument("--regions", type=int, default=64, help="about how many SLICO regions (default 64)")
    p.add_argument("--lambda1", type=float, default=1.0, help="weight of insight (keeping a region)")
    p.add_argument("--lambda2", type=float, default=1.0, help="weight of necessity (removing it)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-new-tokens", type=int, default=32, help="length limit of the generated answer")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--dtype", default="float32", help="float32, bfloat16, float16 or auto (bf16/fp16 on CUDA)")
    p.add_argument("--out", type=Path, default=Path("eagle_explanations"), help="output folder")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG")
    return p


def _slug(words: list[str] | None) -> str:
    if not words:
        return ""
    return "_" + re.sub(r"[^A-Za-z0-9]+", "-", "_".join(words)).strip("-")[:60]


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from kedro.io import DatasetError

    from eagle_pipelines.api import explain, load_model
    from eagle_pipelines.core.images import as_rgb
    from eagle_pipelines.core.metrics import Curves, deletion_auc, insertion_auc

    try:
        image = as_rgb(args.image)
        model = load_model(args.model, dtype=args.dtype, device=args.device)
        answer = model.generate(model.model_image(image), args.prompt, max_new_tokens=args.max_new_tokens)
        print(f"answer: {answer.text}")
        a = explain(model, image, args.prompt, tokens=args.tokens, strategy=args.strategy, n_regions=args.regions,
                    lambda1=args.lambda1, lambda2=args.lambda2, batch_size=args.batch_size, answer=answer,
                    progress=True, meta={"image": str(args.image)})
    except (FileNotFoundError, ValueError, DatasetError) as exc:
        print(f"eagle-explain: {exc}", file=sys.stderr)
        return 2
    curves = Curves(a.area, a.insertion, a.deletion)
    print(f"explained: {' '.join(a.target_words)!r} ({len(a.target_positions)} tokens), {a.n_regions} regions, "
          f"{a.strategy}: {a.forward_passes} forward passes in {a.seconds:.1f} s")
    shares = np.diff(np.concatenate([[0.0], a.area]))
    h, w = a.labels.shape
    print(f"first-ranked regions (centre x, y in the {w}x{h} model image; share of the image):")
    for k, r in enumerate(a.order[:5].tolist()):
        y, x = np.argwhere(a.labels == r).mean(axis=0)
        print(f"  {k + 1}. region {r}: ({x:.0f}, {y:.0f}), {100 * shares[k]:.1f}%")
    print(f"insertion AUC {insertion_auc(curves):.3f}, deletion AUC {deletion_auc(curves):.3f} (region protocol)")
    print("influence (high: visual evidence, low: language prior): "
          + ", ".join(f"{w}={v:.3f}" for w, v in zip(a.target_words, a.influence)))
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"{Path(args.image).stem}{_slug(args.tokens)}"
    a.save(stem)
    written = [stem.with_suffix(".npz"), stem.with_suffix(".json")]
    if not args.no_plot:
        import matplotlib

        matplotlib.use("Agg")
        fig = a.plot(image)
        fig.savefig(stem.with_suffix(".png"), dpi=120)
        written.append(stem.with_suffix(".png"))
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
