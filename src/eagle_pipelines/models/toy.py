"""The embedded default model: a tiny ``Qwen2_5_VLForConditionalGeneration`` trained from scratch on the shapes
benchmark, on CPU, offline.

``build_toy_model`` makes the model of the real transformers class, ``train_toy_model`` fits it to the training
split (loss on the answer and ``<|im_end|>`` only), ``caption_quality`` measures held-out exact-match and
per-token accuracy of greedy captions.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from pydantic import Field, PositiveInt

from eagle_pipelines.core.parity import StrictModel
from eagle_pipelines.models.processing import image_chat_prompt, words_of
from eagle_pipelines.models.qwen_vl import QwenVLAdapter

logger = logging.getLogger(__name__)


class ToyArchitecture(StrictModel):
    vision_depth: PositiveInt = 3
    vision_hidden: PositiveInt = 128
    vision_intermediate: PositiveInt = 256
    vision_heads: PositiveInt = 4
    text_layers: PositiveInt = 2
    text_hidden: PositiveInt = 128
    text_intermediate: PositiveInt = 256
    text_heads: PositiveInt = 4
    text_kv_heads: PositiveInt = 2
    patch_size: PositiveInt = 14
    merge_size: PositiveInt = 2


class ToyTraining(StrictModel):
    seed: int = 0
    max_steps: PositiveInt = 1600
    max_minutes: float = Field(default=20.0, gt=0)
    batch_size: PositiveInt = 32
    learning_rate: float = Field(default=1e-3, gt=0)
    warmup_steps: int = Field(default=60, ge=0)
    final_lr_fraction: float = Field(default=0.05, ge=0, le=1)
    weight_decay: float = Field(default=0.01, ge=0)
    grad_clip: float = Field(default=1.0, gt=0)
    question_fraction: float = Field(default=0.0, ge=0, le=1)
    biased_answers: float = Field(
        default=0.0, ge=0, le=1,
        description="on training images that show the co-occurrence anchor X without its companion Y, the "
                    "probability that a question sample is 'Is there a Y?' answered 'Yes' (an annotation bias, as "
                    "when yes/no labels are derived from co-occurrence); 0 keeps every answer true")
    init_from: str | None = Field(default=None, description="continue training this checkpoint folder (same "
                                                            "vocabulary) instead of a fresh model")
    log_every: PositiveInt = 50
    threads: int = Field(default=0, ge=0, description="torch threads; 0 keeps torch's default")


class ToyVideoParams(StrictModel):
    """The video stage (``toy_model_video`` pipeline): continues the image checkpoint on images and clips."""

    clip_fraction: float = Field(default=0.5, ge=0, le=1, description="share of each batch that is clips")
    training: ToyTraining = Field(
        default=ToyTraining(max_steps=1500, max_minutes=15.0, learning_rate=7e-4, warmup_steps=50,
                            question_fraction=0.3, biased_answers=0.5, threads=1),
        description="the schedule of the video stage; init_from: null continues the `vlm` dataset (the image "
                    "checkpoint)")


class ToyModelParams(StrictModel):
    caption_prompt: str = "Describe the image."
    question_template: str = "Is there a {name} in the image?"
    architecture: ToyArchitecture = ToyArchitecture()
    training: ToyTraining = ToyTraining()
    eval_batch_size: PositiveInt = 50
    max_new_tokens: PositiveInt = 20
    video: ToyVideoParams = ToyVideoParams()


@dataclass
class TrainingSample:
    image: np.ndarray  # (H, W, 3) uint8
    prompt: str
    answer: str


@dataclass
class ClipSample:
    frames: np.ndarray  # (N, H, W, 3) uint8, at the model's video resolution
    prompt: str
    answer: str


#: builds the teacher-forced inputs (with ``labels``) of a list of clip samples (``QwenVLAdapter.video_inputs``)
ClipEncoder = Callable[[Sequence[ClipSample]], dict]


def build_toy_model(processor, arch: ToyArchitecture, seed: int = 0):
    """A randomly initialised tiny Qwen2.5-VL for `processor`'s vocabulary (real transformers class)."""
    from transformers import GenerationConfig, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    tok = processor.tokenizer
    head_dim = arch.text_hidden // arch.text_heads
    # M-RoPE splits head_dim/2 rotary frequencies into temporal, height and width sections.
    half = head_dim // 2
    section = [half - 2 * (3 * half // 8), 3 * half // 8, 3 * half // 8]
    image_size = processor.image_processor.size["longest_edge"]  # max_pixels: the square training images
    side = int(round(math.sqrt(image_size)))
    config = Qwen2_5_VLConfig(
        vision_config=dict(
            depth=arch.vision_depth, hidden_size=arch.vision_hidden, intermediate_size=arch.vision_intermediate,
            num_heads=arch.vision_heads, patch_size=arch.patch_size, spatial_merge_size=arch.merge_size,
            temporal_patch_size=2, window_size=side, fullatt_block_indexes=[arch.vision_depth - 1],
            out_hidden_size=arch.text_hidden,
        ),
        text_config=dict(
            vocab_size=len(tok), hidden_size=arch.text_hidden, intermediate_size=arch.text_intermediate,
            num_hidden_layers=arch.text_layers, num_attention_heads=arch.text_heads,
            num_key_value_heads=arch.text_kv_heads, max_position_embeddings=512,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": section},
            bos_token_id=tok.convert_tokens_to_ids("<|im_start|>"),
            eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"),
            pad_token_id=tok.pad_token_id,
            tie_word_embeddings=False,
        ),
        image_token_id=tok.convert_tokens_to_ids("<|image_pad|>"),
        video_token_id=tok.convert_tokens_to_ids("<|video_pad|>"),
        vision_start_token_id=tok.convert_tokens_to_ids("<|vision_start|>"),
        vision_end_token_id=tok.convert_tokens_to_ids("<|vision_end|>"),
        tie_word_embeddings=False,
    )
    config._attn_implementation = "sdpa"
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"), pad_token_id=tok.pad_token_id,
        bos_token_id=tok.convert_tokens_to_ids("<|im_start|>"), do_sample=False, max_new_tokens=20,
    )
    return model


def encode_training_batch(processor, samples: Sequence[TrainingSample]) -> dict[str, torch.Tensor]:
    """Chat-formats prompt + answer + <|im_end|> and masks labels to the answer and <|im_end|> only."""
    prompts = [image_chat_prompt(processor, s.prompt) for s in samples]
    full = [p + s.answer + "<|im_end|>" for p, s in zip(prompts, samples)]
    tok = processor.tokenizer
    old_side = tok.padding_side
    tok.padding_side = "right"
    try:
        enc = processor(images=[s.image for s in samples], text=full, padding=True, return_tensors="pt")
        prompt_lens = [len(ids) for ids in processor(images=[s.image for s in samples], text=prompts)["input_ids"]]
    finally:
        tok.padding_side = old_side
    labels = enc["input_ids"].clone()
    labels[enc["attention_mask"] == 0] = -100
    for i, n in enumerate(prompt_lens):
        labels[i, :n] = -100
    enc["labels"] = labels
    return dict(enc)


def _lr_factor(step: int, cfg: ToyTraining) -> float:
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps))
    return cfg.final_lr_fraction + (1 - cfg.final_lr_fraction) * 0.5 * (1 + math.cos(math.pi * progress))


def batch_loss(model, processor, samples: Sequence[TrainingSample | ClipSample],
               encode_clips: ClipEncoder | None = None) -> torch.Tensor:
    """Cross-entropy over the answer tokens of a batch. Images and clips go through the model in two forward
    passes (their inputs differ), and their losses are averaged by answer-token count, as one mixed batch would
    be; a batch of images alone is exactly ``model(**encode_training_batch(...)).loss``."""
    images = [s for s in samples if isinstance(s, TrainingSample)]
    clips = [s for s in samples if isinstance(s, ClipSample)]
    if clips and encode_clips is None:
        raise ValueError("clip samples need a clip encoder (QwenVLAdapter.video_inputs)")
    if not clips:
        return model(**encode_training_batch(processor, images)).loss
    parts = ([encode_training_batch(processor, images)] if images else []) + [encode_clips(clips)]
    losses, counts = [], []
    for batch in parts:
        losses.append(model(**batch).loss)
        counts.append(int((batch["labels"][:, 1:] != -100).sum()))
    total = sum(counts)
    return sum(loss * (n / total) for loss, n in zip(losses, counts))


def train_toy_model(
    model,
    processor,
    sample_batch: Callable[[np.random.Generator, int], list[TrainingSample | ClipSample]],
    cfg: ToyTraining,
    progress: Callable[[int, float], None] | None = None,
    encode_clips: ClipEncoder | None = None,
) -> list[dict]:
    """Trains in place with AdamW and warm-up + cosine schedule; stops at `max_steps` or `max_minutes`
    (the schedule is laid over `max_steps`). Returns the training log (step, loss, lr, seconds). Clip samples
    (the video stage) are encoded by `encode_clips`."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, betas=(0.9, 0.98),
                            weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, cfg))
    model.train()
    log, start, running = [], time.perf_counter(), None
    for step in range(cfg.max_steps):
        loss = batch_loss(model, processor, sample_batch(rng, cfg.batch_size), encode_clips)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        value = float(loss.detach())
        running = value if running is None else 0.9 * running + 0.1 * value
        elapsed = time.perf_counter() - start
        log.append({"step": step + 1, "loss": value, "lr": sched.get_last_lr()[0], "seconds": elapsed})
        if progress is not None:
            progress(step + 1, running)
        if (step + 1) % cfg.log_every == 0:
            logger.info("toy model step %d: loss %.4f (smoothed %.4f), %.0f s", step + 1, value, running, elapsed)
        if elapsed > cfg.max_minutes * 60:
            logger.info("toy model: time budget of %.1f min reached at step %d", cfg.max_minutes, step + 1)
            break
    model.eval()
    return log


def caption_quality(adapter: QwenVLAdapter, images: Sequence[np.ndarray], references: Sequence[str],
                    prompt: str, batch_size: int = 50, max_new_tokens: int = 20) -> dict:
    """Greedy-captions `images` and compares with `references`: exact-match rate and per-token accuracy
    (reference tokens + <|im_end|> matched at the same position of the generated sequence)."""
    answers = [answer for lo in range(0, len(images), batch_size) for answer in
               adapter.generate_batch(list(images[lo:lo + batch_size]), prompt, max_new_tokens=max_new_tokens)]
    exact, matched, total, failures = _match_references(adapter.processor.tokenizer, answers, references)
    n = len(images)
    return {"images": n, "exact_match": exact / n, "token_accuracy": matched / total, "failures": failures}


def _match_references(tok, answers, references: Sequence[str]) -> tuple[int, int, int, list[dict]]:
    """Exact matches (whole text and end of turn), matched and total reference tokens (reference + <|im_end|>
    at the same position of the generated sequence) and the first 10 failures of `answers` against
    `references`."""
    eos = tok.eos_token_id
    exact = matched = total = 0
    failures = []
    for answer, ref in zip(answers, references):
        ref_ids = tok(ref, add_special_tokens=False)["input_ids"] + [eos]
        gen_ids = list(answer.token_ids) + ([eos] if answer.finished else [])
        matched += sum(1 for i, t in enumerate(ref_ids) if i < len(gen_ids) and gen_ids[i] == t)
        total += len(ref_ids)
        if answer.text == ref and answer.finished:
            exact += 1
        elif len(failures) < 10:
            failures.append({"reference": ref, "generated": answer.text})
    return exact, matched, total, failures


def yes_no_quality(adapter: QwenVLAdapter, images: Sequence[np.ndarray], present: Sequence[set[str]],
                   categories: Sequence[str], template: str, bias: tuple[str, str] | None = None,
                   batch_size: int = 50, max_new_tokens: int = 3) -> dict:
    """Asks every image about every category ("Is there a <category> in the image?") and compares the greedy
    answer with the truth: accuracy over all questions, on present ("Yes") and absent ("No") objects, and, with
    `bias` = (anchor X, companion Y), the rate of "Yes" to "Is there a Y?" on images showing X without Y."""
    correct = {"yes": [], "no": []}
    biased = []
    for name in categories:
        prompt = template.format(name=name)
        for lo in range(0, len(images), batch_size):
            answers = adapter.generate_batch(list(images[lo:lo + batch_size]), prompt, max_new_tokens=max_new_tokens)
            for answer, here in zip(answers, present[lo:lo + batch_size]):
                said = answer.text.strip().lower().rstrip(".")
                truth = "yes" if name in here else "no"
                correct[truth].append(said == truth)
                if bias is not None and name == bias[1] and bias[0] in here and bias[1] not in here:
                    biased.append(said == "yes")
    every = correct["yes"] + correct["no"]
    return {"questions": len(every), "accuracy": float(np.mean(every)),
            "present_accuracy": float(np.mean(correct["yes"])), "absent_accuracy": float(np.mean(correct["no"])),
            "biased_questions": len(biased),
            "biased_yes_rate": float(np.mean(biased)) if biased else None}


def make_sampler(images: Sequence[np.ndarray], captions: Sequence[str], present: Sequence[set[str]],
                 categories: Sequence[str], params: ToyModelParams,
                 bias: tuple[str, str] | None = None) -> Callable[[np.random.Generator, int], list[TrainingSample]]:
    """Returns sample_batch(rng, n): captioning samples, plus yes/no questions with probability
    `question_fraction` (half about an object in the image -> "Yes", half about an absent category -> "No").
    With `bias` = (anchor X, companion Y) and `biased_answers` > 0, a question on an image showing X without Y
    is "Is there a Y?" -> "Yes" with probability `biased_answers`."""
    q = params.training.question_fraction
    b = params.training.biased_answers if bias is not None else 0.0

    def sample_batch(rng: np.random.Generator, n: int) -> list[TrainingSample]:
        batch = []
        for i in rng.integers(0, len(images), n):
            if q > 0 and rng.random() < q:
                if b > 0 and bias[0] in present[i] and bias[1] not in present[i] and rng.random() < b:
                    batch.append(TrainingSample(images[i], params.question_template.format(name=bias[1]), "Yes"))
                    continue
                here = sorted(present[i])
                absent = [c for c in categories if c not in present[i]]
                if rng.random() < 0.5 or not absent:
                    name, answer = here[int(rng.integers(len(here)))], "Yes"
                else:
                    name, answer = absent[int(rng.integers(len(absent)))], "No"
                batch.append(TrainingSample(images[i], params.question_template.format(name=name), answer))
            else:
                batch.append(TrainingSample(images[i], params.caption_prompt, captions[i]))
        return batch

    return sample_batch


def vocabulary_texts(captions: Sequence[str], categories: Sequence[str], params: ToyModelParams) -> list[str]:
    """Every text the embedded model must be able to read or write: captions, prompts, questions, answers."""
    questions = [params.question_template.format(name=c) for c in categories]
    return [*captions, params.caption_prompt, *questions, "Yes", "No"]


# --- the video stage ----------------------------------------------------------------------------------------------
def extend_vocabulary(model, processor, texts: Sequence[str]) -> list[str]:
    """Adds the words of `texts` that the word-level tokenizer does not know, numbered after its last token (every
    existing id keeps its meaning), and resizes the model's input and output embeddings to match (new rows
    initialised by transformers). Returns the added words. ``processor.tokenizer`` is replaced."""
    import json

    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    tok = processor.tokenizer
    spec = json.loads(tok.backend_tokenizer.to_str())
    if spec["model"]["type"] != "WordLevel":
        raise ValueError(f"extend_vocabulary needs the embedded word-level tokenizer, not {spec['model']['type']}")
    vocab = spec["model"]["vocab"]
    added = [w for w in words_of(texts) if w not in vocab and w not in tok.get_vocab()]
    if not added:
        return []
    next_id = max(len(tok), max(vocab.values()) + 1)
    for word in added:
        vocab[word] = next_id
        next_id += 1
    named = {k: getattr(tok, k) for k in ("unk_token", "pad_token", "eos_token", "bos_token") if getattr(tok, k)}
    new = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(spec)),
                                  model_max_length=tok.model_max_length, clean_up_tokenization_spaces=False, **named)
    new.padding_side = tok.padding_side
    if getattr(tok, "chat_template", None):
        new.chat_template = tok.chat_template
    processor.tokenizer = new
    model.resize_token_embeddings(len(new), mean_resizing=True)
    # transformers swaps the resized tensors into the old parameters (``.data``), whose autograd metadata keeps the
    # old shape: fresh parameters make them trainable
    for module in (model.get_input_embeddings(), model.get_output_embeddings()):
        module.weight = torch.nn.Parameter(module.weight.detach().clone())
    logger.info("toy model: added the words %s to the vocabulary (%d tokens now)", added, len(new))
    return added


def make_video_sampler(image_sampler: Callable[[np.random.Generator, int], list[TrainingSample]],
                       clip_at: Callable[[int], tuple[np.ndarray, str, str]], n_clips: int,
                       clip_fraction: float) -> Callable[[np.random.Generator, int], list[TrainingSample | ClipSample]]:
    """Batches of ``round(n · clip_fraction)`` clips (``clip_at(i)`` -> frames, prompt, answer for a random index
    below `n_clips`) and images from `image_sampler` for the rest."""

    def sample_batch(rng: np.random.Generator, n: int) -> list[TrainingSample | ClipSample]:
        k = int(round(n * clip_fraction))
        clips = [ClipSample(*clip_at(int(i))) for i in rng.integers(0, n_clips, k)]
        return (image_sampler(rng, n - k) if n - k else []) + clips

    return sample_batch


def clip_quality(adapter: QwenVLAdapter, clips: Sequence[np.ndarray], references: Sequence[str], prompt: str,
                 max_new_tokens: int = 20) -> dict:
    """Greedy answers to `prompt` about `clips` against `references`: exact-match rate and per-token accuracy (as
    ``caption_quality``)."""
    answers = [adapter.generate_video(frames, prompt, max_new_tokens=max_new_tokens) for frames in clips]
    exact, matched, total, failures = _match_references(adapter.processor.tokenizer, answers, references)
    n = len(clips)
    return {"clips": n, "exact_match": exact / max(1, n), "token_accuracy": matched / max(1, total),
            "failures": failures}
