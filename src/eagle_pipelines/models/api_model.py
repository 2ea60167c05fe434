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
"""

from __future__ import annotations

import base64
import functools
import hashlib
import io
import json
import logging
import math
import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from eagle_pipelines.errors import UserError
from eagle_pipelines.files import atomic_write

logger = logging.getLogger(__name__)

#: where answered requests are kept unless told otherwise (relative to the working folder: the project root)
DEFAULT_CACHE_DIR = "data/07_model_output/api_cache"
#: environment variable of the API key unless told otherwise (the openai client's own)
DEFAULT_KEY_ENV = "OPENAI_API_KEY"
#: statuses worth retrying: request timeout, conflict, rate limit, server errors
RETRY_STATUSES = frozenset({408, 409, 429}) | frozenset(range(500, 600))


# -- errors ---------------------------------------------------------------------------------------------------------
class ApiError(RuntimeError):
    """A request the endpoint refused or answered unusably. A RuntimeError on purpose: the pipelines record the
    item as failed (retried on the next run), not as skipped for a data reason."""


class ServerUnavailable(ApiError):
    """The endpoint stopped answering (connection refused, timeouts, 429 or 5xx after every retry): the run stops,
    finished images are kept, and a rerun picks up where it stopped."""


class RequestBudgetExceeded(ApiError):
    """``max_requests`` requests were sent: the run stops cleanly (finished images are kept)."""


class DamagedCacheError(UserError, ApiError):
    """The response cache or the token table on disk cannot be read: the message names the file and the fix (delete
    it; the answers it held are asked again). The run stops: every later request would meet it too."""


class MalformedResponse(ApiError):
    """An answer without the fields the scoring needs, or with values no model gives (a log-probability above 0 or
    not finite, a token id outside the vocabulary): retried like a failed request, never cached."""


class ResponseTooLarge(ApiError):
    """An answer larger than ``max_response_mb``: refused while it arrives (never read whole, never cached)."""


#: a log-probability this much above 0 is rounding (clamped to 0); more is a malformed answer
LOGPROB_TOLERANCE = 1e-6
#: the largest token id accepted when ``vocab_size`` is not set
MAX_TOKEN_ID = 2**31 - 1


# -- settings -------------------------------------------------------------------------------------------------------
class ApiParams(BaseModel):
    """How to reach and use an OpenAI-compatible endpoint (``load_model(api_base=..., api_model=...)`` keywords,
    and the arguments of the catalog's ``ApiModelDataset``). The API key is not among them: see ``resolve_key``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    api_base: str = Field(description="the endpoint's base URL, e.g. http://127.0.0.1:8000/v1")
    api_model: str = Field(min_length=1, description="the model name the endpoint serves")
    server: Literal["auto", "vllm", "openai"] = "auto"
    scoring: Literal["auto", "prompt_logprobs", "top_logprobs"] = "auto"
    top_logprobs: int = Field(20, ge=1, le=20)
    max_concurrency: int = Field(4, ge=1, le=256)
    max_retries: int = Field(4, ge=0, le=20)
    timeout_s: float = Field(60.0, gt=0)
    backoff_s: float = Field(0.5, ge=0)
    max_backoff_s: float = Field(20.0, ge=0)
    max_requests: int | None = Field(None, ge=0)
    max_response_mb: float = Field(32.0, gt=0, description="a larger answer is refused (never read whole, never "
                                   "cached)")
    vocab_size: int | None = Field(None, ge=1, description="the model's vocabulary size: token ids an answer names "
                                   "must lie below it (unset: any id in 0..2^31-1)")
    cache_dir: str | None = DEFAULT_CACHE_DIR
    image_size: tuple[int, int] | None = Field(None, description="(height, width) the images are resized to")
    api_key_env: str = DEFAULT_KEY_ENV

    @field_validator("api_base")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"api_base must be an http(s) URL such as http://127.0.0.1:8000/v1; got {value!r}")
        return value.rstrip("/")

    @field_validator("image_size")
    @classmethod
    def _size(cls, value):
        if value is not None and min(value) < 14:
            raise ValueError(f"image_size must be (height, width) of at least 14 pixels each; got {value!r}")
        return value


def resolve_key(api_key: str | None, credentials: dict | None, env: str) -> str | None:
    """The API key: the argument, else Kedro credentials' ``api_key``, else the environment variable `env`
    (None when none is set: a local server without authentication)."""
    if api_key:
        return api_key
    if credentials and credentials.get("api_key"):
        return str(credentials["api_key"])
    return os.environ.get(env) or None


def image_data_url(image: np.ndarray) -> str:
    """An (H, W, 3) uint8 image as a base64 PNG data URL (lossless)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def request_key(kind: str, body: dict, url: str = "") -> str:
    """The cache key of a request: a hash of the endpoint's URL, the kind of request and its whole body (the model,
    messages with the image's bytes, every setting): another server, or another model on it, never answers from
    this one's cache. The API key is not part of it."""
    text = json.dumps({"url": url, "endpoint": kind, "body": body}, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def request_label(kind: str, body: dict, key: str) -> str:
    """A request as an error names it: its kind and cache key, the model and the start of its prompt."""
    prompt = ""
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        parts = [content] if isinstance(content, str) else [c.get("text") for c in content or []
                                                             if isinstance(c, dict) and c.get("type") == "text"]
        prompt = prompt or next((t for t in parts if t), "")
    shown = f", prompt {prompt[:40]!r}" if prompt else ""
    return f"{kind} request {key[:12]} (model {body.get('model')!r}{shown})"


# -- the transport: a total deadline and a size cap ---------------------------------------------------------------
def _httpx2():
    import httpx2

    return httpx2


class DeadlineTransport:
    """Wraps an httpx2 transport (the openai client's) so that one request, body included, takes at most
    `deadline_s` seconds in all and its answer at most `max_bytes` bytes: the body is read here, chunk by chunk,
    and a server that trickles (1 byte a second never trips a per-read timeout) is cut off at the deadline
    (``httpx2.ReadTimeout``, retried like any timeout); a larger answer is ``ResponseTooLarge`` (not retried).
    What it does not bound: a server trickling its *headers* (the per-read timeout still holds there)."""

    def __init__(self, inner, deadline_s: float, max_bytes: int):
        self.inner, self.deadline_s, self.max_bytes = inner, float(deadline_s), int(max_bytes)

    def handle_request(self, request):
        httpx2 = _httpx2()
        end = time.monotonic() + self.deadline_s
        response = self.inner.handle_request(request)
        where = f"{request.method} {request.url}"
        try:
            length = response.headers.get("content-length")
            if length is not None and length.isdigit() and int(length) > self.max_bytes:
                raise ResponseTooLarge(f"{where} answered {int(length) / 1e6:.1f} MB, more than max_response_mb="
                                       f"{self.max_bytes / 1e6:g}")
            chunks, size = [], 0
            for chunk in response.stream:
                size += len(chunk)
                if size > self.max_bytes:
                    raise ResponseTooLarge(f"{where} answered more than max_response_mb={self.max_bytes / 1e6:g} "
                                           "MB (cut off while it arrived)")
                chunks.append(chunk)
                if time.monotonic() > end:
                    raise httpx2.ReadTimeout(f"the answer took longer than the {self.deadline_s:g} s deadline "
                                             f"({size} bytes by then)", request=request)
        finally:
            response.close()
        headers = [(k, v) for k, v in response.headers.multi_items()  # content-encoding kept: decoded later
                   if k.lower() not in ("transfer-encoding", "content-length")]
        return httpx2.Response(response.status_code, headers=headers, content=b"".join(chunks), request=request,
                               extensions=response.extensions)

    def close(self) -> None:
        self.inner.close()


# -- the response cache ---------------------------------------------------------------------------------------------
class ResponseCache:
    """Answered requests on disk (one SQLite file, ``<folder>/responses.sqlite``), keyed by ``request_key``.

    Each answer is committed as it arrives, so a run killed at any point keeps every answer it received; several
    threads and processes may share the file (WAL journal, a lock per process)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.path = self.folder / "responses.sqlite"
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None

    def __getstate__(self) -> dict:
        return {"folder": self.folder, "path": self.path}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["folder"])

    def _damaged(self, exc: BaseException) -> DamagedCacheError:
        return DamagedCacheError(f"the response cache '{self.path}' is damaged ({type(exc).__name__}: {exc}); "
                                 f"delete it (with its -wal and -shm files) and run again: the answers it held are "
                                 f"asked again")

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            try:
                conn = sqlite3.connect(self.path, timeout=60, check_same_thread=False, isolation_level=None)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, kind TEXT, response "
                             "TEXT, created REAL)")
            except sqlite3.DatabaseError as exc:  # not a database, a truncated page, a wrong table
                raise self._damaged(exc) from None
            self._conn = conn
        return self._conn

    def _execute(self, sql: str, args: tuple = ()):
        try:
            return self._connection().execute(sql, args)
        except DamagedCacheError:
            raise
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
                raise
            raise self._damaged(exc) from None

    def get(self, key: str) -> dict | None:
        with self._lock:
            row = self._execute("SELECT response FROM responses WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        try:
            return json.loads(row[0])
        except (TypeError, ValueError) as exc:  # an edited row
            raise self._damaged(exc) from None

    def put(self, key: str, kind: str, response: dict) -> None:
        text = json.dumps(response, separators=(",", ":"))
        with self._lock:
            self._execute("INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?)", (key, kind, text, time.time()))

    def __len__(self) -> int:
        with self._lock:
            return int(self._execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


# -- the client -----------------------------------------------------------------------------------------------------
def _retry_after(exc) -> float | None:
    """Seconds the server asked to wait (``retry-after-ms`` or ``retry-after`` in seconds), if it said."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None) or {}
    for header, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        try:
            value = float(headers.get(header))
        except (TypeError, ValueError):
            continue
        if value >= 0:
            return value * scale
    return None


class ApiClient:
    """Requests to one endpoint: cached by content, counted against ``max_requests``, at most ``max_concurrency``
    in flight, retried with exponential backoff, and stopped for good once the endpoint is found dead.

    Counters (read by tests and reports): ``requests`` (new requests sent, each counted once, retries aside),
    ``attempts`` (HTTP attempts, retries included), ``cache_hits``, ``retries``; ``sent_keys`` lists the cache
    key of every new request in the order sent."""

    def __init__(self, params: ApiParams, api_key: str | None = None, http_client=None,
                 sleep: Callable[[float], None] = time.sleep):
        self.params = params
        self._api_key = api_key
        self._http_client = http_client
        self._sleep = sleep
        self.cache = ResponseCache(params.cache_dir) if params.cache_dir else None
        self._init_runtime()

    def _init_runtime(self) -> None:
        self._client = None
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(self.params.max_concurrency)
        self._memory: dict[str, dict] = {}
        self.dead: str | None = None
        self.requests = self.attempts = self.cache_hits = self.retries = 0
        self.sent_keys: list[str] = []

    def __getstate__(self) -> dict:
        """Pickled (Ray workers) without the connection, locks and counters; the key travels with it."""
        return {"params": self.params, "_api_key": self._api_key, "cache": self.cache}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._http_client, self._sleep = None, time.sleep
        self._init_runtime()

    def __repr__(self) -> str:  # never the key
        return f"ApiClient({self.params.api_base!r}, model={self.params.api_model!r})"

    @property
    def root(self) -> str:
        """The server's root URL (``api_base`` without a trailing ``/v1``): vLLM's /detokenize lives there."""
        base = self.params.api_base
        return base[: -len("/v1")] if base.endswith("/v1") else base

    def openai(self):
        if self._client is None:
            from eagle_pipelines.extras import require

            openai = require("openai", "the API path (docs/api.md)")  # the `api` extra
            quiet = logging.getLogger("httpx2")  # one INFO line per request otherwise: thousands per image
            if quiet.level == logging.NOTSET:
                quiet.setLevel(logging.WARNING)
            self._client = openai.OpenAI(base_url=self.params.api_base, api_key=self._api_key or "EMPTY",
                                         max_retries=0, timeout=self.params.timeout_s, http_client=self._http())
        return self._client

    def _http(self):
        """The httpx2 client the openai client sends through, its transport wrapped in a ``DeadlineTransport``
        (``timeout_s`` is then a total deadline per request, ``max_response_mb`` a cap); a given client (tests)
        gets its transport wrapped the same way."""
        httpx2 = _httpx2()
        p = self.params
        wrap = lambda inner: DeadlineTransport(inner, p.timeout_s, int(p.max_response_mb * 1e6))  # noqa: E731
        if self._http_client is not None:  # wrapped when it is an httpx2 client (the answers must be httpx2's)
            inner = getattr(self._http_client, "_transport", None)
            if isinstance(self._http_client, httpx2.Client) and inner is not None \
                    and not isinstance(inner, DeadlineTransport):
                self._http_client._transport = wrap(inner)
            return self._http_client
        limits = httpx2.Limits(max_connections=p.max_concurrency + 2, max_keepalive_connections=p.max_concurrency)
        return httpx2.Client(transport=wrap(httpx2.HTTPTransport(limits=limits)), timeout=p.timeout_s)

    def revive(self) -> None:
        """Forgets that the server was found dead (after it was restarted, in the same process)."""
        self.dead = None

    # -- one request ------------------------------------------------------------------------------------------
    def _cached(self, key: str) -> dict | None:
        if key in self._memory:
            return self._memory[key]
        return self.cache.get(key) if self.cache is not None else None

    def _store(self, key: str, kind: str, response: dict) -> None:
        text = json.dumps(response)
        if self.redact(text) != text:  # an answer echoing the key is written without it
            response = json.loads(self.redact(text))
        if self.cache is not None:
            self.cache.put(key, kind, response)
        else:
            self._memory[key] = response

    def _reserve(self, key: str, budgeted: bool) -> None:
        with self._lock:
            if self.dead:
                raise ServerUnavailable(self.dead)
            limit = self.params.max_requests
            if budgeted and limit is not None and self.requests >= limit:
                where = f" in {self.cache.path}" if self.cache is not None else ""
                raise RequestBudgetExceeded(
                    f"the request budget is spent: max_requests={limit} requests were sent to "
                    f"{self.params.api_base}; finished images are kept and answered requests are cached{where}: "
                    f"raise max_requests and run again (cached answers are not sent again)")
            if budgeted:
                self.requests += 1
            self.sent_keys.append(key)

    def _die(self, message: str) -> ServerUnavailable:
        with self._lock:
            self.dead = self.dead or self.redact(message)
        return ServerUnavailable(self.redact(message))

    def request(self, kind: str, body: dict, validate: Callable[[dict], None] | None = None,
                path: str | None = None) -> tuple[dict, bool]:
        """(the answer, whether it came from the cache) of one request: a chat completion (``kind`` ``chat``) or a
        POST to `path` under the server's root (``kind`` e.g. ``detokenize``; not counted against the budget).
        `validate` raises ``MalformedResponse`` for an unusable answer (retried, not cached); a cached answer is
        checked the same way (one cached by an older version and now refused is asked again). Every error's
        message has the API key replaced by ``***``."""
        where = self.params.api_base if path is None else f"{self.root}{path}"
        key = request_key(kind, body, where)
        try:
            found = self._cached(key)
            if found is not None:
                try:
                    if validate is not None:
                        validate(found)
                    with self._lock:
                        self.cache_hits += 1
                    return found, True
                except MalformedResponse as exc:
                    logger.warning("a cached answer is refused and asked again: %s", self.redact(str(exc)))
            self._reserve(key, budgeted=kind == "chat")
            response = self._send(kind, body, validate, path, request_label(kind, body, key))
            self._store(key, kind, response)
            return response, False
        except ApiError as exc:
            text = str(exc)
            if self.redact(text) != text:
                raise type(exc)(self.redact(text)) from None
            raise

    def redact(self, text: str) -> str:
        """`text` with the API key (if any, and of at least 4 characters) replaced by ``***``."""
        key = self._api_key
        return text.replace(key, "***") if key and len(key) >= 4 and key in text else text

    def _send(self, kind: str, body: dict, validate, path: str | None, label: str = "") -> dict:
        import openai

        p = self.params
        where = f"{p.api_base}" if path is None else f"{self.root}{path}"
        label = label or f"a {kind} request for model '{p.api_model}'"
        last = ""
        for attempt in range(p.max_retries + 1):
            if self.dead:
                raise ServerUnavailable(self.dead)
            if attempt:
                with self._lock:
                    self.retries += 1
            wait = None
            try:
                with self._slots:
                    with self._lock:
                        self.attempts += 1
                    if path is None:
                        response = self.openai().post("/chat/completions", body=body, cast_to=object)
                    else:
                        response = self.openai().post(f"{self.root}{path}", body=body, cast_to=object)
                if not isinstance(response, dict):
                    raise MalformedResponse(f"the answer is a {type(response).__name__}, not a JSON object")
                if validate is not None:
                    validate(response)
                return response
            except ResponseTooLarge as exc:
                raise ResponseTooLarge(f"{where}: {label}: {exc}; raise max_response_mb if the answer is "
                                       "genuine") from None
            except MalformedResponse as exc:
                last = f"malformed answer ({exc})"
            except openai.APITimeoutError:
                last = f"no answer within {p.timeout_s:g} s (timeout, the whole answer included)"
            except openai.APIConnectionError as exc:
                last = f"connection failed ({type(exc.__cause__ or exc).__name__}: {exc.__cause__ or exc})"
            except openai.APIStatusError as exc:
                status = exc.status_code
                detail = _error_detail(exc)
                if status in (401, 403):
                    raise self._die(f"{where} refused the API key (HTTP {status}: {detail}); set it in "
                                    f"{p.api_key_env} or the credentials (docs/api.md)") from None
                if status not in RETRY_STATUSES:
                    raise ApiError(f"{where} refused the {label} (HTTP {status}: {detail})") from None
                last = f"HTTP {status}: {detail}"
                wait = _retry_after(exc)
            except ValueError as exc:  # a body that is not JSON
                last = f"malformed answer ({type(exc).__name__}: {exc})"
            if attempt < p.max_retries:
                delay = min(p.max_backoff_s, p.backoff_s * 2**attempt) * (0.5 + 0.5 * random.random())
                self._sleep(min(p.max_backoff_s, max(delay, wait or 0.0)))
        tries = p.max_retries + 1
        if last.startswith("malformed"):
            raise MalformedResponse(f"{where}: the {label} got a {last} {tries} times")
        raise self._die(f"the API server at {where} does not answer: {last}, {tries} tries. The run stops here; "
                        f"finished images are kept and answered requests are cached"
                        f"{f' in {self.cache.path}' if self.cache is not None else ''}: start the server and run again "
                        f"(nothing answered is sent twice)")

    def request_many(self, kind: str, bodies: Sequence[dict], validate=None) -> list[tuple[dict, bool]]:
        """``request`` for each body, at most ``max_concurrency`` in flight; answers in the bodies' order. The
        first error stops the rest (answers received before it are cached)."""
        if len(bodies) <= 1 or self.params.max_concurrency == 1:
            return [self.request(kind, b, validate) for b in bodies]
        with ThreadPoolExecutor(min(self.params.max_concurrency, len(bodies))) as pool:
            futures = [pool.submit(self.request, kind, b, validate) for b in bodies]
            try:
                return [f.result() for f in futures]
            except BaseException:
                for f in futures:
                    f.cancel()
                raise

    def models(self) -> list[dict] | None:
        """The endpoint's ``/models`` listing (None where it has none); a dead endpoint is ``ServerUnavailable``."""
        import openai

        p = self.params
        last = ""
        for attempt in range(p.max_retries + 1):
            try:
                listing = self.openai().get("/models", cast_to=object)
                return list(listing.get("data", [])) if isinstance(listing, dict) else None
            except openai.APIConnectionError as exc:
                last = f"connection failed ({type(exc.__cause__ or exc).__name__})"
            except openai.APIStatusError as exc:
                if exc.status_code in (401, 403):
                    raise ServerUnavailable(f"{p.api_base} refused the API key (HTTP {exc.status_code}); set it in "
                                            f"{p.api_key_env} or the credentials (docs/api.md)") from None
                if exc.status_code not in RETRY_STATUSES:
                    return None
                last = f"HTTP {exc.status_code}"
            if attempt < p.max_retries:
                self._sleep(min(p.max_backoff_s, p.backoff_s * 2**attempt))
        raise ServerUnavailable(f"the API server at {p.api_base} does not answer ({last}, {p.max_retries + 1} "
                                f"tries); start it, or check --api-base / api_base")


def _error_detail(exc) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        message = inner.get("message") if isinstance(inner, dict) else inner
        if message:
            return str(message)[:300]
    return str(getattr(exc, "message", exc))[:300]


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
        from eagle_pipelines.core.geometry import PhotoGrid

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
        from eagle_pipelines.models.base import Answer

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


class ApiTokenScorer:
    """TokenScorer of an ``ApiModel``: (B, H, W) keep-masks -> (B, T) probabilities of the target tokens, with
    removed pixels black (zero), every masked image sent as a PNG.

    Counts what it did for the attribution's meta (``attribution_meta``): requests made (cached ones included)
    and sent, and in ``top_logprobs`` scoring how many target probabilities were missing from the top-k
    (taken as 0): the coverage."""

    def __init__(self, model: ApiModel, image: np.ndarray, prompt: str, answer_ids, target_positions,
                 batch_size: int = 32):
        answer_ids = [int(t) for t in answer_ids]
        self.target_positions = tuple(int(t) for t in target_positions)
        if not self.target_positions:
            raise ValueError("no tokens to explain: target_positions is empty")
        if min(self.target_positions) < 0 or max(self.target_positions) >= len(answer_ids):
            raise ValueError(f"target positions {self.target_positions} outside the answer of {len(answer_ids)} "
                             f"tokens")
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


# -- the catalog dataset --------------------------------------------------------------------------------------------
def _dataset_base():
    try:
        from kedro.io.core import AbstractDataset
    except ImportError:  # an environment without Kedro (e.g. vLLM's): the adapter works, the dataset is unused
        return object
    return AbstractDataset


class ApiModelDataset(_dataset_base()):
    """A model behind an OpenAI-compatible endpoint as the catalog's ``vlm`` (conf/api/catalog.yml).

    Args: ``api_base``, ``api_model`` and the other ``ApiParams`` fields (``max_requests``, ``max_concurrency``...);
    ``path``: the response cache's folder (``cache_dir``; under ``path`` Kedro makes it relative to the project);
    ``credentials``: a Kedro credentials entry with ``api_key`` (else the environment variable ``api_key_env``).
    Nothing is saved; the key is never part of ``_describe`` or the stamp."""

    def __init__(self, api_base: str, api_model: str, path: str | None = None, credentials: dict | None = None,
                 metadata: dict | None = None, **settings: Any):
        from kedro.io.core import DatasetError

        if path is not None:
            settings["cache_dir"] = path
        try:
            self._params = ApiParams(api_base=api_base, api_model=api_model, **settings)
        except Exception as exc:  # noqa: BLE001 - pydantic's message names the field
            raise DatasetError(f"the API model entry ({api_model} at {api_base}): {exc}") from None
        self._credentials = dict(credentials or {})
        self.metadata = metadata
        self._loaded: ApiModel | None = None

    def load(self) -> ApiModel:
        if self._loaded is None:
            key = resolve_key(None, self._credentials, self._params.api_key_env)
            self._loaded = ApiModel(self._params, api_key=key)
            logger.info("API model '%s' at %s: %s server, %s scoring%s", self._params.api_model,
                        self._params.api_base, self._loaded.server, self._loaded.scoring,
                        "" if self._params.max_requests is None else f", max_requests={self._params.max_requests}")
        return self._loaded

    def save(self, data) -> None:
        from kedro.io.core import DatasetError

        raise DatasetError(f"'{self._params.api_model}' is served by {self._params.api_base}: nothing to save")

    def _exists(self) -> bool:
        return True

    def _release(self) -> None:
        self._loaded = None

    def stamp(self) -> str:
        """Provenance without a request: the model name and the scoring settings (not the URL or the key)."""
        p = self._params
        return json.dumps({"api_model": p.api_model, "server": p.server, "scoring": p.scoring,
                           "top_logprobs": p.top_logprobs, "image_size": p.image_size}, sort_keys=True)

    def _describe(self) -> dict[str, Any]:
        return {k: v for k, v in self._params.model_dump().items() if k != "api_key_env"}
