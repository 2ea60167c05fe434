"""Offline processors for the Qwen-VL family.

Two problems are solved here:

* The embedded model needs a tokenizer and processor built without any download: a word-level tokenizer over the
  dataset's vocabulary (``tokenizers`` library) with the Qwen2.5-VL special tokens, the Qwen2-VL image processor
  constructed directly, and the Qwen2.5-VL chat template.
* Without torchvision (the CPU torch wheel these machines carry), transformers cannot build the stock
  ``Qwen2_5_VLProcessor`` (its video processor needs torchvision) and ``AutoProcessor`` may silently return only
  the tokenizer. ``ImageTextQwenVLProcessor`` is the same processor without the video part: transformers derives
  the sub-processor list from the ``__init__`` signature, so it builds, saves and loads both our folders and
  Hub-style checkpoint folders.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
from transformers import InternVLProcessor, PreTrainedTokenizerFast, Qwen2_5_VLProcessor

# Tokens of the Qwen2.5-VL chat format, in the order the real tokenizer numbers them after its vocabulary.
SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|image_pad|>", "<|video_pad|>",
]
UNK_TOKEN = "<unk>"

# The Qwen2.5-VL chat template (system prompt by default, images as <|vision_start|><|image_pad|><|vision_end|>).
QWEN2_5_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SYSTEM_PROMPT_WORDS = "system You are a helpful assistant . user assistant"
_WORD = re.compile(r"\w+|[^\w\s]")


def image_chat_prompt(processor, prompt: str) -> str:
    """The chat-formatted text of one user turn holding an image and `prompt`, ready for the answer."""
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def words_of(texts: Iterable[str]) -> list[str]:
    """The word-level tokens of texts, as the tokenizer splits them (words and single punctuation marks)."""
    seen: dict[str, None] = {}
    for text in texts:
        for w in _WORD.findall(text):
            seen.setdefault(w, None)
    return list(seen)


def build_word_tokenizer(texts: Iterable[str]) -> PreTrainedTokenizerFast:
    """A word-level fast tokenizer over the words of `texts` plus the chat template's words, with the Qwen2.5-VL
    special tokens numbered after them (``word_tokenizer``).

    Decoding joins words with spaces and glues punctuation back (``"circle , a"`` -> ``"circle, a"``), so
    captions and questions round-trip exactly.
    """
    return word_tokenizer([SYSTEM_PROMPT_WORDS, *texts], SPECIAL_TOKENS, pad_token="<|endoftext|>",
                          eos_token="<|im_end|>", model_max_length=512)


class ImageTextQwenVLProcessor(Qwen2_5_VLProcessor):
    """``Qwen2_5_VLProcessor`` for images and text only (no video processor, so no torchvision needed)."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        kwargs.pop("video_processor", None)
        super().__init__(image_processor=image_processor, tokenizer=tokenizer, video_processor=None,
                         chat_template=chat_template, **kwargs)


def build_image_processor(image_size: int, patch_size: int = 14, merge_size: int = 2, temporal_patch_size: int = 2):
    """The Qwen2-VL image processor, built directly: square `image_size` images (a multiple of patch × merge) pass
    unchanged; other sizes are smart-resized to at most `image_size`² and at least 4 merged patches ((2 · patch ·
    merge)², 56² for the embedded model) pixels. Pixel bounds that differ keep the smart resize idempotent for
    non-square images (with min_pixels == max_pixels a 480×640 photo would be resized to 84×112, and that again
    to 112×140)."""
    from transformers import Qwen2VLImageProcessor

    max_pixels = image_size * image_size
    min_pixels = min((2 * patch_size * merge_size) ** 2, max_pixels)
    return Qwen2VLImageProcessor(
        min_pixels=min_pixels, max_pixels=max_pixels, patch_size=patch_size, merge_size=merge_size,
        temporal_patch_size=temporal_patch_size,
    )


def build_processor(texts: Iterable[str], image_size: int, patch_size: int = 14,
                    merge_size: int = 2) -> ImageTextQwenVLProcessor:
    """Assembles the embedded model's processor offline from the dataset's texts."""
    return ImageTextQwenVLProcessor(
        image_processor=build_image_processor(image_size, patch_size, merge_size),
        tokenizer=build_word_tokenizer(texts),
        chat_template=QWEN2_5_VL_CHAT_TEMPLATE,
    )


def load_qwen_vl_processor(path: str | Path):
    """Loads a Qwen-VL processor from a local folder, never downloading (``load_image_text_processor``: the stock
    ``AutoProcessor`` where it works, torchvision installed; otherwise ``ImageTextQwenVLProcessor``)."""
    return load_image_text_processor(path, ImageTextQwenVLProcessor)


# -- other families (models/llava.py, models/internvl.py) and tiny test processors --------------------------------
def word_tokenizer(words: Iterable[str], special_tokens: Iterable[str], unk_token: str = UNK_TOKEN,
                   extra_special_tokens: dict[str, str] | None = None, model_max_length: int = 1024,
                   **named_tokens: str) -> PreTrainedTokenizerFast:
    """A word-level fast tokenizer over `words` (split like ``build_word_tokenizer``) with `special_tokens`
    numbered after them, for tiny offline processors of any family (tests, docs/models.md).

    `named_tokens` are the tokenizer's ``bos_token``, ``eos_token``, ``pad_token``...; `extra_special_tokens`
    the model-specific named tokens a processor reads (InternVL: ``start_image_token``, ``context_image_token``...).
    """
    special = list(dict.fromkeys([unk_token, *special_tokens]))
    vocab = {unk_token: 0}
    for w in words_of(words):
        if w not in special:
            vocab.setdefault(w, len(vocab))
    for tok in special:
        vocab.setdefault(tok, len(vocab))
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=unk_token))
    backend.normalizer = normalizers.NFKC()
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation(behavior="isolated")]
    )
    backend.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    backend.add_special_tokens(special)
    if extra_special_tokens is not None:
        named_tokens["extra_special_tokens"] = extra_special_tokens
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token=unk_token,
                                        model_max_length=model_max_length, clean_up_tokenization_spaces=False,
                                        **named_tokens)
    tokenizer.padding_side = "left"
    return tokenizer


class ImageTextInternVLProcessor(InternVLProcessor):
    """``InternVLProcessor`` for images and text only (no video processor, so no torchvision needed)."""

    def __init__(self, image_processor=None, tokenizer=None, image_seq_length: int = 256, chat_template=None,
                 **kwargs):
        kwargs.pop("video_processor", None)
        super().__init__(image_processor=image_processor, tokenizer=tokenizer, video_processor=None,
                         image_seq_length=image_seq_length, chat_template=chat_template, **kwargs)


def load_image_text_processor(path: str | Path, fallback_class):
    """Loads a processor from a local folder, never downloading: the stock ``AutoProcessor`` where it builds a
    processor with an image processor and a tokenizer (torchvision installed, or a family without videos);
    otherwise `fallback_class` (an image+text subclass of the family's processor) loads the same folder."""
    from transformers import AutoProcessor

    try:
        processor = AutoProcessor.from_pretrained(path, local_files_only=True)
        if hasattr(processor, "image_processor") and hasattr(processor, "tokenizer"):
            return processor
    except Exception:  # noqa: BLE001 - fall through to the torchvision-free path, which raises a clear error
        pass
    if fallback_class is None:
        raise ValueError(f"No image+text processor could be loaded from '{path}'")
    return fallback_class.from_pretrained(path, local_files_only=True)
