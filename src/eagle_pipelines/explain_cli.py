"""Explain images from the command line, without a Kedro project.

    eagle-explain photo.jpg                                    # the embedded model, sentence level
    eagle-explain photo.jpg --tokens "red circle" --regions 32 # word level
    eagle-explain photos/ --model ~/models/Qwen2.5-VL-3B-Instruct --device cuda --dtype auto \\
        --prompt "Describe the image in one sentence." --strategy greedy --out results/

For each image: writes <out>/<image stem>[_<tokens>].{npz,json} (the Attribution: Attribution.load reads it back)
and .png (the saliency over the image, the curves, the influences). One image: prints the answer, the
first-ranked regions, the faithfulness AUCs and each explained token's influence. Several: a progress bar and
<out>/summary.csv (one row per image). Images already explained in <out> are read back, not recomputed, so an
interrupted run picks up where it stopped. Nothing is downloaded: --model is a local folder.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
# the shipped embedded model of this checkout (an editable install, as `make` sets up)
DEFAULT_MODEL = str(Path(__file__).resolve().parents[2] / "data/06_models/toy_qwen2_5_vl")


def _parser() -> argparse.ArgumentParser:
    from eagle_pipelines.api import STRATEGIES

    p = argparse.ArgumentParser(prog="eagle-explain", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images", nargs="+", help="image files or folders of images (any format PIL reads)")
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help="a local model folder (default: the embedded model, data/06_models/toy_qwen2_5_vl)")
    p.add_argument("--prompt", default="Describe the image.")
    p.add_argument("--tokens", nargs="+", help="words or phrases of the answer to explain (default: all tokens)")
    p.add_argument("--strategy", default="pooled", choices=list(STRATEGIES))
    p.add_argument("--regions", type=int, default=64, help="about how many SLICO regions (default 64)")
    p.add_argument("--lambda1", type=float, default=1.0, help="weight of insight (keeping a region)")
    p.add_argument("--lambda2", type=float, default=1.0, help="weight of necessity (removing it)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-new-tokens", type=int, default=32, help="length limit of the generated answer")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--dtype", default="float32", help="float32, bfloat16, float16 or auto (bf16/fp16 on CUDA)")
    p.add_argument("--device-map", default=None, help="e.g. auto: spread the weights over the GPUs (accelerate)")
    p.add_argument("--family", default="auto", help="model family (default: from the checkpoint's config.json; "
                                                    "qwen_vl, llava, internvl; docs/models.md)")
    p.add_argument("--out", type=Path, default=Path("eagle_explanations"), help="output folder")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG")
    p.add_argument("--overwrite", action="store_true", help="recompute images already explained in --out")
    return p


def _slug(words: list[str] | None) -> str:
    if not words:
        return ""
    return "_" + re.sub(r"[^A-Za-z0-9]+", "-", "_".join(words)).strip("-")[:60]


def image_files(paths: list[str]) -> list[Path]:
    """The image files named: files as given, folders expanded to their image files (sorted). A path that does
    not exist is a FileNotFoundError naming it."""
    files: list[Path] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"image file '{given}' does not exist")
    if not files:
        raise FileNotFoundError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in {', '.join(paths)}")
    return files


def describe(a, verbose: bool) -> dict:
    """The summary row of an Attribution; printed in full when `verbose`."""
    from eagle_pipelines.core.metrics import Curves, deletion_auc, insertion_auc

    curves = Curves(a.area, a.insertion, a.deletion)
    row = {"image": a.meta.get("image", ""), "answer": a.answer, "explained": " ".join(a.target_words),
           "regions": a.n_regions, "strategy": a.strategy, "insertion_auc": insertion_auc(curves),
           "deletion_auc": deletion_auc(curves), "mean_influence": float(np.mean(a.influence)),
           "forward_passes": a.forward_passes, "seconds": a.seconds}
    if not verbose:
        return row
    print(f"answer: {a.answer}")
    print(f"explained: {row['explained']!r} ({len(a.target_positions)} tokens), {a.n_regions} regions, "
          f"{a.strategy}: {a.forward_passes} forward passes in {a.seconds:.1f} s")
    shares = np.diff(np.concatenate([[0.0], a.area]))
    h, w = a.labels.shape
    print(f"first-ranked regions (centre x, y in the {w}x{h} model image; share of the image):")
    for k, r in enumerate(a.order[:5].tolist()):
        y, x = np.argwhere(a.labels == r).mean(axis=0)
        print(f"  {k + 1}. region {r}: ({x:.0f}, {y:.0f}), {100 * shares[k]:.1f}%")
    print(f"insertion AUC {row['insertion_auc']:.3f}, deletion AUC {row['deletion_auc']:.3f} (region protocol)")
    print("influence (high: visual evidence, low: language prior): "
          + ", ".join(f"{t}={v:.3f}" for t, v in zip(a.target_words, a.influence)))
    return row


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    import pandas as pd
    from kedro.io import DatasetError
    from tqdm.auto import tqdm

    from eagle_pipelines.api import explain, load_model
    from eagle_pipelines.core.attribution import Attribution
    from eagle_pipelines.core.images import as_rgb

    try:
        files = image_files(args.images)
        stems = Counter(f.stem for f in files)
        clash = sorted(str(f) for f in files if stems[f.stem] > 1)
        if clash:
            raise ValueError(f"these images would write the same output name: {', '.join(clash)}; explain them "
                             f"with different --out folders")
        model = load_model(args.model, family=args.family, dtype=args.dtype, device=args.device,
                           device_map=args.device_map)
    except (FileNotFoundError, ValueError, DatasetError) as exc:
        print(f"eagle-explain: {exc}", file=sys.stderr)
        return 2
    if not args.no_plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    args.out.mkdir(parents=True, exist_ok=True)
    single = len(files) == 1
    rows, failed = [], 0
    for file in tqdm(files, desc="explaining", unit="image", disable=single):
        stem = args.out / f"{file.stem}{_slug(args.tokens)}"
        if stem.with_suffix(".json").exists() and not args.overwrite:
            rows.append(describe(Attribution.load(stem), verbose=single))
            print(f"{file}: already explained in {stem}.json (--overwrite recomputes it)")
            continue
        try:
            image = model.model_image(as_rgb(file))  # once: explain() and plot() then keep it as it is
            answer = model.generate(image, args.prompt, max_new_tokens=args.max_new_tokens)
            a = explain(model, image, args.prompt, tokens=args.tokens, strategy=args.strategy,
                        n_regions=args.regions, lambda1=args.lambda1, lambda2=args.lambda2,
                        batch_size=args.batch_size, answer=answer, progress=single, meta={"image": str(file)})
        except (FileNotFoundError, ValueError) as exc:
            print(f"eagle-explain: {file}: {exc}", file=sys.stderr)
            failed += 1
            continue
        rows.append(describe(a, verbose=single))
        a.save(stem)
        written = [stem.with_suffix(".npz"), stem.with_suffix(".json")]
        if not args.no_plot:
            fig = a.plot(image)
            fig.savefig(stem.with_suffix(".png"), dpi=120)
            plt.close(fig)
            written.append(stem.with_suffix(".png"))
        if single:
            print("wrote " + ", ".join(str(p) for p in written))
    if not single and rows:
        summary = args.out / "summary.csv"
        pd.DataFrame(rows).to_csv(summary, index=False, float_format="%.4f")
        print(f"{len(rows)} of {len(files)} images explained ({failed} failed); one row each in {summary}")
    if failed:
        return 2 if failed == len(files) else 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
