"""Adapter for the Qwen-VL family (Qwen2-VL, Qwen2.5-VL, Qwen3-VL): the embedded toy model and real checkpoints
share this code."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from eagle_pipelines.models.base import Answer

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class QwenVLAdapter:
    """Wraps a Qwen-VL ``...ForConditionalGeneration`` model and its processor behind ``VisionLanguageModel``."""

    family = "qwen_vl"

    def __init__(self, model, processor, name: str = "qwen_vl"):
        self.model = model.eval()
        self.processor = processor
        self.name = name

    # -- loading and saving ------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path: str | Path, dtype: str = "float32", device: str = "cpu",
                        device_map: str | None = None, name: str | None = None) -> QwenVLAdapter:
        """Loads model and processor from a local folder (never downloads)."""
        from transformers import AutoModelForImageTextToText

        from eagle_pipelines.models.processing import load_qwen_vl_processor

        processor = load_qwen_vl_processor(path)
        kwargs = {"local_files_only": True, "dtype": DTYPES[dtype]}
        if device_map:
            kwargs["device_map"] = device_map
        model = AutoModelForImageTextToText.from_pretrained(path, **kwargs)
        if not device_map:
            model = model.to(device)
        return cls(model, processor, name=name or Path(path).name)

    def save(self, path: str | Path) -> None:
        Path(path).mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(path)
        self.processor.save_pretrained(path)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # -- inputs ------------------------------------------------------------------------------------------------
    def chat_prompt(self, prompt: str) -> str:
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
        return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def check_prompt(self, prompt: str) -> None:
        """Fails when a word-level tokenizer (the embedded model's) does not know a word of the prompt."""
        tok = self.processor.tokenizer
        if tok.unk_token_id is None:
            return
        unknown = [w for w in prompt.replace("?", " ?").replace(".", " .").replace(",", " ,").split()
                   if tok.convert_tokens_to_ids(w) == tok.unk_token_id]
        if unknown:
            raise ValueError(f"The model '{self.name}' does not know the words {unknown} of the prompt "
                             f"{prompt!r}; use its training prompts, or retrain it (kedro run --pipeline=toy_model).")

    def encode(self, images: list[np.ndarray], prompt: str) -> dict[str, torch.Tensor]:
        self.check_prompt(prompt)
        text = self.chat_prompt(prompt)
        tok = self.processor.tokenizer
        old_side, tok.padding_side = tok.padding_side, "left"
        try:
            enc = self.processor(images=list(images), text=[text] * len(images), padding=True, return_tensors="pt")
        finally:
            tok.padding_side = old_side
        return {k: v.to(self.device) for k, v in enc.items()}

    def vision_token_ids(self) -> list[int]:
        """Placeholder tokens of images and videos: never generated as part of an answer."""
        tok = self.processor.tokenizer
        names = ["<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>"]
        ids = [tok.convert_tokens_to_ids(n) for n in names]
        return [i for i in ids if i is not None and i != tok.unk_token_id]

    # -- generation --------------------------------------------------------------------------------------------
    def generate(self, image: np.ndarray, prompt: str, max_new_tokens: int = 32) -> Answer:
        return self.generate_batch([image], prompt, max_new_tokens=max_new_tokens)[0]

    @torch.no_grad()
    def generate_batch(self, images: list[np.ndarray], prompt: str, max_new_tokens: int = 32) -> list[Answer]:
        """Greedy answers for a batch of images sharing one prompt, with each chosen token's probability."""
        enc = self.encode(images, prompt)
        out = self.model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                  suppress_tokens=self.vision_token_ids(), output_logits=True,
                                  return_dict_in_generate=True)
        new = out.sequences[:, enc["input_ids"].shape[1]:]
        # probabilities of the raw next-token distribution, as teacher-forced scoring computes them
        probs = torch.stack([torch.softmax(s.float(), dim=-1) for s in out.logits], dim=1)  # (B, steps, V)
        tok = self.processor.tokenizer
        eos = self.model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos])
        answers = []
        for b in range(new.shape[0]):
            ids, p, finished = [], [], False
            for step, t in enumerate(new[b].tolist()):
                if t in eos_ids:
                    finished = True
                    break
                ids.append(t)
                p.append(float(probs[b, step, t]))
            answers.append(Answer(
                prompt=prompt, token_ids=tuple(ids), tokens=tuple(tok.convert_ids_to_tokens(ids)),
                text=tok.decode(ids, skip_special_tokens=True), token_probs=tuple(p), finished=finished,
            ))
        return answers
