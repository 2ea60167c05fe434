"""The transport of an API model (docs/api.md): its settings (``ApiParams``), the key, the HTTP client with retries,
backoff, a request budget and a deadline (``ApiClient``), and the on-disk cache of answered requests
(``ResponseCache``). What the answers mean is ``api_tokens.py`` / ``api_scorer.py`` / ``api_model.py``."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from eagle_pipelines.errors import UserError

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
