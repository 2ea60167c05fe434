"""The model families on tiny random-weight configs of the real transformers classes, each with a processor assembled
offline, saved to a folder and loaded back through ``VisionLanguageModelDataset`` (the path real checkpoints take).

For every family: teacher-forced positions line up with the image tokens (the scorer's probability of each answer
token on the intact image equals the one ``generate`` reported), batched scoring equals unbatched, the masked
``pixel_values`` path equals re-running the processor, a full greedy search through ``api.explain`` completes,
and the differentiable teacher-forced pass of ``ModelInternals`` reproduces the scorer.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from kedro.io.core import DatasetError

from eagle_pipelines.io import VisionLanguageModelDataset
from eagle_pipelines.models.processing import (
    QWEN2_5_VL_CHAT_TEMPLATE,
    ImageTextInternVLProcessor,
    ImageTextQwenVLProcessor,
    build_word_tokenizer,
    word_tokenizer,
)

PROMPT = "Describe the image."
WORDS = ["a red circle and a blue square on the left", PROMPT, "USER ASSISTANT : system user assistant"]

LLAVA_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': ' }}{% endif %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' ' }}"
    "{% endfor %}{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)
INTERNVL_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' }}{% if message['content'] is string %}"
    "{{ message['content'] }}{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' %}"
    "{{ '<IMG_CONTEXT>\n' }}{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}"
    "{% endif %}{{ '<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
    "{% endif %}"
)
TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
            max_position_embeddings=512)


def _generation(model, tok, eos: str):
    model.generation_config.eos_token_id = tok.convert_tokens_to_ids(eos)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.do_sample = False
    return model


def _qwen_ids(tok) -> dict:
    ids = tok.convert_tokens_to_ids
    return dict(image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
                vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"))


def _qwen_text(tok, **extra) -> dict:
    ids = tok.convert_tokens_to_ids
    return dict(TEXT, vocab_size=len(tok), pad_token_id=tok.pad_token_id, bos_token_id=ids("<|im_start|>"),
                eos_token_id=ids("<|im_end|>"), **extra)


def _qwen_processor(side: int, patch: int, **image_kwargs):
    from transformers import Qwen2VLImageProcessor

    ip = Qwen2VLImageProcessor(min_pixels=side * side, max_pixels=side * side, patch_size=patch, merge_size=2,
                               temporal_patch_size=2, **image_kwargs)
    return ImageTextQwenVLProcessor(image_processor=ip, tokenizer=build_word_tokenizer(WORDS),
                                    chat_template=QWEN2_5_VL_CHAT_TEMPLATE)


def tiny_qwen2_vl():
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    processor = _qwen_processor(56, 14)
    tok = processor.tokenizer
    config = Qwen2VLConfig(
        vision_config=dict(depth=1, embed_dim=32, hidden_size=32, num_heads=2, mlp_ratio=2, patch_size=14),
        text_config=_qwen_text(tok, rope_parameters={"rope_type": "default", "rope_theta": 1e4,
                                                     "mrope_section": [4, 2, 2]}),
        **_qwen_ids(tok))
    torch.manual_seed(0)
    return _generation(Qwen2VLForConditionalGeneration(config), tok, "<|im_end|>"), processor


def tiny_qwen2_5_vl():
    from eagle_pipelines.models.processing import build_processor
    from eagle_pipelines.models.toy import ToyArchitecture, build_toy_model

    processor = build_processor(WORDS, 56)
    arch = ToyArchitecture(vision_depth=1, vision_hidden=32, vision_intermediate=64, vision_heads=2, text_layers=1,
                           text_hidden=32, text_intermediate=64, text_heads=2, text_kv_heads=1)
    return build_toy_model(processor, arch, seed=0), processor


def tiny_qwen3_vl():
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    processor = _qwen_processor(64, 16, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    tok = processor.tokenizer
    config = Qwen3VLConfig(
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=16,
                           out_hidden_size=32, num_position_embeddings=16, deepstack_visual_indexes=[0]),
        text_config=_qwen_text(tok, head_dim=16, rope_parameters={"rope_type": "default", "rope_theta": 1e4,
                                                                  "mrope_section": [4, 2, 2],
                                                                  "mrope_interleaved": True}),
        **_qwen_ids(tok))
    torch.manual_seed(0)
    return _generation(Qwen3VLForConditionalGeneration(config), tok, "<|im_end|>"), processor


def tiny_llava(words: list[str] = WORDS, **text):
    """LLaVA-1.5's layout at 28×28: CLIP resize + centre crop, 7-pixel patches, CLS dropped, layer -2. `words`: what
    the word-level tokenizer knows; `text`: the language model's settings over TEXT (tests/paper_fixture.py's
    checkpoints: the paper model's depth)."""
    from transformers import CLIPImageProcessor, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    tok = word_tokenizer(words, ["<s>", "</s>", "<pad>", "<image>"], bos_token="<s>", eos_token="</s>",
                         pad_token="<pad>", extra_special_tokens={"image_token": "<image>"})
    ip = CLIPImageProcessor(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28})
    processor = LlavaProcessor(image_processor=ip, tokenizer=tok, patch_size=7,
                               vision_feature_select_strategy="default",
                               num_additional_image_tokens=1, chat_template=LLAVA_TEMPLATE)
    config = LlavaConfig(
        vision_config=dict(model_type="clip_vision_model", image_size=28, patch_size=7, hidden_size=32,
                           intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, projection_dim=32),
        text_config={**TEXT, "model_type": "llama", "vocab_size": len(tok), "pad_token_id": tok.pad_token_id,
                     "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id, **text},
        image_token_id=tok.convert_tokens_to_ids("<image>"), vision_feature_select_strategy="default",
        vision_feature_layer=-2, image_seq_length=16, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    return _generation(LlavaForConditionalGeneration(config), tok, "</s>"), processor


def tiny_internvl(words: list[str] = WORDS, **text):
    """InternVL's layout at one 32×32 tile: 8-pixel patches, pixel shuffle 0.5 -> 4 image tokens. `words` and `text`
    as tiny_llava's (``tie_word_embeddings`` there unties, or ties, the whole model's output head too)."""
    from transformers import GotOcr2ImageProcessor, InternVLConfig, InternVLForConditionalGeneration

    image_tokens = {"start_image_token": "<img>", "end_image_token": "</img>", "context_image_token": "<IMG_CONTEXT>",
                    "video_token": "<video>"}
    tok = word_tokenizer(words, ["<|endoftext|>", "<|im_start|>", "<|im_end|>", *image_tokens.values()],
                         eos_token="<|im_end|>", pad_token="<|endoftext|>", extra_special_tokens=image_tokens)
    ip = GotOcr2ImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.485, 0.456, 0.406],
                               image_std=[0.229, 0.224, 0.225], crop_to_patches=True, max_patches=12)
    processor = ImageTextInternVLProcessor(image_processor=ip, tokenizer=tok, image_seq_length=4,
                                           chat_template=INTERNVL_TEMPLATE)
    config = InternVLConfig(
        vision_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                           image_size=32, patch_size=8),
        text_config={**TEXT, "model_type": "qwen2", "vocab_size": len(tok), "pad_token_id": tok.pad_token_id,
                     "eos_token_id": tok.eos_token_id, **text},
        image_token_id=tok.convert_tokens_to_ids("<IMG_CONTEXT>"), image_seq_length=4, downsample_ratio=0.5,
        **{k: text[k] for k in ("tie_word_embeddings",) if k in text})
    torch.manual_seed(0)
    return _generation(InternVLForConditionalGeneration(config), tok, "<|im_end|>"), processor


BUILDERS = {"qwen2_vl": tiny_qwen2_vl, "qwen2_5_vl": tiny_qwen2_5_vl, "qwen3_vl": tiny_qwen3_vl,
            "llava": tiny_llava, "internvl": tiny_internvl}
#: test cases: the checkpoint and the adapter options it is loaded with (InternVL also with dynamic tiling)
CASES = {**{name: (name, {}) for name in BUILDERS}, "internvl_tiles": ("internvl", {"max_tiles": 4})}
#: the photo each case is given (LLaVA and InternVL resize it to what they see)
IMAGE_SHAPES = {"qwen2_vl": (56, 56), "qwen2_5_vl": (56, 56), "qwen3_vl": (64, 64), "llava": (40, 30),
                "internvl": (40, 30), "internvl_tiles": (40, 30)}
EXPECTED_FAMILY = {"qwen2_vl": "qwen_vl", "qwen2_5_vl": "qwen_vl", "qwen3_vl": "qwen_vl", "llava": "llava",
                   "internvl": "internvl", "internvl_tiles": "internvl"}


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory):
    """Each tiny model saved as a checkpoint folder (model, processor, chat template, generation config)."""
    folders = {}
    for name, build in BUILDERS.items():
        model, processor = build()
        folder = tmp_path_factory.mktemp(name)
        model.save_pretrained(folder)
        processor.save_pretrained(folder)
        folders[name] = folder
    return folders


@pytest.fixture(scope="session")
def adapters(checkpoints):
    """The checkpoints loaded back through the catalog dataset, family picked from config.json."""
    return {case: VisionLanguageModelDataset(path=str(checkpoints[name]), family="auto", options=options).load()
            for case, (name, options) in CASES.items()}


@pytest.fixture(scope="session")
def cases(adapters):
    """Per family: the adapter, a model-resolution image, its answer (4 tokens) and a few random masks."""
    rng = np.random.default_rng(0)
    out = {}
    for name, adapter in adapters.items():
        h, w = IMAGE_SHAPES[name]
        image = adapter.model_image((rng.random((h, w, 3)) * 255).astype(np.uint8))
        answer = adapter.generate(image, PROMPT, max_new_tokens=4)
        masks = rng.random((5, *image.shape[:2])) < 0.5
        out[name] = (adapter, image, answer, masks)
    return out


FAMILY_NAMES = list(CASES)


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_loaded_through_the_dataset_with_its_family(name, adapters, checkpoints):
    adapter = adapters[name]
    assert adapter.family == EXPECTED_FAMILY[name]
    # the loaded weights are the saved ones: same logits as a fresh build of the same seed
    model, _ = BUILDERS[CASES[name][0]]()
    for (key, saved), fresh in zip(adapter.model.state_dict().items(), model.state_dict().values()):
        assert torch.equal(saved, fresh), key
    json.dumps(adapter.resolution_spec(), default=str)  # usable as a cache key


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_teacher_forced_positions_line_up_with_generate(name, cases):
    adapter, image, answer, _ = cases[name]
    assert len(answer.token_ids) >= 2, answer
    image_token = adapter.model.config.image_token_id
    enc = adapter.encode([image], PROMPT)
    assert int((enc["input_ids"] == image_token).sum()) > 0
    scorer = adapter.scorer(image, PROMPT, answer.token_ids, list(range(len(answer.token_ids))),
                            memory_budget_mb=0)
    full = scorer(np.ones((1, *image.shape[:2]), dtype=bool))[0]
    np.testing.assert_allclose(full, answer.token_probs, atol=1e-5)
    # and the black image changes them (the image tokens are really read at those positions)
    black = scorer(np.zeros((1, *image.shape[:2]), dtype=bool))[0]
    assert np.abs(black - full).max() > 1e-4


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_batched_equals_unbatched(name, cases):
    adapter, image, answer, masks = cases[name]
    targets = list(range(len(answer.token_ids)))
    batched = adapter.scorer(image, PROMPT, answer.token_ids, targets, batch_size=5, memory_budget_mb=0)(masks)
    single = adapter.scorer(image, PROMPT, answer.token_ids, targets, batch_size=1)(masks)
    assert batched.shape == (5, len(targets))
    np.testing.assert_allclose(batched, single, atol=1e-5)
    assert np.ptp(batched, axis=0).max() > 1e-5  # the masks matter


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_masked_pixel_values_equal_the_processor_path(name, cases):
    adapter, image, answer, masks = cases[name]
    targets = [len(answer.token_ids) - 1]
    composed = adapter.scorer(image, PROMPT, answer.token_ids, targets, compose="pixel_values", memory_budget_mb=0)
    reference = adapter.scorer(image, PROMPT, answer.token_ids, targets, compose="processor", memory_budget_mb=0)
    torch.testing.assert_close(composed.pixel_values(masks), reference.pixel_values(masks), rtol=0, atol=1e-6)
    np.testing.assert_allclose(composed(masks), reference(masks), atol=1e-6)


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_full_greedy_run_through_the_api(name, cases):
    from eagle_pipelines.api import explain

    adapter, image, answer, _ = cases[name]
    attribution = explain(adapter, image, PROMPT, strategy="greedy", n_regions=4, answer=answer, batch_size=8,
                          memory_budget_mb=0)
    n = len(np.unique(attribution.labels))
    assert sorted(attribution.order.tolist()) == list(range(n))
    assert attribution.forward_passes == n * (n + 1)
    np.testing.assert_allclose(attribution.full_score, answer.token_probs, atol=1e-5)
    assert attribution.insertion.shape == (n, len(answer.token_ids))


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_differentiable_pass_reproduces_the_scorer(name, cases):
    from eagle_pipelines.models.base import ModelInternals, TeacherForcedPass

    adapter, image, answer, masks = cases[name]
    assert isinstance(adapter, ModelInternals)
    if name == "internvl_tiles":  # the thumbnail is resampled: no exact differentiable composition
        with pytest.raises(ValueError, match="max_tiles=1"):
            adapter.teacher_forced(image, PROMPT, answer.token_ids)
        return
    tf = adapter.teacher_forced(image, PROMPT, answer.token_ids)
    assert isinstance(tf, TeacherForcedPass)
    h, w = tf.image_grid
    assert h * w == len(tf.image_positions) > 0
    assert (tf.input_ids[tf.image_positions] == adapter.model.config.image_token_id).all()
    images = torch.tensor(image[None] * masks[:2, ..., None], dtype=torch.float32, requires_grad=True)
    out = tf(images, hidden_states=True)
    ids = torch.tensor(answer.token_ids)
    probs = torch.softmax(out.logits.float(), -1).gather(-1, ids.expand(2, -1).unsqueeze(-1)).squeeze(-1)
    scorer = adapter.scorer(image, PROMPT, answer.token_ids, list(range(len(ids))), memory_budget_mb=0)
    np.testing.assert_allclose(probs.detach().numpy(), scorer(masks[:2]), atol=1e-5)
    # the head reproduces the logits from the last hidden state, and gradients reach the pixels
    last = out.hidden_states[-1][:, tf.answer_start - 1:tf.answer_start - 1 + len(ids)]
    torch.testing.assert_close(tf.head(last).float(), out.logits.float(), atol=1e-4, rtol=1e-4)
    probs[:, 0].sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0


def test_llava_and_internvl_see_the_image_the_processor_makes(cases):
    """LLaVA: resize of the shortest edge + centre crop; InternVL: one tile (dynamic tiling off)."""
    for name, side in (("llava", 28), ("internvl", 32)):
        adapter, image, _, _ = cases[name]
        assert image.shape == (side, side, 3)
        assert np.array_equal(adapter.model_image(image), image)  # the model image is a fixed point
        enc = adapter.encode([image], PROMPT)
        assert enc["pixel_values"].shape == (1, 3, side, side)


def test_internvl_tiles_are_crops_of_the_model_image_plus_a_thumbnail(cases):
    adapter, image, _, masks = cases["internvl_tiles"]
    assert image.shape == (64, 32, 3)  # 40x30 -> 1 column x 2 rows of 32x32 tiles
    enc = adapter.encode([image], PROMPT)
    assert enc["pixel_values"].shape == (3, 3, 32, 32)  # two tiles and the thumbnail
    assert int((enc["input_ids"] == adapter.model.config.image_token_id).sum()) == 3 * 4
    scorer = adapter.scorer(image, PROMPT, [1], [0], memory_budget_mb=0)
    assert len(scorer.index) == 2  # tiles from pixels, the thumbnail resampled per masked copy
    keep_top = np.zeros((1, 64, 32), dtype=bool)
    keep_top[:, :32] = True
    pv = scorer.pixel_values(keep_top)
    torch.testing.assert_close(pv[0], scorer.pv_full[0])  # top tile kept
    torch.testing.assert_close(pv[1], scorer.pv_black[1])  # bottom tile removed
    assert not torch.equal(pv[2], scorer.pv_full[2]) and not torch.equal(pv[2], scorer.pv_black[2])


def hub_layout(folder, processor_class: str):
    """The saved processor files of `folder` rewritten as the Hub's checkpoints have them (tests/paper_fixture.py
    saves its hub cache so too): preprocessor_config.json beside a processor_config.json holding only the
    processor's own keys, the stock processor class named everywhere, and (InternVL) a video processor config,
    which the stock processor cannot build without torchvision. Returns `folder`."""
    processor = json.loads((folder / "processor_config.json").read_text())
    image = processor.pop("image_processor")
    processor["processor_class"] = image["processor_class"] = processor_class
    (folder / "preprocessor_config.json").write_text(json.dumps(image))
    (folder / "processor_config.json").write_text(json.dumps(processor))
    tokenizer = json.loads((folder / "tokenizer_config.json").read_text())
    tokenizer["processor_class"] = processor_class
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer))
    if processor_class == "InternVLProcessor":
        (folder / "video_preprocessor_config.json").write_text(json.dumps(
            {"video_processor_type": "InternVLVideoProcessor", "processor_class": processor_class,
             "size": image["size"]}))
    return folder


@pytest.mark.parametrize("name, processor_class", [("llava", "LlavaProcessor"), ("internvl", "InternVLProcessor")])
def test_hub_layout_checkpoints_load_with_the_same_inputs(name, processor_class, checkpoints, cases, tmp_path):
    adapter, image, _, _ = cases[name]
    hub = hub_layout(shutil.copytree(checkpoints[name], tmp_path / "hub"), processor_class)
    loaded = VisionLanguageModelDataset(path=str(hub), family=name).load()
    assert loaded.chat_prompt(PROMPT) == adapter.chat_prompt(PROMPT)
    ours, theirs = adapter.encode([image], PROMPT), loaded.encode([image], PROMPT)
    assert ours.keys() == theirs.keys()
    for key in ours:
        torch.testing.assert_close(ours[key], theirs[key], rtol=0, atol=0)


def test_unknown_family_and_wrong_checkpoint_class_fail_clearly(checkpoints, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}))
    with pytest.raises(DatasetError, match=r"a gpt2 checkpoint \(GPT2LMHeadModel\), which no model family handles"):
        VisionLanguageModelDataset(path=str(tmp_path), family="auto").load()
    with pytest.raises(DatasetError, match=r"Unknown model family 'gpt'.*internvl.*llava.*qwen_vl"):
        VisionLanguageModelDataset(path=str(checkpoints["llava"]), family="gpt")
    with pytest.raises(DatasetError, match=r"a llava checkpoint.*not one of family 'internvl'.*use family 'llava'"):
        VisionLanguageModelDataset(path=str(checkpoints["llava"]), family="internvl").load()
    with pytest.raises(DatasetError, match=r"qwen3_vl checkpoint.*not one of family 'llava'.*use family 'qwen_vl'"):
        VisionLanguageModelDataset(path=str(checkpoints["qwen3_vl"]), family="llava").load()


def test_dtype_from_parameters(checkpoints):
    from eagle_pipelines.models.registry import resolve_dtype

    assert resolve_dtype("auto", "cpu") == torch.float32
    with pytest.raises(ValueError, match="dtype must be one of"):
        resolve_dtype("fp8")
    for name in ("internvl", "llava"):
        half = VisionLanguageModelDataset(path=str(checkpoints[name]), family="auto", dtype="bfloat16").load()
        assert half.model.dtype == torch.bfloat16
        image = half.model_image(np.full((*IMAGE_SHAPES[name], 3), 90, dtype=np.uint8))
        answer = half.generate(image, PROMPT, max_new_tokens=3)
        scorer = half.scorer(image, PROMPT, answer.token_ids, [0, 1], memory_budget_mb=0)
        np.testing.assert_allclose(scorer(np.ones((2, *image.shape[:2]), dtype=bool))[0], answer.token_probs[:2],
                                   atol=1e-2)  # bf16: the cached and the full pass round differently


@pytest.mark.parametrize("name", ["llava", "internvl", "qwen3_vl"])
def test_the_baselines_run_on_the_family(name, cases):
    """Every baseline runs on the family's differentiable pass; Captum's FeatureAblation through the family's
    module and inputs gives, per region, the log-probability drop that removing the region causes in the scorer."""
    from eagle_pipelines.core.baselines import run_baseline
    from eagle_pipelines.core.regions import slico

    adapter, image, answer, _ = cases[name]
    tf = adapter.teacher_forced(image, PROMPT, answer.token_ids)
    positions = [0, 1]
    labels = slico(image, n_segments=4).labels
    settings = {"llava_cam": {"samples": 2}, "igos_pp": {"iterations": 2, "ig_steps": 2}, "tam": {}, "captum": {}}
    for method, kwargs in settings.items():
        result = run_baseline(method, tf, positions, labels if method == "captum" else None, **kwargs)
        assert result.map.shape == image.shape[:2] and np.isfinite(result.map).all(), method
        # (Grad-CAM's ReLU may zero every one of a tiny random model's 4 image tokens: its map can be flat)
        assert method == "llava_cam" or np.ptp(result.map) > 0, method
    from eagle_pipelines.core.baselines.captum_ablation import region_attributions

    ids, values = region_attributions(tf, positions, labels)
    scorer = adapter.scorer(image, PROMPT, answer.token_ids, positions, memory_budget_mb=0)
    full = np.log(scorer(np.ones((1, *labels.shape), dtype=bool))[0])
    removed = np.log(scorer(np.stack([labels != r for r in ids])))
    np.testing.assert_allclose(values, (full - removed).sum(axis=1), atol=1e-4)


def test_llava_pad_to_square_processor_maps_masks_exactly(cases):
    """LLaVA checkpoints whose image processor pads to a square first (``do_pad``): the model image is the padded,
    resized crop, and masked pixel values still compose exactly."""
    from transformers import LlavaImageProcessor, LlavaProcessor

    from eagle_pipelines.models.llava import LlavaAdapter

    llava, _, answer, _ = cases["llava"]
    ip = LlavaImageProcessor(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28}, do_pad=True)
    processor = LlavaProcessor(image_processor=ip, tokenizer=llava.processor.tokenizer, patch_size=7,
                               vision_feature_select_strategy="default", num_additional_image_tokens=1,
                               chat_template=LLAVA_TEMPLATE)
    adapter = LlavaAdapter(llava.model, processor)
    photo = np.full((40, 20, 3), 255, dtype=np.uint8)
    image = adapter.model_image(photo)
    assert image.shape == (28, 28, 3)
    mean = np.array([int(m * 255) for m in ip.image_mean])
    assert np.abs(image[14, 0].astype(int) - mean).max() <= 1 and (image[14, 14] == 255).all()  # padded sides
    masks = np.random.default_rng(1).random((3, 28, 28)) < 0.5
    composed = adapter.scorer(image, PROMPT, answer.token_ids, [0], memory_budget_mb=0)
    reference = adapter.scorer(image, PROMPT, answer.token_ids, [0], compose="processor", memory_budget_mb=0)
    torch.testing.assert_close(composed.pixel_values(masks), reference.pixel_values(masks), rtol=0, atol=1e-6)


def test_device_map_places_the_weights(checkpoints, cases):
    """``device_map`` (accelerate) loads the same model; on this CPU-only machine everything lands on the CPU."""
    adapter, image, answer, _ = cases["llava"]
    placed = VisionLanguageModelDataset(path=str(checkpoints["llava"]), family="llava", device_map="auto").load()
    assert placed.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    again = placed.generate(image, PROMPT, max_new_tokens=4)
    assert again.token_ids == answer.token_ids
    np.testing.assert_allclose(again.token_probs, answer.token_probs, atol=1e-5)
