"""Explaining a model behind an OpenAI-compatible chat-completions endpoint (docs/api.md).

    from eagle_pipelines import explain, load_model
    vlm = load_model(api_base="http://127.0.0.1:8000/v1", api_model="toy_qwen2_5_vl")   # a vLLM server
    vlm = load_model(api_base="https://api.openai.com/v1", api_model="gpt-4.1-mini")    # key: OPENAI_API_KEY

``ApiModel`` has the interface of the local adapters (``generate``/``generate_batch``, ``scorer``, ``model_image``,
``name``/``fingerprint``), so ``explain``, ``eagle-explain --api-base URL --api-model NAME`` and the pipelines
(``kedro run --pipeline=eagle_coco --env=api``) run on it unchanged. Masked images travel as base64 PNG data URLs
(lossless: the server sees exactly the masked pixels). What an answer token's probability is read from:

* ``prompt_logprobs`` (a vLLM server, found through its ``/models`` listing): exact teacher forcing. The answer is
  sent as the assistant's message and vLLM returns the log-probability of every prompt token; the answer's tokens
  are found at the end of the prompt by their ids. One request per masked image, every target token at once.
* ``top_logprobs`` (any other endpoint, or by choice): the reference's protocol. For each target token, one
  request continues the answer's prefix and the token's probability is read from the top-k (at most 20)
  log-probabilities of the first generated token; a token not among them counts as probability 0 and as missing.
  Each attribution records its coverage (the share of target probabilities that were found).

What paid APIs need: the key comes from the ``api_key`` argument, Kedro credentials or an environment variable
(``OPENAI_API_KEY``) and is never logged, written or part of a fingerprint; at most ``max_concurrency`` requests
are in flight; 429 and 5xx answers, timeouts and dropped connections are retried with exponential backoff (the
server's Retry-After honoured); every answered request is cached on disk by its content (``ResponseCache``), so a
resumed or repeated run sends no request twice; ``max_requests`` caps the requests sent and stops cleanly when it
is spent; a server that stops answering ends the run with one clear message (``ServerUnavailable``) and later
requests fail at once, while every finished image is kept.

The transport and cache are ``api_client.py``, token ids and response checks ``api_tokens.py``, the scorer
``api_scorer.py``; this module is the adapter (``ApiModel``) and ``load_api_model``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from eagle_pipelines.core.geometry import PhotoGrid
from eagle_pipelines.models.api_client import (  # noqa: F401 - the API family's public names, imported from here
    ApiClient,
    ApiError,
    ApiParams,
    DamagedCacheError,
    MalformedResponse,
    RequestBudgetExceeded,
    ResponseCache,
    ResponseTooLarge,
    ServerUnavailable,
    image_data_url,
    request_key,
    resolve_key,
)
from eagle_pipelines.models.api_scorer import ApiTokenScorer
from eagle_pipelines.models.api_tokens import ServerTokenizer, TokenTable, _prob, _validate_generation
from eagle_pipelines.models.base import Answer

logger = logging.getLogger(__name__)


class _Processor:
    """What callers read of a local adapter's processor: its tokenizer."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer


# -- the adapter ----------------------------------------------------------------------------------------------------
class ApiModel:
    """A model behind an OpenAI-compatible chat-completions endpoint, with the interface of the local adapters.

    ``server`` ``auto`` asks the endpoint's ``/models``: a vLLM server (``owned_by: vllm``) gets exact scoring
    through ``prompt_logprobs`` and its own token ids; anything else the top-k protocol with token texts. No
    model internals: the gradient and activation baselines need a local model (set ``baselines.methods: []``)."""

    family = "api"

    def __init__(self, params: ApiParams, api_key: str | None = None, http_client=None,
                 client: ApiClient | None = None):
        self.params = params
        self.client = client or ApiClient(params, api_key=api_key, http_client=http_client)
        self.server = params.server if params.server != "auto" else self._detect_server()
        self.scoring = params.scoring if params.scoring != "auto" else (
            "prompt_logprobs" if self.server == "vllm" else "top_logprobs")
        if self.scoring == "prompt_logprobs" and self.server != "vllm":
            raise ValueError(f"scoring 'prompt_logprobs' needs a vLLM server (its prompt_logprobs extension); "
                             f"{params.api_base} is served as '{self.server}': use scoring 'top_logprobs'")
        if self.server == "vllm":
            tokenizer = ServerTokenizer(self.client, params.api_model)
        else:
            digest = hashlib.sha1(params.api_model.encode()).hexdigest()[:10]
            tokenizer = TokenTable(Path(params.cache_dir) / f"tokens-{digest}.json" if params.cache_dir else None)
        self.processor = _Processor(tokenizer)
        self.name = params.api_model
        identity = {"api_model": params.api_model, "server": self.server, "scoring": self.scoring,
                    "top_logprobs": params.top_logprobs if self.scoring == "top_logprobs" else None,
                    "image_size": params.image_size}
        self.fingerprint = "api-" + hashlib.sha1(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]

    def __repr__(self) -> str:
        return f"ApiModel({self.params.api_model!r} at {self.params.api_base}, {self.server}, {self.scoring})"

    def _detect_server(self) -> str:
        listing = self.client.models()
        if listing is None:
            return "openai"
        names = [str(m.get("id")) for m in listing if isinstance(m, dict)]
        if names and self.params.api_model not in names and len(names) < 50:
            raise ValueError(f"the server at {self.params.api_base} serves {names}, not '{self.params.api_model}'; "
                             f"check --api-model / api_model")
        owners = {str(m.get("owned_by", "")) for m in listing if isinstance(m, dict)
                  and m.get("id") == self.params.api_model}
        return "vllm" if "vllm" in owners else "openai"

    @property
    def device(self):
        import torch

        return torch.device("cpu")  # local work is images and bookkeeping; the model is elsewhere

    def save(self, path) -> None:
        raise NotImplementedError(f"'{self.name}' is served by {self.params.api_base}: there are no weights to save")

    # -- the image the endpoint sees ---------------------------------------------------------------------------
    def model_image(self, image: np.ndarray, resample=None) -> np.ndarray:
        """`image` as it is sent: unchanged, or resized to ``image_size`` (bicubic unless `resample`, a PIL
        filter, is given). The endpoint may resize it again; masks and regions live on this image."""
        image = np.ascontiguousarray(image)
        if self.params.image_size is None or tuple(image.shape[:2]) == tuple(self.params.image_size):
            return image
        from PIL import Image

        h, w = self.params.image_size
        return np.asarray(Image.fromarray(image).resize(
            (w, h), Image.Resampling.BICUBIC if resample is None else resample))

    def source_pixels(self, height: int, width: int) -> np.ndarray:
        from eagle_pipelines.models.adapter import TransformersAdapter

        return TransformersAdapter.source_pixels(self, height, width)

    def photo_grid(self, height: int, width: int):
        """How photo pixels land on the image sent (``core/geometry.py: PhotoGrid``)."""
        if self.params.image_size is None or tuple(self.params.image_size) == (height, width):
            return PhotoGrid.identity((height, width))
        return PhotoGrid.from_source(self.source_pixels(height, width), (height, width))

    def resolution_spec(self) -> dict:
        return {"family": self.family, "image_size": self.params.image_size}

    # -- requests ----------------------------------------------------------------------------------------------
    def user_message(self, image: np.ndarray, prompt: str) -> dict:
        return {"role": "user", "content": [{"type": "image_url", "image_url": {"url": image_data_url(image)}},
                                            {"type": "text", "text": prompt}]}

    def _vllm(self, **extra) -> dict:
        return {"return_tokens_as_token_ids": True, **extra} if self.server == "vllm" else {}

    def _token_id(self, entry: dict) -> int:
        """The local id of a logprobs entry's token (vLLM: ``token_id:N`` is N; elsewhere the token table's)."""
        token = entry.get("token")
        if not isinstance(token, str):
            raise MalformedResponse(f"a logprobs entry without a token: {str(entry)[:200]}")
        if self.server == "vllm":
            if not token.startswith("token_id:"):
                raise MalformedResponse(f"expected a vLLM 'token_id:N' token, got {token!r}")
            return int(token.split(":", 1)[1])
        return self.processor.tokenizer.id_of(token)

    # -- generation --------------------------------------------------------------------------------------------
    def generate(self, image: np.ndarray, prompt: str, max_new_tokens: int = 32):
        return self.generate_batch([image], prompt, max_new_tokens=max_new_tokens)[0]

    def generate_batch(self, images: list[np.ndarray], prompt: str, max_new_tokens: int = 32) -> list:
        """Greedy answers (temperature 0), with each token's probability from the endpoint's logprobs. A vLLM
        server's final end-of-turn token becomes ``end_token_id`` (as the local adapters report it)."""
        bodies = [{"model": self.params.api_model, "messages": [self.user_message(self.model_image(im), prompt)],
                   "max_tokens": int(max_new_tokens), "temperature": 0, "logprobs": True, "top_logprobs": 1,
                   **self._vllm()} for im in images]
        answers = []
        validate = functools.partial(_validate_generation, server=self.server, vocab=self.params.vocab_size)
        for response, _ in self.client.request_many("chat", bodies, validate=validate):
            choice = response["choices"][0]
            entries = choice["logprobs"]["content"]
            finished = choice.get("finish_reason") == "stop"
            end = None
            if self.server == "vllm" and finished and choice.get("stop_reason") is None and entries:
                end = self._token_id(entries[-1])  # vLLM lists the end-of-turn token it stopped at
                entries = entries[:-1]
            ids = [self._token_id(e) for e in entries]
            probs = [_prob(e["logprob"]) for e in entries]
            tok = self.processor.tokenizer
            if self.server == "vllm":
                text = tok.decode(ids)
            else:
                text = str(choice.get("message", {}).get("content") or "")
            answers.append(Answer(prompt=prompt, token_ids=tuple(ids), tokens=tuple(tok.convert_ids_to_tokens(ids)),
                                  text=text, token_probs=tuple(probs), finished=finished, end_token_id=end))
        return answers

    # -- scoring -----------------------------------------------------------------------------------------------
    def requests_per_pass(self, n_targets: int) -> int:
        """Requests one masked image costs: 1 with ``prompt_logprobs``, one per target token otherwise."""
        return 1 if self.scoring == "prompt_logprobs" else int(n_targets)

    def scorer(self, image: np.ndarray, prompt: str, answer_ids, target_positions, batch_size: int = 32,
               compose: str = "pixel_values", memory_budget_mb: float | None = None) -> ApiTokenScorer:
        """A TokenScorer for `image` (as sent) teacher-forcing `prompt` + `answer_ids` through the endpoint.
        `compose` and `memory_budget_mb` have no effect here: the endpoint processes every masked image itself."""
        return ApiTokenScorer(self, image, prompt, answer_ids, target_positions, batch_size)


def load_api_model(api_base: str, api_model: str, api_key: str | None = None, credentials: dict | None = None,
                   http_client=None, **settings: Any) -> ApiModel:
    """An ``ApiModel`` for `api_model` at `api_base` (`settings`: the other ``ApiParams`` fields); a wrong setting
    is a ValueError naming it."""
    from pydantic import ValidationError

    try:
        params = ApiParams(api_base=api_base, api_model=api_model, **settings)
    except ValidationError as exc:
        err = exc.errors()[0]
        name = ".".join(str(p) for p in err["loc"])
        raise ValueError(f"API setting {name!r}: {err['msg']} (got {err.get('input')!r}); allowed: "
                         f"{sorted(ApiParams.model_fields)}") from None
    key = resolve_key(api_key, credentials, params.api_key_env)
    return ApiModel(params, api_key=key, http_client=http_client)
