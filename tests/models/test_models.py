"""The offline processor, the tiny Qwen2.5-VL, the model catalog dataset and generation."""

from __future__ import annotations


import numpy as np
import pytest
import torch
from kedro.io.core import DatasetError

from eagle_pipelines.io import VisionLanguageModelDataset
from eagle_pipelines.models.processing import ImageTextQwenVLProcessor, load_qwen_vl_processor
from eagle_pipelines.models.qwen_vl import QwenVLAdapter

from tests.conftest import SHIPPED_MODEL


def test_text_round_trips_through_the_word_tokenizer(tiny_processor, eval_split):
    tok = tiny_processor.tokenizer
    texts = [a["caption"] for a in eval_split.captions["annotations"]]
    texts += ["Is there a red circle in the image?", "Describe the image.", "Yes", "No"]
    for text in texts:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.unk_token_id not in ids
        assert tok.decode(ids) == text
    assert tok("a purple circle", add_special_tokens=False)["input_ids"][1] == tok.unk_token_id


def test_chat_prompt_has_the_qwen_format_and_16_image_tokens(tiny_processor):
    adapter = QwenVLAdapter(torch.nn.Linear(1, 1), tiny_processor)
    text = adapter.chat_prompt("Describe the image.")
    assert text == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                    "<|vision_start|><|image_pad|><|vision_end|>Describe the image.<|im_end|>\n"
                    "<|im_start|>assistant\n")
    enc = adapter.encode([np.zeros((112, 112, 3), np.uint8)], "Describe the image.")
    image_pad = tiny_processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert int((enc["input_ids"] == image_pad).sum()) == 16
    assert tuple(enc["pixel_values"].shape) == (64, 3 * 2 * 14 * 14)
    assert enc["mm_token_type_ids"].sum() == 16
    with pytest.raises(ValueError, match="purple"):
        adapter.encode([np.zeros((112, 112, 3), np.uint8)], "Is there a purple circle?")


def _encodings_equal(a, b, image, text):
    ea, eb = a(images=[image], text=[text], return_tensors="pt"), b(images=[image], text=[text], return_tensors="pt")
    assert ea.keys() == eb.keys()
    return all(torch.equal(ea[k], eb[k]) for k in ea)


def test_processor_save_load_and_hub_style_folder(tiny_processor, eval_split, tmp_path):
    image = next(iter(eval_split.images.values()))
    text = QwenVLAdapter(torch.nn.Linear(1, 1), tiny_processor).chat_prompt("Describe the image.")
    tiny_processor.save_pretrained(tmp_path / "ours")
    loaded = load_qwen_vl_processor(tmp_path / "ours")
    assert _encodings_equal(tiny_processor, loaded, image, text)
    # a Hub-style checkpoint folder: preprocessor_config.json + tokenizer files + chat template, no processor file
    hub = tmp_path / "hub"
    tiny_processor.image_processor.save_pretrained(hub)
    tiny_processor.tokenizer.save_pretrained(hub)
    (hub / "chat_template.jinja").write_text(tiny_processor.chat_template)
    assert not (hub / "processor_config.json").exists()
    from_hub = load_qwen_vl_processor(hub)
    assert isinstance(from_hub, ImageTextQwenVLProcessor)
    assert _encodings_equal(tiny_processor, from_hub, image, text)


def test_model_save_load_gives_identical_logits(tiny_model, tiny_processor, eval_split, tmp_path):
    adapter = QwenVLAdapter(tiny_model, tiny_processor, name="tiny")
    dataset = VisionLanguageModelDataset(path=str(tmp_path / "tiny"))
    assert not dataset.exists()
    dataset.save(adapter)
    assert dataset.exists()
    loaded = dataset.load()
    assert type(loaded.model) is type(tiny_model)
    images = list(eval_split.images.values())[:3]
    enc = adapter.encode(images, "Describe the image.")
    with torch.no_grad():
        before = tiny_model(**enc).logits
        after = loaded.model(**loaded.encode(images, "Describe the image.")).logits
    assert torch.equal(before, after)


def test_missing_checkpoint_names_the_path_and_the_fix(tmp_path):
    dataset = VisionLanguageModelDataset(path=str(tmp_path / "nowhere"), missing_hint="Run the toy_model pipeline.")
    with pytest.raises(DatasetError, match=r"nowhere.*Run the toy_model pipeline"):
        dataset.load()
    hub_id = VisionLanguageModelDataset(hub_id="Qwen/Not-In-Cache-VL")
    with pytest.raises(DatasetError, match="not in the local Hugging Face cache.*nothing is downloaded"):
        hub_id.load()


def test_generate_reports_greedy_tokens_and_their_probabilities(tiny_model, tiny_processor, eval_split):
    adapter = QwenVLAdapter(tiny_model, tiny_processor)
    images = list(eval_split.images.values())[:2]
    answers = adapter.generate_batch(images, "Describe the image.", max_new_tokens=5)
    enc = adapter.encode(images[:1], "Describe the image.")
    ids = enc["input_ids"]
    first = answers[0]
    assert len(first.token_ids) == len(first.token_probs) <= 5
    # each chosen token is the argmax of the next-token distribution, and its probability is reported
    for step, token in enumerate(first.token_ids):
        with torch.no_grad():
            logits = tiny_model(input_ids=ids, attention_mask=torch.ones_like(ids),
                                pixel_values=enc["pixel_values"], image_grid_thw=enc["image_grid_thw"],
                                mm_token_type_ids=torch.cat([enc["mm_token_type_ids"],
                                                             torch.zeros(1, ids.shape[1] - enc["input_ids"].shape[1],
                                                                         dtype=torch.long)], dim=1)).logits[0, -1]
        probs = torch.softmax(logits.float(), -1)
        allowed = probs.clone()
        allowed[adapter.vision_token_ids()] = -1
        assert int(allowed.argmax()) == token
        assert abs(float(probs[token]) - first.token_probs[step]) < 1e-5
        ids = torch.cat([ids, torch.tensor([[token]])], dim=1)


def test_the_built_and_shipped_processors_keep_square_images_and_resize_others_once(tiny_processor, shapes_params):
    from eagle_pipelines.models.processing import build_image_processor

    built = build_image_processor(shapes_params.image_size)
    shipped = load_qwen_vl_processor(SHIPPED_MODEL).image_processor
    side = shapes_params.image_size
    for ip in (built, tiny_processor.image_processor, shipped):
        assert (ip.size["shortest_edge"], ip.size["longest_edge"]) == (56 * 56, side * side)
    adapter = QwenVLAdapter(torch.nn.Linear(1, 1), load_qwen_vl_processor(SHIPPED_MODEL))
    square = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
    assert np.array_equal(adapter.model_image(square), square)  # the shipped model's images are unchanged
    assert tuple(adapter.encode([square], "Describe the image.")["image_grid_thw"][0].tolist()) == (1, 8, 8)
    # every size reaches one the processor keeps: the processor never resizes a model_image output again
    for hw in [(480, 640), (640, 480), (300, 301), (64, 64), (10, 10), (28, 2000), (1000, 30), (111, 113)]:
        th, tw = adapter.model_size(*hw)
        assert th % 28 == tw % 28 == 0 and 56 * 56 <= th * tw <= side * side
        assert adapter._smart_resize(th, tw) == (th, tw)
    assert adapter.model_size(480, 640) == (84, 112)


def test_pixel_bounds_without_a_kept_size_fail_clearly(tiny_processor):
    import copy

    processor = copy.deepcopy(tiny_processor)
    processor.image_processor.size["shortest_edge"] = processor.image_processor.size["longest_edge"]
    adapter = QwenVLAdapter(torch.nn.Linear(1, 1), processor)
    with pytest.raises(ValueError, match=r"no size it keeps for a 480x640 image.*84x112 -> 112x140.*min_pixels"):
        adapter.model_image(np.zeros((480, 640, 3), np.uint8))


def test_a_480x640_photo_through_the_shipped_model(shipped_model):
    adapter = shipped_model
    rng = np.random.default_rng(1)
    photo = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    photo[100:300, 150:400] = (220, 40, 40)
    image = adapter.model_image(photo)
    assert image.shape == (84, 112, 3) and image.dtype == np.uint8
    enc = adapter.encode([image], "Describe the image.")
    assert tuple(enc["image_grid_thw"][0].tolist()) == (1, 6, 8)  # not resized again by the processor
    assert tuple(enc["pixel_values"].shape) == (48, 3 * 2 * 14 * 14)
    answer = adapter.generate(image, "Describe the image.", max_new_tokens=8)
    assert answer.token_ids and len(answer.token_probs) == len(answer.token_ids)
    targets = list(range(len(answer.token_ids)))
    composed = adapter.scorer(image, "Describe the image.", answer.token_ids, targets, compose="pixel_values")
    reference = adapter.scorer(image, "Describe the image.", answer.token_ids, targets, compose="processor")
    masks = rng.random((4, 84, 112)) < 0.5
    masks[0] = True
    torch.testing.assert_close(composed.pixel_values(masks), reference.pixel_values(masks), rtol=0, atol=1e-6)
    probs = composed(masks)
    np.testing.assert_allclose(probs, reference(masks), atol=1e-6)
    np.testing.assert_allclose(probs[0], answer.token_probs, atol=1e-5)  # the intact image: what generate reported
    assert adapter.teacher_forced(image, "Describe the image.", answer.token_ids).image_grid == (3, 4)
    # an image not at model resolution is named, not a tensor-size mismatch deep in the model
    with pytest.raises(ValueError, match=r"480x640 image is not at the model's resolution.*84x112.*model_image"):
        adapter.scorer(photo, "Describe the image.", answer.token_ids, targets)
