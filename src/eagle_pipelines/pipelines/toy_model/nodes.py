"""Nodes of the toy model pipeline."""

from __future__ import annotations

import logging

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from eagle_pipelines.data.coco import CocoIndex  # noqa: E402
from eagle_pipelines.models.processing import build_processor, words_of  # noqa: E402
from eagle_pipelines.models.qwen_vl import QwenVLAdapter  # noqa: E402
from eagle_pipelines.models.toy import (  # noqa: E402
    build_toy_model,
    caption_quality,
    make_sampler,
    train_toy_model,
    vocabulary_texts,
    yes_no_quality,
)
from eagle_pipelines.parameters import parse  # noqa: E402

logger = logging.getLogger(__name__)


def _split_arrays(split: str, instances: dict, captions: dict, images: dict):
    index = CocoIndex(instances, captions, source=f"{split} instances")
    ids = index.image_ids()
    arrays = [index.load_image(i, images) for i in ids]
    caps = [index.captions_of(i)[0] for i in ids]
    present = [{o.category for o in index.objects(i)} for i in ids]
    return index, arrays, caps, present


def train_model(train_instances: dict, train_captions: dict, train_images: dict, shapes: dict,
                toy_model: dict) -> tuple[QwenVLAdapter, pd.DataFrame]:
    """Builds the offline processor and the tiny Qwen2.5-VL, and trains it on the training split."""
    shapes_p, params = parse("shapes", shapes), parse("toy_model", toy_model)
    index, arrays, caps, present = _split_arrays("train", train_instances, train_captions, train_images)
    categories = index.category_names()
    texts = vocabulary_texts(caps, categories, params)
    if params.training.init_from:
        start = QwenVLAdapter.from_pretrained(params.training.init_from)
        processor, model = start.processor, start.model
        tok = processor.tokenizer
        unknown = sorted({w for w in words_of(texts) if tok.convert_tokens_to_ids(w) == tok.unk_token_id})
        if unknown:
            raise ValueError(f"toy_model.training.init_from = {params.training.init_from!r} does not know the words "
                             f"{unknown[:10]} of the training data; train from scratch (init_from: null)")
        logger.info("toy model: continuing the training of %s", params.training.init_from)
    else:
        processor = build_processor(texts, shapes_p.image_size, params.architecture.patch_size,
                                    params.architecture.merge_size)
        model = build_toy_model(processor, params.architecture, seed=params.training.seed)
    n_params = sum(p.numel() for p in model.parameters())
    logger.info("toy model: %d parameters, vocabulary of %d tokens, %d training images", n_params,
                len(processor.tokenizer), len(arrays))
    cooc = shapes_p.cooccurrence
    sampler = make_sampler(arrays, caps, present, categories, params,
                           bias=(cooc.anchor, cooc.companion) if cooc is not None else None)
    with tqdm(total=params.training.max_steps, desc="training toy model", unit="step") as bar:
        def progress(step: int, loss: float) -> None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}")

        log = train_toy_model(model, processor, sampler, params.training, progress=progress)
    return QwenVLAdapter(model, processor, name="toy_qwen2_5_vl"), pd.DataFrame(log)


def evaluate_model(vlm: QwenVLAdapter, val_instances: dict, val_captions: dict, val_images: dict,
                   toy_model: dict, shapes: dict) -> dict:
    """Greedy captions on the held-out split: exact-match rate and per-token accuracy, plus model facts; when
    the model was trained on questions too, its yes/no accuracy and the co-occurrence hallucination rate."""
    cooc = parse("shapes", shapes).cooccurrence
    train_cooccurrence = cooc.model_dump() if cooc is not None else None
    params = parse("toy_model", toy_model)
    index, arrays, caps, present = _split_arrays("val", val_instances, val_captions, val_images)
    quality = caption_quality(vlm, arrays, caps, params.caption_prompt, batch_size=params.eval_batch_size,
                              max_new_tokens=params.max_new_tokens)
    if params.training.question_fraction > 0:
        bias = (train_cooccurrence or {}).get("anchor"), (train_cooccurrence or {}).get("companion")
        quality["yes_no"] = yes_no_quality(vlm, arrays, present, index.category_names(), params.question_template,
                                           bias=bias if all(bias) else None, batch_size=params.eval_batch_size)
        logger.info("toy model yes/no questions: accuracy %.3f (present %.3f, absent %.3f); 'yes' to the "
                    "companion beside the anchor alone: %s", quality["yes_no"]["accuracy"],
                    quality["yes_no"]["present_accuracy"], quality["yes_no"]["absent_accuracy"],
                    quality["yes_no"]["biased_yes_rate"])
    quality["parameters"] = int(sum(p.numel() for p in vlm.model.parameters()))
    return quality


def add_training_facts(quality: dict, toy_model_training_log: pd.DataFrame, toy_model: dict) -> dict:
    """The held-out quality with the training's facts (steps, seconds, final loss, initial checkpoint)."""
    params = parse("toy_model", toy_model)
    log = toy_model_training_log
    quality = dict(quality)
    quality.update({
        "training_steps": int(log["step"].iloc[-1]),
        "training_seconds": round(float(log["seconds"].iloc[-1]), 1),
        "final_loss": round(float(log["loss"].tail(20).mean()), 5),
        "init_from": params.training.init_from,
    })
    logger.info("toy model held-out quality: exact match %.3f, token accuracy %.4f over %d images "
                "(%d parameters, %d steps, %.0f s)", quality["exact_match"], quality["token_accuracy"],
                quality["images"], quality["parameters"], quality["training_steps"], quality["training_seconds"])
    return quality


def plot_training_loss(toy_model_training_log: pd.DataFrame):
    """Training loss per step (log scale) with a moving average."""
    log = toy_model_training_log
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(log["step"], log["loss"], lw=0.6, alpha=0.4, label="loss")
    ax.plot(log["step"], log["loss"].rolling(25, min_periods=1).mean(), lw=1.5, label="moving average (25)")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (answer tokens)")
    ax.set_title("Embedded tiny Qwen2.5-VL: training loss")
    ax.legend()
    fig.tight_layout()
    return fig
