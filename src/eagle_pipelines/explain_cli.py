"""Explain images from the command line, without a Kedro project.

    eagle-explain photo.jpg                                    # the embedded model, sentence level
    eagle-explain photo.jpg --tokens "red circle" --regions 32 # word level
    eagle-explain photos/ --model ~/models/Qwen2.5-VL-3B-Instruct --device cuda --dtype auto \\
        --prompt "Describe the image in one sentence." --strategy greedy --out results/

For each image: writes <out>/<image file name>[_<tokens>].{npz,json} (the Attribution: Attribution.load reads it
back) and .png (the saliency over the image, the curves, the influences); e.g. photo.2024.01.png gives
photo.2024.01.png.json. One image: prints the answer, the first-ranked regions, the faithfulness AUCs and each
explained token's influence. Several: a progress bar and <out>/summary.csv (one row per image, with its status).
An image already explained in <out> from the same inputs (the image's bytes, the model, the prompt, the tokens,
the strategy, the regions, the lambdas, the answer length: the fingerprint stored in the Attribution) is read
back, not recomputed, so an interrupted run picks up where it stopped; anything else there is recomputed and
overwritten. A bad image is named with the reason on one line and the rest finish (exit status 1; 2 when
nothing could be explained). Nothing is downloaded: --model is a local folder.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import re
import sys
from collections import Counter
from pathlib import Path

import numpy as np
from eagle_pipelines.files import atomic_write

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
# the shipped embedded model of this checkout (an editable install, as `make` sets up)
DEFAULT_MODEL = str(Path(__file__).resolve().parents[2] / "data/06_models/toy_qwen2_5_vl")
#: the video-capable embedded model (continued on clips): the default when a clip is among the inputs
DEFAULT_VIDEO_MODEL = str(Path(__file__).resolve().parents[2] / "data/06_models/toy_qwen2_5_vl_video")
#: the default prompts: an image's, and a clip's (the eagle_video experiment's question, clips.prompt)
IMAGE_PROMPT = "Describe the image."
VIDEO_PROMPT = "What appears in the video?"
#: the longest readable part of an output name (bytes); longer names are cut and get a hash of the full name
MAX_NAME_BYTES = 150


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        """A wrong argument: one line (not the usage block), exit status 2."""
        self.exit(2, f"eagle-explain: {message} (eagle-explain --help lists the arguments)\n")


def _parser() -> argparse.ArgumentParser:
    from eagle_pipelines.api import STRATEGIES

    p = _Parser(prog="eagle-explain", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images", nargs="+", help="image files or folders of images (any format PIL reads); video files "
                                             "(.mp4, .avi, .mov, .mkv, ...) are explained as clips, and with --video "
                                             "each folder is the frames of one clip")
    p.add_argument("--model", default=None,
                   help="a local model folder (default: the embedded model, data/06_models/toy_qwen2_5_vl; when a "
                        "clip is among the inputs, the video-capable data/06_models/toy_qwen2_5_vl_video)")
    p.add_argument("--prompt", default=None, help=f"the question (default: {IMAGE_PROMPT!r} for an image, "
                                                  f"{VIDEO_PROMPT!r} for a clip)")
    p.add_argument("--tokens", nargs="+", help="words or phrases of the answer to explain (default: all tokens)")
    p.add_argument("--strategy", default=None, choices=list(STRATEGIES),
                   help="the search (default: pooled; efficient with --prompt-units, whose words and regions act "
                        "together: docs/method.md, 'Joint attribution')")
    p.add_argument("--regions", type=int, default=64, help="about how many SLICO regions (default 64; at most "
                                                           "one per 16 pixels of the image)")
    p.add_argument("--lambda1", type=float, default=1.0, help="weight of insight (keeping a region)")
    p.add_argument("--lambda2", type=float, default=1.0, help="weight of necessity (removing it)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-new-tokens", type=int, default=32, help="length limit of the generated answer")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--dtype", default="float32", help="float32, bfloat16, float16 or auto (bf16/fp16 on CUDA)")
    p.add_argument("--device-map", default=None, help="e.g. auto: spread the weights over the GPUs (accelerate)")
    p.add_argument("--family", default="auto", help="model family (default: from the checkpoint's config.json; "
                                                    "qwen_vl, llava, internvl; docs/models.md)")
    p.add_argument("--api-base", default=None, help="explain the model behind this OpenAI-compatible endpoint "
                                                    "instead of --model (e.g. http://127.0.0.1:8000/v1; key: "
                                                    "OPENAI_API_KEY; answers cached in <out>/api_cache; docs/api.md)")
    p.add_argument("--api-model", default=None, help="the model name the --api-base endpoint serves")
    p.add_argument("--out", type=Path, default=Path("eagle_explanations"), help="output folder")
    p.add_argument("--prompt-units", nargs="+", default=None, metavar="UNIT",
                   help="also order the prompt's words with the regions: 'words' (every word) or words/phrases of "
                        "the prompt (one joint order; a removed word's tokens are replaced by the pad token; "
                        "writes <name>_joint.*; docs/method.md)")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG")
    p.add_argument("--overwrite", action="store_true", help="recompute images already explained in --out")
    video = p.add_argument_group("video (docs/video.md)")
    video.add_argument("--video", action="store_true", help="each folder given is the frames of one clip (name "
                                                            "order), not a set of images")
    video.add_argument("--frames", type=int, default=8, help="frames sampled evenly from each clip (even; default 8)")
    video.add_argument("--grid", default="5x5", help="ROWSxCOLS cells per frame (default 5x5, the reference's)")
    video.add_argument("--video-regions", default="grid", choices=["grid", "slico"],
                       help="grid: --grid cells per frame (default); slico: about --segments SLICO regions "
                            "per frame")
    video.add_argument("--segments", type=int, default=25, help="SLICO regions per frame (--video-regions slico)")
    return p


# -- names ----------------------------------------------------------------------------------------------------------
def shown(text) -> str:
    """`text` (a path or message) printable and writable as UTF-8: bytes of a file name that are not UTF-8 (held
    by Python as surrogates) become \\udcXX escapes instead of an encoding error."""
    return str(text).encode("utf-8", "backslashreplace").decode("utf-8")


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:8]


def safe_name(name: str) -> str:
    """A file name for an output in --out from an input's full file name: the name itself where it is a plain
    visible name; separators, control characters, bytes that are not UTF-8 and a leading dot (``..png``, hidden
    files) replaced by ``_``, and a too long name cut, each with ``~<hash of the original name>`` appended, so
    two different inputs never share an output and no output leaves --out."""
    clean = shown(name).replace("\\udc", "_x")
    clean = re.sub(r"[\x00-\x1f\x7f/\\]", "_", clean)
    clean = re.sub(r"^\.", "_", clean)
    cut = clean.encode("utf-8")[:MAX_NAME_BYTES].decode("utf-8", "ignore")
    return cut if cut == name else f"{cut}~{_digest(name)}"


def token_suffix(words: list[str] | None) -> str:
    """``_<words>`` for explained words: each word's letters and digits (any script) with ``-`` for other runs,
    words joined by ``_``; where that is not a faithful spelling (punctuation, underscores, repeated spaces, a
    long list) a hash of the exact words is appended, so different targets never share a name."""
    if not words:
        return ""
    readable = "_".join(re.sub(r"[\W_]+", "-", w).strip("-") for w in words)
    faithful = all(re.fullmatch(r"[^\W_]+(?: [^\W_]+)*", w) for w in words) and len(readable) <= 60
    readable = readable[:60]
    return f"_{readable}" if faithful else f"_{readable}~{_digest(json.dumps(list(words)))}"


def output_base(out: Path, file: Path, tokens: list[str] | None) -> Path:
    """<out>/<safe full file name>[_<tokens>]: the outputs add .npz, .json and .png to it."""
    return out / f"{safe_name(file.name)}{token_suffix(tokens)}"


def _with(base: Path, suffix: str) -> Path:
    return base.with_name(base.name + suffix)


# -- inputs ---------------------------------------------------------------------------------------------------------
def image_files(paths: list[str], out: Path | None = None) -> tuple[list[Path], list[tuple[str, str, str]]]:
    """The image files named: files as given, folders expanded to their entries with an image suffix (sorted),
    each file once. Also the (path, status, reason) of what was named but cannot be explained: ``failed`` (does
    not exist, a broken link, a symbolic-link loop, unreadable), ``skipped`` (a directory or device with an image
    suffix inside a folder). A folder that is `out` itself is a ValueError (its figures would be read as images)."""
    from eagle_pipelines.core.images import file_problem

    files: list[Path] = []
    bad: list[tuple[str, str, str]] = []
    seen: set[Path] = set()

    def add(path: Path) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            files.append(path)

    for given in paths:
        path = Path(given)
        problem = file_problem(path)
        if problem == "is a directory, not an image file":
            if out is not None and out.exists() and path.resolve() == out.resolve():
                raise ValueError(f"--out '{shown(out)}' is also an image folder given; write the explanations "
                                 f"elsewhere (its figures would be read as images next time)")
            try:
                entries = sorted(path.iterdir())
            except OSError as exc:
                bad.append((shown(path), "failed", f"folder '{shown(path)}' cannot be listed ({exc.strerror})"))
                continue
            for entry in entries:
                if entry.suffix.lower() not in IMAGE_SUFFIXES:
                    continue
                why = file_problem(entry)
                if why is None:
                    add(entry)
                else:
                    status = "skipped" if why.startswith(("is a directory", "is not a regular")) else "failed"
                    bad.append((shown(entry), status, f"'{shown(entry)}' {why}"))
        elif problem is None:
            add(path)
        elif problem == "does not exist":
            bad.append((shown(path), "failed", f"image file '{shown(given)}' does not exist"))
        else:
            bad.append((shown(path), "failed", f"'{shown(given)}' {problem}"))
    return files, bad


def prompt_for(args, clip: bool = False) -> str:
    """The prompt of an input: --prompt, else the default for an image or a clip."""
    return args.prompt if args.prompt is not None else (VIDEO_PROMPT if clip else IMAGE_PROMPT)


def explanation_inputs(args, model, image_sha256: str, clip: bool = False) -> dict:
    """Everything that decides an explanation: the image's bytes, the model (its checkpoint fingerprint and
    dtype), the prompt, the tokens, the strategy, the regions, the lambdas, the answer length and this package's
    version. Not the device or batch size (they change only rounding) nor the output options."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        package = version("eagle_pipelines")
    except PackageNotFoundError:
        package = "?"
    dtype = next((str(p.dtype) for p in model.model.parameters()), "?") if hasattr(model, "model") else "?"
    return {"image_sha256": image_sha256, "model": getattr(model, "fingerprint", getattr(model, "name", "?")),
            "family": getattr(model, "family", "?"), "dtype": dtype, "prompt": prompt_for(args, clip),
            "tokens": list(args.tokens) if args.tokens else None, "strategy": args.strategy,
            "n_regions": args.regions, "lambda1": args.lambda1, "lambda2": args.lambda2,
            "max_new_tokens": args.max_new_tokens, "search_params": {}, "slic": "slico defaults",
            "compose": "pixel_values", "eagle_pipelines": package}


def earlier_result(base: Path, wanted: dict):
    """(the Attribution at `base` when it loads and was made from exactly the inputs `wanted`, why not)."""
    from eagle_pipelines.core.attribution import Attribution

    if not _with(base, ".json").exists():
        return None, ""
    try:
        a = Attribution.load(_with(base, ".npz"))
    except (FileNotFoundError, ValueError) as exc:
        return None, f"the earlier result cannot be read ({shown(exc)}); recomputing it"
    stored = a.meta.get("fingerprint")
    if not isinstance(stored, dict):
        return None, "the earlier result records no input fingerprint (an older version made it); recomputing it"
    wanted = json.loads(json.dumps(wanted))
    if stored != wanted:
        differs = sorted(k for k in set(stored) | set(wanted) if stored.get(k) != wanted.get(k))
        return None, f"the earlier result was made from other inputs (differs in: {', '.join(differs)}); recomputing it"
    return a, ""


# -- output ---------------------------------------------------------------------------------------------------------
def describe(a, verbose: bool) -> dict:
    """The summary row of an Attribution; printed in full when `verbose`."""
    from eagle_pipelines.core.metrics import Curves, deletion_auc, insertion_auc

    curves = Curves(a.area, a.insertion, a.deletion)
    row = {"image": a.meta.get("image", ""), "answer": a.answer, "explained": " ".join(a.target_words),
           "regions": a.n_regions, "strategy": a.strategy, "insertion_auc": insertion_auc(curves),
           "deletion_auc": deletion_auc(curves), "mean_influence": float(np.mean(a.influence)),
           "forward_passes": a.forward_passes, "seconds": a.seconds}
    api = a.meta.get("api")
    if api:  # an endpoint's answers: the share of target probabilities it returned (top-k protocol)
        row.update(coverage=api["coverage"], api_requests=api["requests"], api_sent=api["sent"])
    if not verbose:
        return row
    print(f"answer: {a.answer}")
    print(f"explained: {row['explained']!r} ({len(a.target_positions)} tokens), {a.n_regions} regions, "
          f"{a.strategy}: {a.forward_passes} forward passes in {a.seconds:.1f} s")
    shares = np.diff(np.concatenate([[0.0], a.area]))
    if a.labels.ndim == 3:  # a clip: the frame of each region, and each frame's share of the gain
        n, h, w = a.labels.shape
        print(f"first-ranked regions (frame, centre x, y in the {w}x{h} frames; share of the clip):")
        for k, r in enumerate(a.order[:5].tolist()):
            f, y, x = np.argwhere(a.labels == r).mean(axis=0)
            print(f"  {k + 1}. region {r}: frame {int(f) + 1}, ({x:.0f}, {y:.0f}), {100 * shares[k]:.1f}%")
        if hasattr(a, "frame_importance"):
            print("share of the search's gain per frame: "
                  + ", ".join(f"{k + 1}: {100 * v:.0f}%" for k, v in enumerate(a.frame_importance())))
    else:
        h, w = a.labels.shape
        print(f"first-ranked regions (centre x, y in the {w}x{h} model image; share of the image):")
        for k, r in enumerate(a.order[:5].tolist()):
            y, x = np.argwhere(a.labels == r).mean(axis=0)
            print(f"  {k + 1}. region {r}: ({x:.0f}, {y:.0f}), {100 * shares[k]:.1f}%")
    print(f"insertion AUC {row['insertion_auc']:.3f}, deletion AUC {row['deletion_auc']:.3f} (region protocol)")
    if api:
        print(f"endpoint: {api['requests']} requests ({api['sent']} sent, the rest cached), {api['scoring']} "
              f"scoring, coverage {100 * api['coverage']:.1f}% ({api['missing']} of {api['scored']} target "
              f"probabilities missing from the top-{api['top_logprobs']}, taken as 0)" if api["missing"] else
              f"endpoint: {api['requests']} requests ({api['sent']} sent, the rest cached), {api['scoring']} "
              f"scoring, coverage 100%")
    print("influence (high: visual evidence, low: language prior): "
          + ", ".join(f"{t}={v:.3f}" for t, v in zip(a.target_words, a.influence)))
    return row


def _error(message) -> None:
    """One line on stderr, above a progress bar if one is running."""
    from tqdm.auto import tqdm

    tqdm.write(f"eagle-explain: {shown(message)}", file=sys.stderr)


def unwritable(folder: Path) -> str | None:
    """Why no file can be written in `folder` (the error of a probe file made and removed there), or None."""
    import tempfile

    try:
        with tempfile.TemporaryFile(dir=folder, prefix=".eagle-write-test-"):
            return None
    except OSError as exc:
        return exc.strerror or str(exc)


def _check_cli_arguments(args) -> None:
    """The settings explain() checks, once for the whole run, and the CLI's own (answer length, --out)."""
    from eagle_pipelines.api import check_arguments

    if args.strategy is None:
        args.strategy = "pooled" if args.prompt_units is None else "efficient"
    check_arguments(prompt_for(args), args.strategy, args.regions, args.lambda1, args.lambda2, args.batch_size)
    if args.prompt_units is not None:
        from eagle_pipelines.core.joint import check_prompt_units

        args.prompt_units = args.prompt_units[0] if args.prompt_units == ["words"] else list(args.prompt_units)
        try:
            check_prompt_units(prompt_for(args), args.prompt_units)
        except ValueError as exc:
            raise ValueError(f"--prompt-units: {exc}") from None
    if args.max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens must be at least 1; got {args.max_new_tokens}")
    if args.tokens is not None and not all(t.strip() for t in args.tokens):
        raise ValueError(f"--tokens holds an empty word: {args.tokens!r}")
    if args.out.exists() and not args.out.is_dir():
        raise ValueError(f"--out '{shown(args.out)}' is a file, not a folder; name a folder for the explanations")


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # --help, or argparse's own one-line usage error
        return int(exc.code or 0)
    # eagle_pipelines' log records (each search's expected forward passes, memory plans, warnings) go to stderr
    # as `eagle-explain: ...` lines for the length of the run
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("eagle-explain: %(message)s"))
    package, api_logger = logging.getLogger("eagle_pipelines"), logging.getLogger("eagle_pipelines.api")
    levels, propagate = (package.level, api_logger.level), package.propagate
    package.addHandler(handler)
    package.setLevel(min(package.getEffectiveLevel(), logging.INFO))
    api_logger.setLevel(logging.DEBUG)  # the expected forward passes
    # only this handler: handlers an embedding program put on the root logger (a stdout handler, e.g. Kedro's
    # logging setup) would mix these records into the explanation printed on stdout
    package.propagate = False
    try:
        return _run(args)
    finally:
        package.removeHandler(handler)
        package.setLevel(levels[0])
        api_logger.setLevel(levels[1])
        package.propagate = propagate


def _is_clip(args, path: Path) -> bool:
    """A clip: a video file, or with --video a folder (of frames)."""
    from eagle_pipelines.api_video import VIDEO_SUFFIXES

    return (args.video and path.is_dir()) or (path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES)


def _grid(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*[xX*]\s*(\d+)\s*", text)
    if not match or min(int(match[1]), int(match[2])) < 1:
        raise ValueError(f"--grid must be ROWSxCOLS with both at least 1 (e.g. 5x5); got {text!r}")
    return int(match[1]), int(match[2])


def _run(args) -> int:
    try:
        _check_cli_arguments(args)
        args.grid_shape = _grid(args.grid)
        clips = [Path(p) for p in args.images if _is_clip(args, Path(p))]
        if clips and (args.frames < 2 or args.frames % 2):
            raise ValueError(f"--frames must be an even number >= 2 (Qwen-VL merges 2 frames per temporal patch); "
                             f"got {args.frames}")
        files, bad = image_files([p for p in args.images if Path(p) not in clips], args.out)
        files = clips + files
    except ValueError as exc:
        _error(exc)
        return 2
    _video_defaults(args, clips, len(files))
    for _path, _status, reason in bad:
        _error(reason)
    if not files:
        if not bad:
            _error(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in {', '.join(map(shown, args.images))}")
        return 2
    names = Counter(output_base(args.out, f, args.tokens).name for f in files)
    clash = sorted(shown(f) for f in files if names[output_base(args.out, f, args.tokens).name] > 1)
    if clash:
        _error(f"these images would write the same output name: {', '.join(clash)}; explain them with different "
               f"--out folders")
        return 2
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _error(f"--out '{shown(args.out)}' cannot be made ({exc.strerror or exc}); name a folder you can write to")
        return 2
    problem = unwritable(args.out)
    if problem:  # before the model is loaded and anything computed
        _error(f"--out '{shown(args.out)}' is not writable ({problem}); name a folder you can write to")
        return 2

    from eagle_pipelines.api import load_model

    if args.api_base or args.api_model:
        if not (args.api_base and args.api_model):
            _error("--api-base and --api-model go together: the endpoint and the model name it serves")
            return 2
        try:
            model = load_model(api_base=args.api_base, api_model=args.api_model,
                               cache_dir=str(args.out / "api_cache"))
        except Exception as exc:  # noqa: BLE001 - a dead server, a refused key, a wrong model name
            _error(f"--api-base {args.api_base}: {shown(exc)}")
            return 2
        _announce_requests(args, model, len(files))
        return _explain_all(args, model, files, bad)
    try:
        model = load_model(args.model, family=args.family, dtype=args.dtype, device=args.device,
                           device_map=args.device_map)
    except Exception as exc:  # noqa: BLE001 - DatasetError, ValueError, and whatever a damaged checkpoint raises
        _error(exc if shown(args.model) in str(exc) else f"--model '{shown(args.model)}': {exc}")
        return 2
    return _explain_all(args, model, files, bad)


def _video_defaults(args, clips: list[Path], n_files: int) -> None:
    """--model and --prompt where they are not given: a run with a clip among its inputs explains with the
    video-capable embedded model (the image-only one was never trained on clips) and asks a clip the video question;
    what was chosen is said on stderr, with the option that changes it."""
    if args.model is None:
        args.model = DEFAULT_VIDEO_MODEL if clips and not args.api_base else DEFAULT_MODEL
        if clips and not args.api_base:
            _error(f"{shown(clips[0])} is a clip: explaining with the video-capable embedded model "
                   f"{shown(args.model)} (--model chooses another)")
    if clips and args.prompt is None:
        images = f" and images {IMAGE_PROMPT!r}" if n_files > len(clips) else ""
        _error(f"clips are asked {VIDEO_PROMPT!r}{images} (--prompt sets another)")


def _announce_requests(args, model, n_images: int) -> None:
    """Before an API run: about how many requests it makes (images already explained in --out, and answers
    already cached, cost none)."""
    from eagle_pipelines.api import expected_forward_passes

    passes, exact = expected_forward_passes(args.strategy, args.regions)
    each = "1 request" if model.scoring == "prompt_logprobs" else "1 request per explained token"
    _error(f"{n_images} image(s) through {model.params.api_base} ({model.server} server, {model.scoring} scoring): "
           f"about {n_images} answer requests + {'' if exact else 'at least '}{passes} masked images per image, "
           f"{each} each; cached answers are not sent again")


def _explain_all(args, model, files: list[Path], bad: list[tuple[str, str, str]]) -> int:
    import pandas as pd
    from tqdm.contrib.logging import logging_redirect_tqdm

    from eagle_pipelines.console import progress_bar

    if not args.no_plot:
        import matplotlib

        matplotlib.use("Agg")
    single = len(files) == 1 and not bad
    rows = [{"image": path, "status": status, "error": reason} for path, status, reason in bad]
    with logging_redirect_tqdm(loggers=[logging.getLogger("eagle_pipelines")]):
        stopped = None
        for file in progress_bar(files, desc="explaining", unit="image", disable=single):
            if stopped:  # the endpoint is gone or the budget spent: the rest are not started
                rows.append({"image": shown(file), "status": "failed", "error": f"not started: {stopped}"})
                continue
            try:
                row = _explain_one(args, model, file, single)
            except Exception as exc:  # noqa: BLE001 - one bad image must not stop the others: named, counted
                stop = type(exc).__name__ in ("ServerUnavailable", "RequestBudgetExceeded",  # models/api_model.py
                                              "DamagedCacheError")
                if stop:
                    stopped = f"the run stopped at {shown(file)} ({type(exc).__name__})"
                known = stop or isinstance(exc, (FileNotFoundError, ValueError))
                reason = shown(exc) if known else f"failed unexpectedly ({type(exc).__name__}: {shown(exc)})"
                reason = reason if shown(file) in reason else f"{shown(file)}: {reason}"
                _error(reason)
                rows.append({"image": shown(file), "status": "failed", "error": reason})
                continue
            rows.append(row)
    failed = sum(r["status"] == "failed" for r in rows)
    done = sum(r["status"] in ("explained", "resumed") for r in rows)
    if not single:

        summary = args.out / "summary.csv"
        frame = pd.DataFrame(rows)
        atomic_write(summary, lambda f: f.write(frame.to_csv(index=False, float_format="%.4f").encode("utf-8")))
        skipped = sum(r["status"] == "skipped" for r in rows)
        print(f"{done} of {len(rows)} images explained ({failed} failed, {skipped} skipped); one row each in "
              f"{shown(summary)}")
    if failed:
        return 2 if done == 0 else 1
    return 0


def _clip_digest(path: Path) -> str:
    """sha256 of a video file's bytes, or of a folder's frame names and bytes (name order)."""
    digest = hashlib.sha256()
    if path.is_file():
        digest.update(path.read_bytes())
        return digest.hexdigest()
    for entry in sorted(path.iterdir()):
        if entry.is_file() and entry.suffix.lower() in IMAGE_SUFFIXES:
            digest.update(entry.name.encode())
            digest.update(entry.read_bytes())
    return digest.hexdigest()


def _explain_clip(args, model, file: Path, single: bool) -> dict:
    """One clip: <out>/<name>[_<tokens>].{npz,json} (a VideoAttribution), .png (every frame with its map, the
    curves, each frame's share) and .gif (the map over the clip)."""
    from eagle_pipelines.api import explain
    from eagle_pipelines.core.video import VideoAttribution

    rows, cols = args.grid_shape
    wanted = {**explanation_inputs(args, model, _clip_digest(file), clip=True), "n_regions": None, "slic": None,
              "video": {"frames": args.frames, "regions": args.video_regions,
                        **({"grid": [rows, cols]} if args.video_regions == "grid" else {"segments": args.segments})}}
    base = output_base(args.out, file, args.tokens)
    npz, meta, png, gif = (_with(base, s) for s in (".npz", ".json", ".png", ".gif"))
    earlier, why = (None, "") if args.overwrite else earlier_result(base, wanted)
    if earlier is not None and (args.no_plot or (png.exists() and gif.exists())):
        _say_resumed(file, meta)
        return {**describe(earlier, verbose=single), "image": shown(file), "status": "resumed", "error": ""}
    if why:
        _error(f"{shown(file)}: {why}")
    a = explain(model, file, prompt_for(args, clip=True), **_search_args(args, file, wanted), progress=single,
                n_frames=args.frames, rows=rows, cols=cols, region_method=args.video_regions,
                n_segments=args.segments)
    row = {**describe(a, verbose=single), "status": "explained", "error": ""}

    def draw() -> list[Path]:
        import matplotlib.pyplot as plt

        from eagle_pipelines.models.video import read_frames

        frames = model.model_clip(read_frames(file, args.frames)).frames
        fig = VideoAttribution.plot(a, frames)
        try:
            atomic_write(png, lambda f: fig.savefig(f, dpi=110, format="png"))
        finally:
            plt.close(fig)
        a.gif(frames, gif)
        return [png, gif]

    _write_outputs(args, a, npz, meta, single, draw)
    return row


def _explain_one(args, model, file: Path, single: bool) -> dict:
    from eagle_pipelines.api import explain
    from eagle_pipelines.core.images import read_image

    if _is_clip(args, file):
        if args.prompt_units is not None:
            raise ValueError(f"{shown(file)}: --prompt-units applies to images; a clip's prompt is not attributed")
        return _explain_clip(args, model, file, single)
    data = file.read_bytes()
    wanted = explanation_inputs(args, model, hashlib.sha256(data).hexdigest())
    base = output_base(args.out, file, args.tokens)
    if args.prompt_units is not None:  # core/joint.py: one order over regions and prompt words
        return _explain_joint(args, model, file, data, {**wanted, "prompt_units": args.prompt_units},
                              _with(base, "_joint"), single)
    npz, meta, png = _with(base, ".npz"), _with(base, ".json"), _with(base, ".png")
    earlier, why = (None, "") if args.overwrite else earlier_result(base, wanted)
    if earlier is not None:
        row = {**describe(earlier, verbose=single), "image": shown(file), "status": "resumed", "error": ""}
        if not args.no_plot and not png.exists() and earlier.labels.ndim == 2:
            _plot(earlier, read_image(file, data), png)
        _say_resumed(file, meta)
        return row
    if why:
        _error(f"{shown(file)}: {why}")
    image = read_image(file, data)
    a = explain(model, image, prompt_for(args), **_search_args(args, file, wanted), n_regions=args.regions,
                progress=single)
    row = {**describe(a, verbose=single), "status": "explained", "error": ""}
    _write_outputs(args, a, npz, meta, single, lambda: _plot(a, image, png))
    return row


def _explain_joint(args, model, file: Path, data: bytes, wanted: dict, base: Path, single: bool) -> dict:
    """One image with --prompt-units: <out>/<name>_joint.{npz,json,png} (a core/joint.py JointAttribution)."""
    from eagle_pipelines.api import explain
    from eagle_pipelines.core.images import read_image
    from eagle_pipelines.core.joint import JointAttribution

    npz, meta, png = _with(base, ".npz"), _with(base, ".json"), _with(base, ".png")
    if not args.overwrite and meta.exists():  # resume: the same inputs were explained there
        try:
            earlier = JointAttribution.load(npz)
        except Exception:  # noqa: BLE001 - unreadable: recomputed below
            earlier = None
        if earlier is not None and earlier.meta.get("fingerprint") == json.loads(json.dumps(wanted)):
            _say_resumed(file, meta)
            return {"image": shown(file), **earlier.row(), "status": "resumed", "error": ""}
    image = read_image(file, data)
    a = explain(model, image, prompt_for(args), **_search_args(args, file, wanted), n_regions=args.regions,
                prompt_units=args.prompt_units)
    if single:
        print("\n".join(a.summary_lines()))
    _write_outputs(args, a, npz, meta, single, lambda: _plot(a, image, png))
    return {"image": shown(file), **a.row(), "status": "explained", "error": ""}


def _plot(a, image, path: Path) -> list[Path]:
    """`a`'s figure over `image`, written to `path`; returns [path]."""
    import matplotlib.pyplot as plt

    fig = a.plot(image)
    try:
        atomic_write(path, lambda f: fig.savefig(f, dpi=120, format="png"))
    finally:
        plt.close(fig)
    return [path]


def _search_args(args, file: Path, wanted: dict) -> dict:
    """The keyword arguments of ``explain`` that an image, a clip and a joint explanation share: the targets, the
    search and its batch, the answer's length and the meta that files the result under its inputs."""
    return {"tokens": args.tokens, "strategy": args.strategy, "lambda1": args.lambda1, "lambda2": args.lambda2,
            "batch_size": args.batch_size, "max_new_tokens": args.max_new_tokens,
            "meta": {"image": shown(file), "fingerprint": wanted}}


def _say_resumed(file: Path, meta: Path) -> None:
    from tqdm.auto import tqdm

    tqdm.write(f"{shown(file)}: already explained from the same inputs in {shown(meta)} (--overwrite recomputes "
               f"it)", file=sys.stdout)


def _write_outputs(args, a, npz: Path, meta: Path, single: bool, draw) -> None:
    """Saves `a` as `npz` and `meta` (the .json, written last, marks a finished pair: an old one is removed first,
    so it is never beside a newer .npz), then, unless --no-plot, its figures (`draw()` writes them and returns
    their paths); with one input, says what it wrote."""
    meta.unlink(missing_ok=True)
    a.save(npz)
    written = [npz, meta]
    if not args.no_plot:
        written += draw()
    if single:
        print("wrote " + ", ".join(shown(p) for p in written))


if __name__ == "__main__":
    raise SystemExit(main())
