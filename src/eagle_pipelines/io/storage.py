"""Where item stores and manifests live: a local folder (unchanged: temporary file, then ``os.replace``) or any
fsspec filesystem (``s3://bucket/prefix``, through s3fs), where every file is written by one final object PUT
(``pipe_file``: a reader never sees a partial object; a multipart upload is not visible before it completes).

A store's guarantees rest on that: an item's checksum file is written last, so an item cut off between its files
has no checksum and is made again; its checksum is checked on every read, so a damaged object is named and made
again. An object store that cannot be reached is a ``StorageError`` (one line naming the endpoint), never an
"item missing" (which would make it again) nor a data error (which would skip it).

Credentials: ``storage_options`` are s3fs's (``key``, ``secret``, ``endpoint_url`` or ``client_kwargs:
{endpoint_url: ...}``), given by the catalog's ``credentials: s3`` entry (``conf/local/credentials.yml``,
docs/scale.md); without them s3fs uses the usual AWS environment variables and files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kedro.io.core import AbstractDataset, DatasetError

from eagle_pipelines.errors import UserError
from eagle_pipelines.files import atomic_write

#: s3fs/botocore retry a refused connection with back-off; a few tries, short waits: a stopped server is an
#: error in seconds, not minutes
_DEFAULT_CONFIG = {"connect_timeout": 5, "read_timeout": 60, "retries": {"max_attempts": 2}}


class StorageError(UserError, DatasetError):
    """The object store cannot be reached or refuses the request; the message names the endpoint."""


def is_remote(path: str | Path) -> bool:
    """Whether `path` is a URL of a filesystem other than the local one (``s3://``, ``gs://``, ``memory://``)."""
    text = str(path)
    return "://" in text and not text.startswith("file://")


class Remote:
    """Files under one fsspec URL: read, write (one PUT each), test and remove them, every failure other than
    "not there" raised as a ``StorageError`` naming the endpoint."""

    def __init__(self, url: str, storage_options: dict | None = None):
        self.url = str(url).rstrip("/")
        self.options = dict(storage_options or {})
        self._fs = None

    def __getstate__(self):  # shipped to Ray workers: they open their own connection
        return {"url": self.url, "options": self.options, "_fs": None}

    @property
    def fs(self):
        if self._fs is None:
            import fsspec

            options = dict(self.options)
            if self.url.startswith(("s3://", "s3a://")):
                options.setdefault("config_kwargs", dict(_DEFAULT_CONFIG))
                endpoint = options.pop("endpoint_url", None)
                if endpoint:
                    options.setdefault("client_kwargs", {}).setdefault("endpoint_url", endpoint)
            try:
                self._fs, _ = fsspec.core.url_to_fs(self.url, **options)
            except ImportError as exc:
                raise StorageError(f"'{self.url}' needs the filesystem package for its protocol ({exc}); "
                                   f"pip install 'eagle_pipelines[s3]' (s3fs)") from None
        return self._fs

    def endpoint(self) -> str:
        kwargs = self.options.get("client_kwargs", {}) or {}
        endpoint = self.options.get("endpoint_url") or kwargs.get("endpoint_url")
        return endpoint or f"{self.url.split('://', 1)[0]}:// (default endpoint)"

    def path(self, relative: str = "") -> str:
        """The filesystem path (no protocol) of `relative` under the URL."""
        root = self.url.split("://", 1)[1] if "://" in self.url else self.url
        return f"{root}/{relative}" if relative else root

    def _fail(self, what: str, exc: BaseException) -> StorageError:
        detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        return StorageError(f"object store at {self.endpoint()} failed to {what} ({type(exc).__name__}: {detail});"
                            f" check that it runs and the 's3' credentials in conf/local/credentials.yml, then run "
                            f"again (finished items are kept)")

    def exists(self, relative: str) -> bool:
        try:
            return self.fs.info(self.path(relative)).get("type") == "file"
        except FileNotFoundError:
            return False
        except Exception as exc:  # noqa: BLE001 - connection, credentials, throttling: not "missing"
            raise self._fail(f"look up '{self.url}/{relative}'", exc) from None

    def read(self, relative: str) -> bytes:
        try:
            return self.fs.cat_file(self.path(relative))
        except FileNotFoundError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise self._fail(f"read '{self.url}/{relative}'", exc) from None

    def write(self, relative: str, data: bytes) -> None:
        """One PUT of the whole object (visible only once complete)."""
        try:
            self.fs.pipe_file(self.path(relative), bytes(data))
        except Exception as exc:  # noqa: BLE001
            raise self._fail(f"write '{self.url}/{relative}'", exc) from None

    def create(self, relative: str, data: bytes) -> bool:
        """One PUT that only creates (``If-None-Match: *`` on S3): False when the object is already there. Where
        the store ignores the condition, the object read back must be `data` (the last writer wins the race)."""
        if self.exists(relative):
            return False
        try:
            self.fs.pipe_file(self.path(relative), bytes(data), mode="create")
        except FileExistsError:
            return False
        except Exception as exc:  # noqa: BLE001
            text = str(exc).lower().replace("-", "")
            if "precondition" in text or "412" in text:  # S3: 412 PreconditionFailed (SeaweedFS: OSError EINVAL)
                return False
            raise self._fail(f"write '{self.url}/{relative}'", exc) from None
        try:
            return self.read(relative) == bytes(data)
        except FileNotFoundError:
            return False

    def remove(self, relative: str) -> None:
        try:
            self.fs.rm_file(self.path(relative))
        except FileNotFoundError:
            pass
        except Exception as exc:  # noqa: BLE001
            raise self._fail(f"remove '{self.url}/{relative}'", exc) from None


def split_url(url: str) -> tuple[str, str]:
    """``s3://b/x/m.json`` -> (``s3://b/x``, ``m.json``)."""
    url = str(url)
    head, _, name = url.rpartition("/")
    return head, name


def read_bytes(path: str | Path, storage_options: dict | None = None) -> bytes:
    if is_remote(path):
        head, name = split_url(str(path))
        return Remote(head, storage_options).read(name)
    return Path(path).read_bytes()


def write_bytes(path: str | Path, data: bytes, storage_options: dict | None = None) -> None:
    """Local: temporary file beside it, then rename. Remote: one PUT."""
    if is_remote(path):
        head, name = split_url(str(path))
        Remote(head, storage_options).write(name, data)
        return

    atomic_write(Path(path), lambda f: f.write(data))


def is_file(path: str | Path, storage_options: dict | None = None) -> bool:
    if is_remote(path):
        head, name = split_url(str(path))
        return Remote(head, storage_options).exists(name)
    return Path(path).is_file()


def options_of(credentials: dict | None, fs_args: dict | None = None) -> dict[str, Any]:
    """A catalog entry's ``credentials`` and ``fs_args`` as fsspec storage options."""
    return {**(fs_args or {}), **(credentials or {})}


def located(path: str | Path, storage_options: dict | None = None) -> tuple[Remote | None, str | Path]:
    """Where a dataset's files live: its ``Remote`` and URL on an object store, None and a local ``Path``
    otherwise."""
    remote = Remote(str(path), storage_options) if is_remote(path) else None
    return remote, (remote.url if remote else Path(path))


class RunStateDataset(AbstractDataset[None, str]):
    """Where a run keeps its provenance records and its lock (provenance.py). Without this catalog entry
    (``run_state``) they are ``data/.provenance/`` and ``data/.eagle.lock`` of the project; with ``path:
    s3://bucket/.eagle`` (``credentials: s3``) they live in the bucket beside the data, so that a driver on another
    host (an ephemeral KubeRay head pod) finds what the last run made current, and two drivers on different hosts
    do not write the same data (docs/scale.md)."""

    def __init__(self, path: str, credentials: dict | None = None, fs_args: dict | None = None,
                 metadata: dict | None = None):
        self.path = str(path).rstrip("/")
        self.options = options_of(credentials, fs_args)
        self.metadata = metadata

    def load(self) -> str:
        return self.path

    def save(self, data) -> None:
        raise DatasetError("run_state is written by the run itself (provenance records and the lock)")

    def _exists(self) -> bool:
        return True

    def _describe(self) -> dict[str, Any]:
        return {"path": self.path}
