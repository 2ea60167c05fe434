"""Token ids, texts and log-probabilities as an OpenAI-compatible endpoint returns them: a vLLM server's tokenizer
(``ServerTokenizer``), stable ids for token texts of other servers (``TokenTable``) and the checks of every
logprob, token id and entry a response carries (``MalformedResponse`` otherwise)."""

from __future__ import annotations

import json
import logging
import math
import threading
from pathlib import Path

from eagle_pipelines.files import atomic_write
from eagle_pipelines.models.api_client import (LOGPROB_TOLERANCE, MAX_TOKEN_ID, ApiClient, DamagedCacheError,
                                                MalformedResponse)

logger = logging.getLogger(__name__)


# -- tokens ---------------------------------------------------------------------------------------------------------
class ServerTokenizer:
    """A vLLM server's tokenizer as the local code needs it: token ids are the server's own (its logprobs return
    them as ``token_id:N``), texts come from its ``/detokenize`` (cached like every request)."""

    unk_token_id = None

    def __init__(self, client: ApiClient, model: str):
        self.client, self.model = client, model
        self._texts: dict[tuple[int, ...], str] = {}

    def __getstate__(self) -> dict:
        return {"client": self.client, "model": self.model, "_texts": dict(self._texts)}

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        key = tuple(int(i) for i in ids)
        if not key:
            return ""
        if key not in self._texts:
            answer, _ = self.client.request("detokenize", {"model": self.model, "tokens": list(key)},
                                            validate=_validate_detokenize, path="/detokenize")
            self._texts[key] = answer["prompt"]
        return self._texts[key]

    def convert_ids_to_tokens(self, ids) -> list[str]:
        return [self.decode([i]) for i in ids]


def _validate_detokenize(answer: dict) -> None:
    if not isinstance(answer.get("prompt"), str):
        raise MalformedResponse(f"/detokenize answered without a 'prompt' text: {str(answer)[:200]}")


class TokenTable:
    """Token ids for an endpoint that names its tokens only by their text (OpenAI's logprobs): each distinct token
    text gets the next id, kept in ``<cache_dir>/tokens-<model hash>.json`` so that ids stay the same across runs
    and processes. Decoding joins the texts."""

    unk_token_id = None

    def __init__(self, path: str | Path | None):
        self.path = None if path is None else Path(path)
        self._lock = threading.Lock()
        self.texts: list[str] = []
        self.ids: dict[str, int] = {}
        if self.path is not None and self.path.is_file():
            self.texts = self._read()
            self.ids = {t: i for i, t in enumerate(self.texts)}

    def _read(self) -> list[str]:
        """The token texts on disk: a JSON list of distinct strings, or a DamagedCacheError naming the file."""
        try:
            texts = json.loads(self.path.read_text(encoding="utf-8"))
            if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
                raise ValueError("not a JSON list of token texts")
            if len(set(texts)) != len(texts):
                raise ValueError("a token text appears twice")
        except (OSError, ValueError) as exc:
            raise DamagedCacheError(f"the token table '{self.path}' is damaged ({exc}); delete it and the response "
                                    f"cache beside it ({self.path.parent / 'responses.sqlite'}), then run again: "
                                    f"the ids it held are the cached answers'") from None
        return texts

    def __getstate__(self) -> dict:
        return {"path": self.path, "texts": list(self.texts)}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"])
        for text in state["texts"]:
            self.id_of(text)

    def id_of(self, text: str) -> int:
        with self._lock:
            if text not in self.ids:
                if self.path is not None and self.path.is_file():  # another process may have added tokens
                    for t in self._read()[len(self.texts):]:
                        self.ids.setdefault(t, len(self.texts))
                        self.texts.append(t)
                if text not in self.ids:
                    self.ids[text] = len(self.texts)
                    self.texts.append(text)
                    self._save()
            return self.ids[text]

    def _save(self) -> None:
        if self.path is None:
            return

        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = json.dumps(self.texts, ensure_ascii=False).encode("utf-8")
        atomic_write(self.path, lambda f: f.write(data))

    def text_of(self, token_id: int) -> str:
        if not 0 <= int(token_id) < len(self.texts):
            raise ValueError(f"token id {token_id} is not in the token table {self.path}")
        return self.texts[int(token_id)]

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        return "".join(self.text_of(i) for i in ids)

    def convert_ids_to_tokens(self, ids) -> list[str]:
        return [self.text_of(i) for i in ids]


# -- response checks ---------------------------------------------------------------------------------------------
def _check_logprob(value, where: str) -> None:
    """A log-probability as a model gives it: a JSON number, finite, at most 0 (``LOGPROB_TOLERANCE`` above 0 is
    rounding, clamped when read by ``_prob``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MalformedResponse(f"{where}: the logprob {value!r} is not a number")
    if not math.isfinite(value):
        raise MalformedResponse(f"{where}: the logprob {value!r} is not finite")
    if value > LOGPROB_TOLERANCE:
        raise MalformedResponse(f"{where}: the logprob {value!r} is above 0 (a probability above 1)")


def _prob(logprob) -> float:
    """The probability of a checked log-probability (tiny positive rounding clamped to 1)."""
    return math.exp(min(0.0, float(logprob)))


def _check_token_id(value, where: str, vocab: int | None) -> None:
    """A token id as a vLLM server names it (``token_id:N`` or ``N``): an integer in the vocabulary."""
    text = value.split(":", 1)[1] if isinstance(value, str) and value.startswith("token_id:") else value
    if isinstance(text, str) and text.isascii() and text.isdigit():
        number = int(text)
        if number < (vocab or MAX_TOKEN_ID + 1):
            return
        raise MalformedResponse(f"{where}: token id {number} is outside the vocabulary ({vocab or MAX_TOKEN_ID + 1} "
                                "ids)")
    raise MalformedResponse(f"{where}: {value!r} is not a token id (an integer)")


def _check_entry(entry, where: str, server: str, vocab: int | None, top: bool = False) -> None:
    if not isinstance(entry, dict) or "logprob" not in entry:
        raise MalformedResponse(f"{where}: not a logprobs entry with a logprob: {str(entry)[:120]}")
    _check_logprob(entry["logprob"], where)
    token = entry.get("token")
    if not isinstance(token, str):
        raise MalformedResponse(f"{where}: a logprobs entry without a token text: {str(entry)[:120]}")
    if server == "vllm":
        _check_token_id(token, where, vocab)
    if top:
        return
    for k, alt in enumerate(entry.get("top_logprobs") or []):
        _check_entry(alt, f"{where}.top_logprobs[{k}]", server, vocab, top=True)


def _validate_generation(response: dict, server: str = "openai", vocab: int | None = None) -> None:
    try:
        choice = response["choices"][0]
        entries = choice["logprobs"]["content"]
        if not isinstance(entries, list) or not all(isinstance(e, dict) and "logprob" in e for e in entries):
            raise TypeError("logprobs.content is not a list of entries with a logprob")
    except (KeyError, IndexError, TypeError) as exc:
        raise MalformedResponse(f"a chat completion without choices[0].logprobs.content ({exc}); does the endpoint "
                                f"return logprobs? {str(response)[:200]}") from None
    for k, entry in enumerate(entries):
        _check_entry(entry, f"logprobs.content[{k}]", server, vocab)


def _validate_prompt_logprobs(response: dict, server: str = "vllm", vocab: int | None = None) -> None:
    found = response.get("prompt_logprobs")
    if not isinstance(found, list) or not all(e is None or isinstance(e, dict) for e in found) or not found:
        raise MalformedResponse(f"an answer without a prompt_logprobs list (is the server vLLM?): "
                                f"{str(response)[:200]}")
    for k, entry in enumerate(found):
        for token, value in (entry or {}).items():
            where = f"prompt_logprobs[{k}][{token!r}]"
            _check_token_id(token, where, vocab)
            if not isinstance(value, dict) or "logprob" not in value:
                raise MalformedResponse(f"{where}: not a logprobs entry with a logprob: {str(value)[:120]}")
            _check_logprob(value["logprob"], where)


def _validate_top_logprobs(response: dict, server: str = "openai", vocab: int | None = None) -> None:
    try:
        entry = response["choices"][0]["logprobs"]["content"][0]
        if not isinstance(entry["top_logprobs"], list):
            raise TypeError("top_logprobs is not a list")
    except (KeyError, IndexError, TypeError) as exc:
        raise MalformedResponse(f"a chat completion without choices[0].logprobs.content[0].top_logprobs ({exc}): "
                                f"{str(response)[:200]}") from None
    _check_entry(entry, "logprobs.content[0]", server, vocab)
