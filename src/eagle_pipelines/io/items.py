"""Per-item results (label maps, attributions, baseline maps, metric rows) addressed by the content of their inputs.

A producer's output is its **manifest** (``ManifestDataset``), and the manifest's catalog entry names the
**item store** it fills (``store: {path, kind}``): the producer node returns its jobs (``PendingItems``), and
saving them runs every job whose item the store lacks and writes the manifest. The store is no node input, so
kedro-viz draws the data flowing from the producer to its manifest and on to the consumers, never out of a store.

- the **item store** (an ``ItemStore``) is the cache the jobs are written into,
  one item at a time, atomically. Every item is filed under its key *and* the fingerprint of everything that made
  it (the image's bytes, the answer, the label map, the model, the parameters): ``<key>.<fingerprint>.npz``. An
  item whose input changed has another fingerprint, so it is computed anew and never read in place of the old
  one; the old one stays beside it (switching a parameter back costs nothing).
- the **manifest** (``ManifestDataset``, a JSON file, loaded as a ``Manifest``) is what the producer makes: which
  keys, with which fingerprints, make up the current run, which items were skipped and why, and the store they
  live in. Consumers take the manifest as input and read exactly its items: they never rebuild a folder name,
  and an item not in the manifest (another configuration's, another image's) cannot reach them.

A finished item is one that loads and whose files still have the SHA-256 recorded when they were written
(``<key>.<fingerprint>.sha256``, written last): an item file that is truncated, corrupt, or edited by hand into
another parseable file is named in the log, removed and computed again. A skip (an unreadable image, a target the answer does not name) is stored under the same
fingerprint, so it is retried as soon as its input changes.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from kedro.io.core import AbstractDataset, DatasetError
from kedro_datasets._typing import ImagePreview, TablePreview

from eagle_pipelines.core.attribution import Attribution
from eagle_pipelines.core.joint import image_view, load_record
from eagle_pipelines.core.images import read_image
from eagle_pipelines.core.plotting import attribution_display, colour_bar
from eagle_pipelines.core.regions import RegionMap
from eagle_pipelines.files import atomic_write
from eagle_pipelines.io import storage

logger = logging.getLogger(__name__)
FINGERPRINT_CHARS = 16
#: each item's checksum file: the SHA-256 of every file of the item, written after them
CHECKSUM_SUFFIX = ".sha256"


# --- fingerprints -------------------------------------------------------------------------------------------------
def _canonical(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return {"__array__": str(value.dtype), "shape": list(value.shape),
                "sha256": hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest()}
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if hasattr(value, "model_dump"):  # pydantic parameter models
        return _canonical(value.model_dump(mode="json"))
    return value


def fingerprint(*parts: Any) -> str:
    """A short, stable hash of JSON-able values and numpy arrays (arrays by dtype, shape and bytes)."""
    text = json.dumps(_canonical(list(parts)), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:FINGERPRINT_CHARS]


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:FINGERPRINT_CHARS]


# --- what a producer hands the store ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Skipped:
    """An item that cannot be made for a data reason (named): recorded, not retried until its input changes."""

    reason: str


@dataclass
class Job:
    """One item to make: its key, the fingerprint of its inputs, facts consumers need (``info``, JSON-able) and
    the function that makes it (returns the value or a ``Skipped``)."""

    key: str
    fp: str
    compute: Callable[[], Any]
    info: dict = field(default_factory=dict)


# --- value kinds --------------------------------------------------------------------------------------------------
class _Kind:
    suffixes: tuple[str, ...] = ()

    def write(self, base: Path, value) -> None:
        raise NotImplementedError

    def read(self, base: Path):
        raise NotImplementedError


class _LabelMaps(_Kind):
    suffixes = (".npz",)

    def write(self, base: Path, value: RegionMap) -> None:
        atomic_write(base.with_name(base.name + ".npz"), lambda f: np.savez_compressed(
            f, labels=value.labels, params=np.array(json.dumps(value.params, sort_keys=True))))

    def read(self, base: Path) -> RegionMap:
        with np.load(base.with_name(base.name + ".npz"), allow_pickle=False) as data:
            return RegionMap(data["labels"], json.loads(str(data["params"])))


class _Attributions(_Kind):
    suffixes = (".npz", ".json")

    def write(self, base: Path, value: Attribution) -> None:
        value.save(base.with_name(base.name + ".x"))  # Attribution.save replaces the suffix ".x"

    def read(self, base: Path) -> Attribution:
        return load_record(base.with_name(base.name + ".x"))  # a JointAttribution when its JSON says joint


class _Arrays(_Kind):
    suffixes = (".npz",)

    def write(self, base: Path, value) -> None:
        array, info = value if isinstance(value, tuple) else (value, {})
        atomic_write(base.with_name(base.name + ".npz"), lambda f: np.savez_compressed(
            f, map=np.asarray(array, dtype=np.float32), info=np.array(json.dumps(info, sort_keys=True))))

    def read(self, base: Path):
        with np.load(base.with_name(base.name + ".npz"), allow_pickle=False) as data:
            return data["map"], json.loads(str(data["info"]))


class _Records(_Kind):
    suffixes = (".json",)

    def write(self, base: Path, value: dict) -> None:
        text = json.dumps(value, sort_keys=True, default=float).encode()
        atomic_write(base.with_name(base.name + ".json"), lambda f: f.write(text))

    def read(self, base: Path) -> dict:
        return json.loads(base.with_name(base.name + ".json").read_text())


KINDS: dict[str, _Kind] = {"label_map": _LabelMaps(), "attribution": _Attributions(), "array": _Arrays(),
                           "record": _Records()}


# --- the store ----------------------------------------------------------------------------------------------------
class ItemStore:
    """Items of one kind under `path`, each at ``<key>.<fingerprint>`` plus the kind's suffixes."""

    def __init__(self, path: str | Path, kind: str, storage_options: dict | None = None):
        if kind not in KINDS:
            raise DatasetError(f"unknown item kind {kind!r} for {path}; known: {sorted(KINDS)}")
        #: an object store (``s3://...``): each file one PUT, the checksum file last (io/storage.py)
        self.remote, self.path = storage.located(path, storage_options)
        self.kind = kind
        self._kind = KINDS[kind]

    def _name(self, key: str, fp: str, suffix: str) -> str:
        """The item file's path relative to the store (remote stores)."""
        self._base(key, fp)  # checks the key
        return f"{key}.{fp}{suffix}"

    def has(self, key: str, fp: str) -> bool:
        """Whether every file of the item, its checksum file included, is there."""
        if self.remote:
            return all(self.remote.exists(self._name(key, fp, s)) for s in (*self._kind.suffixes, CHECKSUM_SUFFIX))
        return all(f.is_file() for f in self._files(key, fp))

    def _base(self, key: str, fp: str) -> Path:
        key = str(key)
        parts = Path(key).parts
        if not key or key.startswith("/") or ".." in parts or "\\" in key:
            raise DatasetError(f"item key {key!r} must be a relative path inside {self.path}")
        return Path(self.path) / f"{key}.{fp}" if self.remote else self.path / f"{key}.{fp}"

    def _files(self, key: str, fp: str) -> list[Path]:
        """The item's files: the kind's, then its checksum file (the last one written)."""
        base = self._base(key, fp)
        return [base.with_name(base.name + s) for s in (*self._kind.suffixes, CHECKSUM_SUFFIX)]

    def _checksums(self, key: str, fp: str) -> dict[str, str]:
        """Suffix -> SHA-256 of each of the kind's files of the item as they are now."""
        base = self._base(key, fp)
        return {s: hashlib.sha256(base.with_name(base.name + s).read_bytes()).hexdigest()
                for s in self._kind.suffixes}

    def _verify(self, key: str, fp: str) -> None:
        """A CorruptItemError unless every file of the item has the SHA-256 recorded when it was written."""
        base = self._base(key, fp)
        record = base.with_name(base.name + CHECKSUM_SUFFIX)
        try:
            recorded = json.loads(record.read_text())["sha256"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CorruptItemError(f"item '{key}' in '{self.path}': its checksum file '{record.name}' cannot be "
                                   f"read ({type(exc).__name__})") from None
        for suffix, digest in self._checksums(key, fp).items():
            if recorded.get(suffix) != digest:
                raise CorruptItemError(f"item '{key}' in '{self.path}': '{base.name}{suffix}' does not match the "
                                       f"SHA-256 recorded when it was written (edited or damaged since)")

    def _skip_file(self, key: str, fp: str) -> Path:
        base = self._base(key, fp)
        return base.with_name(base.name + ".skipped.json")

    def read(self, key: str, fp: str):
        """The item, or FileNotFoundError when it is not there (a corrupt file raises, naming it)."""
        if self.remote:
            return self._read_remote(key, fp)
        files = self._files(key, fp)
        missing = [f for f in files if not f.is_file()]
        if missing:
            raise FileNotFoundError(f"item '{key}' ({fp}) is not in the store: '{missing[0]}' does not exist")
        self._verify(key, fp)
        try:
            return self._kind.read(self._base(key, fp))
        except FileNotFoundError:
            raise
        except Exception as exc:  # noqa: BLE001 - any read failure means a damaged file, named below
            raise CorruptItemError(f"item '{key}' in '{self.path}' cannot be read ({type(exc).__name__}: "
                                   f"{str(exc).strip()[:200]})") from None

    def _read_remote(self, key: str, fp: str):
        """A remote item: its checksum file and files fetched (one GET each), checked, then read by the kind from
        a temporary folder."""
        import tempfile

        try:
            record = self.remote.read(self._name(key, fp, CHECKSUM_SUFFIX))
        except FileNotFoundError:
            raise FileNotFoundError(f"item '{key}' ({fp}) is not in the store: "
                                    f"'{self.path}/{key}.{fp}{CHECKSUM_SUFFIX}' does not exist") from None
        try:
            recorded = json.loads(record)["sha256"]
        except (ValueError, KeyError, TypeError) as exc:
            raise CorruptItemError(f"item '{key}' in '{self.path}': its checksum file cannot be read "
                                   f"({type(exc).__name__})") from None
        blobs = {}
        for suffix in self._kind.suffixes:
            try:
                blobs[suffix] = self.remote.read(self._name(key, fp, suffix))
            except FileNotFoundError:
                raise FileNotFoundError(f"item '{key}' ({fp}) is not in the store: "
                                        f"'{self.path}/{key}.{fp}{suffix}' does not exist") from None
            if recorded.get(suffix) != hashlib.sha256(blobs[suffix]).hexdigest():
                raise CorruptItemError(f"item '{key}' in '{self.path}': '{key}.{fp}{suffix}' does not match the "
                                       f"SHA-256 recorded when it was written (edited or damaged since)")
        with tempfile.TemporaryDirectory(prefix="eagle-item-") as tmp:
            base = Path(tmp) / "item"
            for suffix, blob in blobs.items():
                base.with_name(base.name + suffix).write_bytes(blob)
            try:
                return self._kind.read(base)
            except Exception as exc:  # noqa: BLE001 - any read failure means a damaged file, named below
                raise CorruptItemError(f"item '{key}' in '{self.path}' cannot be read ({type(exc).__name__}: "
                                       f"{str(exc).strip()[:200]})") from None

    def _remove(self, key: str, fp: str) -> None:
        if self.remote:
            for suffix in (CHECKSUM_SUFFIX, *self._kind.suffixes):  # the checksum first: no longer finished
                self.remote.remove(self._name(key, fp, suffix))
        else:
            for file in self._files(key, fp):
                file.unlink(missing_ok=True)

    def get(self, key: str, fp: str):
        """The finished item (one that loads), or None. A damaged item is logged by name, removed and None
        returned, so that it is computed again."""
        if not self.remote and not self.has(key, fp):
            return None
        try:
            return self.read(key, fp)
        except FileNotFoundError:
            if self.remote:
                return None
            raise
        except CorruptItemError as exc:
            logger.warning("%s; removing it to compute it again", exc)
            self._remove(key, fp)
            return None

    def put(self, key: str, fp: str, value) -> None:
        """Writes the item's files, then their checksums (so that an item cut off while written is never
        finished)."""
        if self.remote:
            return self._put_remote(key, fp, value)
        base = self._base(key, fp)
        checksum = base.with_name(base.name + CHECKSUM_SUFFIX)
        checksum.unlink(missing_ok=True)
        self._kind.write(base, value)
        text = json.dumps({"key": str(key), "fingerprint": fp, "sha256": self._checksums(key, fp)},
                          sort_keys=True).encode()
        atomic_write(checksum, lambda f: f.write(text))
        self._skip_file(key, fp).unlink(missing_ok=True)

    def _put_remote(self, key: str, fp: str, value) -> None:
        """The kind writes its files into a temporary folder; each is uploaded in one PUT, then the checksum file
        (an item cut off before it is not finished, and is made again)."""
        import tempfile

        self.remote.remove(self._name(key, fp, CHECKSUM_SUFFIX))
        with tempfile.TemporaryDirectory(prefix="eagle-item-") as tmp:
            base = Path(tmp) / "item"
            self._kind.write(base, value)
            blobs = {s: base.with_name(base.name + s).read_bytes() for s in self._kind.suffixes}
        for suffix, blob in blobs.items():
            self.remote.write(self._name(key, fp, suffix), blob)
        text = json.dumps({"key": str(key), "fingerprint": fp,
                           "sha256": {s: hashlib.sha256(b).hexdigest() for s, b in blobs.items()}},
                          sort_keys=True).encode()
        self.remote.write(self._name(key, fp, CHECKSUM_SUFFIX), text)
        self.remote.remove(self._name(key, fp, ".skipped.json"))

    def skipped(self, key: str, fp: str) -> str | None:
        if self.remote:
            try:
                return json.loads(self.remote.read(self._name(key, fp, ".skipped.json")))["reason"]
            except FileNotFoundError:
                return None
            except (ValueError, KeyError, TypeError):
                self.remote.remove(self._name(key, fp, ".skipped.json"))
                return None
        file = self._skip_file(key, fp)
        if not file.is_file():
            return None
        try:
            return json.loads(file.read_text())["reason"]
        except (ValueError, KeyError, OSError):
            file.unlink(missing_ok=True)
            return None

    def skip(self, key: str, fp: str, reason: str) -> None:
        text = json.dumps({"key": key, "fingerprint": fp, "reason": reason}).encode()
        if self.remote:
            self.remote.write(self._name(key, fp, ".skipped.json"), text)
            return
        atomic_write(self._skip_file(key, fp), lambda f: f.write(text))


class CorruptItemError(DatasetError):
    """A stored item whose file is truncated or damaged; the message names the item and the store."""


# --- what a job may raise as bad data (io/executors.py: run_jobs) ------------------------------------------------
DATA_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError)


def compose_of(manifest: Manifest) -> str:
    """Where the regions of a superpixel manifest (or of a consumer that recorded its params) were made
    (``superpixels.compose``)."""
    return manifest.params.get("superpixels", {}).get("compose", "pixel_values")


# --- the manifest -------------------------------------------------------------------------------------------------
class Manifest:
    """What a producer made in its last run: ``items`` (key -> fingerprint and facts), ``skipped`` and ``failed``
    (key -> reason and facts), the ``params`` it used, and read access to exactly those items."""

    def __init__(self, data: dict, source: str = "manifest", storage_options: dict | None = None):
        for name in ("store", "kind", "items"):
            if name not in data:
                raise DatasetError(f"{source}: not a manifest (no '{name}')")
        self.data = data
        self.source = source
        self.store = ItemStore(data["store"], data["kind"], storage_options)

    @property
    def items(self) -> dict[str, dict]:
        return self.data["items"]

    @property
    def skipped(self) -> dict[str, dict]:
        return self.data.get("skipped", {})

    @property
    def failed(self) -> dict[str, dict]:
        return self.data.get("failed", {})

    @property
    def params(self) -> dict:
        return self.data.get("params", {})

    def keys(self) -> list[str]:
        return list(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def __contains__(self, key: str) -> bool:
        return key in self.items

    def __iter__(self) -> Iterator[str]:
        return iter(self.items)

    def info(self, key: str) -> dict:
        return self.items[key]

    def load(self, key: str):
        """The item `key` as its producer wrote it; a missing or damaged file is an error naming the item and
        how to make it again (it is never replaced by another item)."""
        if key not in self.items:
            raise KeyError(f"{self.source}: no item '{key}'")
        try:
            return self.store.read(key, self.items[key]["fp"])
        except (FileNotFoundError, CorruptItemError) as exc:
            raise DatasetError(f"{self.source}: {exc}. Run the producer again (kedro run --pipeline=<name> "
                               f"--only-missing-outputs makes what is missing)") from None

    def not_made(self) -> dict[str, str]:
        """key -> reason of every item that was skipped or failed."""
        return {k: v["reason"] for k, v in {**self.skipped, **self.failed}.items()}


class ManifestDataset(AbstractDataset[Any, Manifest]):
    """A producer's manifest (JSON) and the item store it fills. Saving a ``PendingItems`` (what a producer node
    returns) makes every item the store lacks, one at a time, then writes the manifest. ``exists`` only when every
    listed item loads from its store, so a deleted or damaged item reruns its producer under
    ``--only-missing-outputs``.

    Args:
        filepath: the manifest file, local or an fsspec URL (``s3://bucket/prefix/x.json``: one PUT).
        store: the item store the producer fills: ``{path: <folder or fsspec URL>, kind: label_map | attribution
            | array | record}``.
        credentials: fsspec storage options of a remote file and of the store it lists (``credentials: s3``).
        fs_args: further storage options.
    """

    def __init__(self, filepath: str, store: dict | None = None, credentials: dict | None = None,
                 fs_args: dict | None = None, metadata: dict | None = None):
        self._options = storage.options_of(credentials, fs_args)
        self._filepath = filepath if storage.is_remote(filepath) else Path(filepath)
        self._store = dict(store) if store else None
        if self._store is not None and (set(self._store) != {"path", "kind"} or self._store["kind"] not in KINDS):
            raise DatasetError(f"manifest '{filepath}': store must be {{path: <folder>, kind: one of "
                               f"{sorted(KINDS)}}}, not {store!r}")
        self.metadata = metadata

    def load(self) -> Manifest:
        if not storage.is_remote(self._filepath) and not self._filepath.is_file():
            raise DatasetError(f"manifest '{self._filepath}' does not exist: its producer has not run")
        try:
            text = storage.read_bytes(self._filepath, self._options)
        except FileNotFoundError:
            raise DatasetError(f"manifest '{self._filepath}' does not exist: its producer has not run") from None
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise DatasetError(f"manifest '{self._filepath}' is damaged ({exc}); run its producer again") from None
        return Manifest(data, source=str(self._filepath), storage_options=self._options)

    def save(self, data) -> None:
        """`data`: a manifest (dict or ``Manifest``), or a producer's ``PendingItems`` (io/executors.py), run here."""
        if callable(getattr(data, "run", None)):  # PendingItems
            if self._store is None:
                raise DatasetError(f"manifest '{self._filepath}' names no item store (store: {{path, kind}} in its "
                                   "catalog entry), so its producer's items have nowhere to go")
            data = data.run(ItemStore(self._store["path"], self._store["kind"], self._options))
        data = data.data if isinstance(data, Manifest) else data
        text = json.dumps(data, indent=1, sort_keys=True, default=_json_default).encode()
        storage.write_bytes(self._filepath, text, self._options)

    def _exists(self) -> bool:
        if not storage.is_file(self._filepath, self._options):
            return False
        try:
            manifest = self.load()
        except DatasetError:
            return False
        # every item must load (a damaged one is named, removed, and so made again by the producer)
        return all(manifest.store.get(k, v["fp"]) is not None for k, v in manifest.items.items())

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), **({"store": self._store} if self._store else {})}

    def preview(self) -> TablePreview:
        """kedro-viz: the items (first 20) and the skipped ones (first 5) as a table."""
        manifest = self.load()
        rows = [{"item": k, "status": "made", **{c: v.get(c) for c in ("level", "image_id", "target")}}
                for k, v in list(manifest.items.items())[:20]]
        rows += [{"item": k, "status": f"skipped: {v['reason']}"} for k, v in list(manifest.skipped.items())[:5]]
        columns = ["item", "status", "level", "image_id", "target"]
        return TablePreview({"index": list(range(len(rows))), "columns": columns,
                             "data": [[r.get(c) for c in columns] for r in rows]})


class AttributionManifestDataset(ManifestDataset):
    """A manifest of attributions; kedro-viz previews the first one as the reports draw it: its map over its image
    (``core.plotting.attribution_display``: viridis on a greyscale copy, the top regions lit and numbered, a colour
    bar), titled with the explained words.

    Args:
        filepath: the manifest file.
        images: the COCO-layout folder the attributions' images come from (``annotations/instances.json`` and the
            images); by default the splits under ``data/01_raw/<namespace>/`` (the manifest's folder name) are
            searched. An image is used only when its bytes still hash to the attribution's ``image_sha``; without
            one the map is drawn over grey.
    """

    def __init__(self, filepath: str, store: dict | None = None, images: str | None = None,
                 credentials: dict | None = None, fs_args: dict | None = None, metadata: dict | None = None):
        super().__init__(filepath, store, credentials, fs_args, metadata)
        self._images = images

    def _image_of(self, info: dict) -> np.ndarray | None:
        """The photo an attribution explains, found by its image id and checked against its byte hash."""
        if self._images is not None:
            roots = [Path(self._images)]
        elif storage.is_remote(self._filepath):
            roots = []
        else:
            raw = self._filepath.parents[2] / "01_raw" / self._filepath.parent.name
            roots = [f.parents[1] for f in sorted(raw.glob("**/annotations/instances.json"))] if raw.is_dir() else []
        for root in roots:
            try:
                index = json.loads((root / "annotations" / "instances.json").read_text())
                name = next(i["file_name"] for i in index.get("images", []) if i["id"] == int(info["image_id"]))
                file = next(f for f in (root / "images" / name, root / name) if f.is_file())
                data = file.read_bytes()
            except (OSError, ValueError, StopIteration, KeyError, TypeError):
                continue
            if info.get("image_sha") and content_hash(data) != info["image_sha"]:
                continue
            try:
                return read_image(file, data=data)
            except ValueError:
                continue
        return None

    def preview(self) -> ImagePreview:
        import base64
        import io

        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        manifest = self.load()
        if not manifest.items:
            return ImagePreview("")
        key, info = next(iter(manifest.items.items()))
        a = image_view(manifest.load(key))  # a joint record: its regions in their joint order
        photo = self._image_of(info)
        image = photo if photo is not None else np.full((*a.labels.shape, 3), 128, np.uint8)
        shown = attribution_display(image, a.saliency(), labels=a.labels, order=a.order)
        fig, ax = plt.subplots(figsize=(4.2, 3.6))
        ax.imshow(shown.rgb)
        ax.axis("off")
        words = " ".join(w.strip() for w in a.target_words)
        ax.set_title(f"{key}: \u201c{words[:60]}\u201d", fontsize=9)
        colour_bar(fig, ax, label="saliency (1: ranked first)")
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
        plt.close(fig)
        return ImagePreview(base64.b64encode(buf.getvalue()).decode("ascii"))


def _json_default(value):
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)
