"""The embedded model: training lowers the loss, and the shipped checkpoint meets its quality targets."""

from __future__ import annotations

import json

import numpy as np
import yaml

from eagle_pipelines.data.shapes import generate_split
from eagle_pipelines.models.processing import words_of
from eagle_pipelines.models.toy import (
    ToyModelParams,
    ToyTraining,
    caption_quality,
    encode_training_batch,
    make_sampler,
    train_toy_model,
)
from eagle_pipelines.parameters import parse

from tests.conftest import ROOT, SHIPPED_MODEL


def _base_params(group: str, file: str):
    return parse(group, yaml.safe_load((ROOT / "conf" / "base" / file).read_text())[group])


def test_training_labels_cover_only_the_answer_and_end_of_turn(tiny_processor, eval_split):
    params = ToyModelParams()
    images = list(eval_split.images.values())[:2]
    caps = [a["caption"] for a in eval_split.captions["annotations"]][:2]
    from eagle_pipelines.models.toy import TrainingSample

    batch = encode_training_batch(tiny_processor, [TrainingSample(im, params.caption_prompt, c)
                                                   for im, c in zip(images, caps)])
    tok = tiny_processor.tokenizer
    for row, cap in zip(batch["labels"], caps):
        kept = [int(t) for t in row if t != -100]
        assert kept == tok(cap, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]


def test_a_short_training_run_lowers_the_loss(tiny_model, tiny_processor, eval_split):
    import copy

    model = copy.deepcopy(tiny_model)
    ids = sorted(eval_split.images)
    images = [eval_split.images[i] for i in ids]
    caps = [a["caption"] for a in sorted(eval_split.captions["annotations"], key=lambda a: a["image_id"])]
    present = [set() for _ in ids]
    cfg = ToyTraining(max_steps=40, batch_size=8, learning_rate=3e-3, warmup_steps=2, log_every=100)
    params = ToyModelParams(training=cfg)
    log = train_toy_model(model, tiny_processor, make_sampler(images, caps, present, [], params), cfg)
    losses = [r["loss"] for r in log]
    assert len(losses) == 40
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:5])


def test_question_samples_answer_yes_for_present_and_no_for_absent(eval_split):
    params = ToyModelParams(training=ToyTraining(question_fraction=1.0))
    images = [np.zeros((2, 2, 3), np.uint8), np.ones((2, 2, 3), np.uint8)]
    sampler = make_sampler(images, ["a red circle", "a blue square"], [{"red circle"}, {"blue square"}],
                           ["red circle", "blue square", "green triangle"], params)
    for sample in sampler(np.random.default_rng(0), 200):
        name = sample.prompt.removeprefix("Is there a ").removesuffix(" in the image?")
        present = {"red circle"} if sample.image is images[0] else {"blue square"}
        assert sample.answer == ("Yes" if name in present else "No")


def test_biased_answers_say_yes_to_the_companion_beside_the_anchor_alone():
    params = ToyModelParams(training=ToyTraining(question_fraction=1.0, biased_answers=1.0))
    images = [np.zeros((2, 2, 3), np.uint8), np.ones((2, 2, 3), np.uint8)]
    present = [{"red circle", "green triangle"}, {"red circle", "blue square"}]
    sampler = make_sampler(images, ["", ""], present, ["red circle", "blue square", "green triangle"], params,
                           bias=("red circle", "blue square"))
    samples = sampler(np.random.default_rng(0), 200)
    alone = [s for s in samples if s.image is images[0]]
    assert alone and all(s.prompt == "Is there a blue square in the image?" and s.answer == "Yes" for s in alone)
    both = [s for s in samples if s.image is images[1]]  # the companion is there: answers stay true
    assert all(s.answer == ("Yes" if "green triangle" not in s.prompt else "No") for s in both)
    unbiased = make_sampler(images, ["", ""], present, ["red circle", "blue square", "green triangle"],
                            ToyModelParams(training=ToyTraining(question_fraction=1.0)), bias=("red circle",
                                                                                              "blue square"))
    assert all(s.answer == "No" for s in unbiased(np.random.default_rng(0), 200)
               if s.image is images[0] and "blue square" in s.prompt)


def test_shipped_checkpoint_reports_held_out_quality_above_the_targets():
    quality = json.loads((SHIPPED_MODEL / "quality.json").read_text())
    assert quality["images"] >= 200
    assert quality["exact_match"] >= 0.95
    assert quality["token_accuracy"] >= 0.98
    yes_no = quality["yes_no"]  # trained on yes/no questions too, with the co-occurrence bias (docs/toy_model.md)
    assert yes_no["questions"] == 12 * quality["images"]
    assert yes_no["present_accuracy"] >= 0.8 and yes_no["absent_accuracy"] >= 0.8
    assert yes_no["biased_questions"] >= 20 and yes_no["biased_yes_rate"] >= 0.2
    size = sum(p.stat().st_size for p in SHIPPED_MODEL.glob("*.safetensors"))
    assert size <= 20 * 2**20


def test_shipped_checkpoint_knows_the_configured_vocabulary_and_captions_fresh_images(shipped_model):
    shapes = _base_params("shapes", "parameters_data_preparation.yml")
    toy = _base_params("toy_model", "parameters_toy_model.yml")
    val = generate_split(shapes.model_copy(update={"splits": shapes.splits.model_copy(update={"val": 40})}), "val")
    caps = [a["caption"] for a in sorted(val.captions["annotations"], key=lambda a: a["image_id"])]
    tok = shipped_model.processor.tokenizer
    unknown = [w for w in words_of(caps + [toy.caption_prompt]) if tok.convert_tokens_to_ids(w) == tok.unk_token_id]
    assert not unknown, f"retrain the embedded model: it does not know {unknown}"
    images = [val.images[k] for k in sorted(val.images)]
    quality = caption_quality(shipped_model, images, caps, toy.caption_prompt)
    assert quality["exact_match"] >= 0.85, quality["failures"]
