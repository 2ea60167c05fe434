"""Nodes of the toy model pipeline."""

from __future__ import annotations

import logging

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from eagle_pipelines.console import progress_bar  # noqa: E402
from eagle_pipelines.data.clips import generate_clip, generate_clip_split
from eagle_pipelines.data.coco import CocoIndex  # noqa: E402
from eagle_pipelines.models.processing import build_processor, words_of  # noqa: E402
from eagle_pipelines.models.qwen_vl import QwenVLAdapter  # noqa: E402
from eagle_pipelines.models.toy import (
    build_toy_model,
    caption_quality,
    clip_quality,
    extend_vocabulary,
    make_sampler,
    make_video_sampler,
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


def _bias(shapes_p) -> tuple[str, str] | None:
    """The training split's co-occurrence bias (anchor, companion), or None."""
    cooc = shapes_p.cooccurrence
    return (cooc.anchor, cooc.companion) if cooc is not None else None


def _unknown_words(tokenizer, texts) -> list[str]:
    """The words of `texts` a checkpoint's word-level tokenizer does not know."""
    return sorted({w for w in words_of(texts) if tokenizer.convert_tokens_to_ids(w) == tokenizer.unk_token_id})


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
        unknown = _unknown_words(processor.tokenizer, texts)
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
    sampler = make_sampler(arrays, caps, present, categories, params, bias=_bias(shapes_p))
    with progress_bar(total=params.training.max_steps, desc="training toy model", unit="step") as bar:
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


# --- the video stage (pipeline toy_model_video) -------------------------------------------------------------------
def make_clip_split(shapes: dict, clips: dict, split: str = "val") -> tuple[dict, dict]:
    """The clips of `split` (frames keyed ``<clip>/frame_00`` and YouTube-VIS annotations) for a ClipSplitDataset."""
    return generate_clip_split(parse("shapes", shapes), parse("clips", clips), split)


def decode_split(instances: dict, captions: dict, images: dict) -> tuple:
    """A split's index, decoded images, first captions and object names per image (what training samples from)."""
    return _split_arrays("train", instances, captions, images)


def train_video_model(vlm: QwenVLAdapter, train_split: tuple, shapes: dict, toy_model: dict,
                      clips: dict) -> tuple[QwenVLAdapter, pd.DataFrame]:
    """Continues the image checkpoint `vlm` (or ``toy_model.video.training.init_from``) on images and clips: the
    clip words the vocabulary lacks are added (embeddings resized), then each batch mixes ``clip_fraction`` clips
    of the training clips (made on the fly, deterministic per index) with the image stage's samples."""
    shapes_p, params, clips_p = parse("shapes", shapes), parse("toy_model", toy_model), parse("clips", clips)
    video = params.video
    if video.training.init_from:
        vlm = QwenVLAdapter.from_pretrained(video.training.init_from)
        logger.info("toy model (video): continuing the training of %s", video.training.init_from)
    model, processor = vlm.model, vlm.processor
    index, arrays, caps, present = train_split
    categories = index.category_names()
    texts = vocabulary_texts(caps, categories, params)
    tok = processor.tokenizer
    unknown = _unknown_words(tok, texts)
    if unknown:
        raise ValueError(f"the checkpoint to continue does not know the words {unknown[:10]} of the image training "
                         f"data; train the image model first (kedro run --pipeline=toy_model)")
    answers = [f"a {c}" for c in categories]
    added = extend_vocabulary(model, processor, [clips_p.prompt, *answers])
    image_sampler = make_sampler(arrays, caps, present, categories, params.model_copy(
        update={"training": video.training}), bias=_bias(shapes_p))

    def clip_at(i: int):
        clip = generate_clip(shapes_p, clips_p, "train", i)
        return clip.frames, clips_p.prompt, clip.answer

    sampler = make_video_sampler(image_sampler, clip_at, clips_p.splits.train, video.clip_fraction)
    adapter = QwenVLAdapter(model, processor, name="toy_qwen2_5_vl_video")

    def encode_clips(samples):
        return adapter.video_inputs([s.frames for s in samples], [s.prompt for s in samples],
                                    answers=[s.answer for s in samples])

    logger.info("toy model (video): %d parameters, vocabulary of %d tokens (added %s), %d training images, "
                "%d training clips, %.0f%% clips per batch", sum(p.numel() for p in model.parameters()), len(tok),
                added, len(arrays), clips_p.splits.train, 100 * video.clip_fraction)
    with progress_bar(total=video.training.max_steps, desc="training toy video model", unit="step") as bar:
        def progress(step: int, loss: float) -> None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}")

        log = train_toy_model(model, processor, sampler, video.training, progress=progress, encode_clips=encode_clips)
    return QwenVLAdapter(model, processor, name="toy_qwen2_5_vl_video"), pd.DataFrame(log)


def evaluate_video_model_on_images(vlm_video: QwenVLAdapter, val_instances: dict, val_captions: dict,
                                   val_images: dict, toy_model: dict, shapes: dict) -> dict:
    """The video model's held-out image figures: ``evaluate_model`` (caption exact match, yes/no) under the video
    stage's training settings."""
    params = parse("toy_model", toy_model)
    video_params = params.model_copy(update={"training": params.video.training})
    return evaluate_model(vlm_video, val_instances, val_captions, val_images, video_params.model_dump(), shapes)


def evaluate_video_model_on_clips(vlm_video: QwenVLAdapter, clips_val, toy_model: dict) -> dict:
    """The video model's held-out quality on clips: exact match of the answers on the held-out clips (its image
    figures are ``evaluate_model``'s on the val images)."""
    params = parse("toy_model", toy_model)
    records = clips_val.records
    return clip_quality(vlm_video, [clips_val.clip(r.name).frames for r in records], [r.answer for r in records],
                        records[0].prompt if records else "", max_new_tokens=params.max_new_tokens)


def add_video_training_facts(images_quality: dict, clips_quality: dict, toy_model_video_training_log: pd.DataFrame,
                             toy_model: dict) -> dict:
    """The video model's held-out quality on both kinds of input (the image figures, ``clips``) with
    ``add_training_facts`` for the video stage (its schedule, the clip share of each batch)."""
    params = parse("toy_model", toy_model)
    video_params = params.model_copy(update={"training": params.video.training})
    quality = {**images_quality, "clips": clips_quality}
    logger.info("toy video model: images exact match %.3f; clips exact match %.3f over %d held-out clips",
                quality["exact_match"], quality["clips"]["exact_match"], quality["clips"]["clips"])
    quality = add_training_facts(quality, toy_model_video_training_log, video_params.model_dump())
    quality["clip_fraction"] = params.video.clip_fraction
    quality["init_from"] = params.video.training.init_from or "vlm (data/06_models/toy_qwen2_5_vl)"
    return quality
