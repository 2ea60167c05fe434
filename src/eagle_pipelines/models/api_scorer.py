"""The TokenScorer of an API model: keep-masks -> probabilities of the target tokens, one request per masked
image (``prompt_logprobs``) or per target token (``top_logprobs``)."""

from __future__ import annotations

import functools
import logging

import numpy as np

from eagle_pipelines.models.api_client import ApiError
from eagle_pipelines.models.api_tokens import _prob, _validate_prompt_logprobs, _validate_top_logprobs
from eagle_pipelines.models.base import checked_targets

logger = logging.getLogger(__name__)


class ApiTokenScorer:
    """TokenScorer of an ``ApiModel``: (B, H, W) keep-masks -> (B, T) probabilities of the target tokens, with
    removed pixels black (zero), every masked image sent as a PNG.

    Counts what it did for the attribution's meta (``attribution_meta``): requests made (cached ones included)
    and sent, and in ``top_logprobs`` scoring how many target probabilities were missing from the top-k
    (taken as 0): the coverage."""

    def __init__(self, model, image: np.ndarray, prompt: str, answer_ids, target_positions,
                 batch_size: int = 32):
        answer_ids, self.target_positions = checked_targets(answer_ids, target_positions)
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.model, self.image, self.prompt, self.answer_ids = model, np.ascontiguousarray(image), prompt, answer_ids
        self.height, self.width = self.image.shape[:2]
        self.batch_size = int(batch_size)
        self.memory_plan: dict = {}
        self.device = model.device
        self.requests = self.sent = self.missing = self.scored = 0
        tok = model.processor.tokenizer
        self.answer_text = tok.decode(answer_ids)
        self.prefixes = {t: tok.decode(answer_ids[:t]) for t in self.target_positions}

    @property
    def requests_per_pass(self) -> int:
        return self.model.requests_per_pass(len(self.target_positions))

    def announce(self, passes: int, exact: bool, label: str = "") -> None:
        """Logs the requests the search will make (before it starts) and warns when they exceed what is left of
        the budget (cached answers cost nothing, so the run may still fit)."""
        n = passes * self.requests_per_pass
        client = self.model.client
        left = None if client.params.max_requests is None else client.params.max_requests - client.requests
        logger.info("%s%s%d API requests (%d masked images x %d), cached answers not sent%s", label,
                    "" if exact else "at least ", n, passes, self.requests_per_pass,
                    "" if left is None else f"; {left} left of max_requests={client.params.max_requests}")
        if left is not None and n > left:
            logger.warning("%sthe search may need %d requests, more than the %d left of max_requests: it stops "
                           "cleanly when the budget is spent", label, n, left)

    def attribution_meta(self) -> dict:
        """What an Attribution records about the endpoint's answers (its ``meta['api']``)."""
        coverage = 1.0 if self.scored == 0 else 1.0 - self.missing / self.scored
        return {"api": {"model": self.model.params.api_model, "server": self.model.server,
                        "scoring": self.model.scoring,
                        "top_logprobs": self.model.params.top_logprobs if self.model.scoring == "top_logprobs"
                        else None, "requests": self.requests, "sent": self.sent, "cached": self.requests - self.sent,
                        "scored": self.scored, "missing": self.missing, "coverage": coverage}}

    def _bodies(self, masked: np.ndarray) -> list[dict]:
        p = self.model.params
        user = self.model.user_message(masked, self.prompt)
        if self.model.scoring == "prompt_logprobs":
            return [{"model": p.api_model, "messages": [user, {"role": "assistant", "content": self.answer_text}],
                     "max_tokens": 1, "temperature": 0, "prompt_logprobs": 0, "add_generation_prompt": False}]
        bodies = []
        for t in self.target_positions:
            messages = [user]
            extra = {}
            if t > 0:
                messages.append({"role": "assistant", "content": self.prefixes[t]})
                extra = {"add_generation_prompt": False, "continue_final_message": True}
            bodies.append({"model": p.api_model, "messages": messages, "max_tokens": 1, "temperature": 0,
                           "logprobs": True, "top_logprobs": p.top_logprobs, **self.model._vllm(**extra)})
        return bodies

    def _prompt_logprobs(self, response: dict) -> np.ndarray:
        entries = response["prompt_logprobs"]
        ids, n = self.answer_ids, len(self.answer_ids)
        for start in range(len(entries) - n, -1, -1):  # the answer is the last match (the prompt comes first)
            if all(isinstance(entries[start + i], dict) and str(ids[i]) in entries[start + i] for i in range(n)):
                return np.array([_prob(entries[start + t][str(ids[t])]["logprob"])
                                 for t in self.target_positions])
        raise ApiError(f"the server tokenizes the answer {self.answer_text!r} into other tokens than {ids}: the "
                       f"answer cannot be teacher-forced exactly; use scoring 'top_logprobs' (docs/api.md)")

    def _top_logprob(self, response: dict, t: int) -> float:
        target = self.answer_ids[t]
        top = response["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
        text = None if self.model.server == "vllm" else self.model.processor.tokenizer.text_of(target)
        for entry in top:
            token = entry.get("token")
            if self.model.server == "vllm":
                hit = token == f"token_id:{target}"
            else:  # the reference also accepts the token without its leading space
                hit = token == text or (isinstance(token, str) and token == text.lstrip())
            if hit:
                return _prob(entry["logprob"])
        self.missing += 1
        return 0.0

    def __call__(self, keep_masks: np.ndarray) -> np.ndarray:
        """(B, T) probabilities of the target tokens for (B, H, W) keep-masks."""
        keep_masks = np.asarray(keep_masks, dtype=bool)
        if keep_masks.ndim != 3 or keep_masks.shape[1:] != (self.height, self.width):
            raise ValueError(f"masks are {keep_masks.shape[1:]}, the model image is {(self.height, self.width)}")
        per = self.requests_per_pass
        validate = functools.partial(
            _validate_prompt_logprobs if self.model.scoring == "prompt_logprobs" else _validate_top_logprobs,
            server=self.model.server, vocab=self.model.params.vocab_size)
        out = np.zeros((len(keep_masks), len(self.target_positions)))
        for lo in range(0, len(keep_masks), self.batch_size):
            chunk = keep_masks[lo:lo + self.batch_size]
            bodies = [b for m in chunk for b in self._bodies(self.image * m[..., None].astype(self.image.dtype))]
            answers = self.model.client.request_many("chat", bodies, validate=validate)
            self.requests += len(answers)
            self.sent += sum(not cached for _, cached in answers)
            for k in range(len(chunk)):
                mine = answers[k * per:(k + 1) * per]
                if self.model.scoring == "prompt_logprobs":
                    out[lo + k] = self._prompt_logprobs(mine[0][0])
                else:
                    out[lo + k] = [self._top_logprob(r, t) for (r, _), t in zip(mine, self.target_positions)]
                    self.scored += len(self.target_positions)
        if self.model.scoring == "prompt_logprobs":
            self.scored += out.size
        return out
