"""An evaluation split on an fsspec filesystem (``memory://`` here; ``s3://`` in tests/test_s3_ray.py): saved file
by file with ``split.json`` last, loaded with each image read on demand, and its content stamps checked as for a
local folder (an edited image makes the split missing; a save cut off before ``split.json`` leaves no split)."""

from __future__ import annotations

import json

import fsspec
import numpy as np
import pytest

from eagle_pipelines.data.coco import CocoFormatError
from eagle_pipelines.io.split_dataset import CocoSplitDataset
from eagle_pipelines.io.storage import StorageError


@pytest.fixture
def url(memory_root):
    return f"{memory_root}/01_raw/eval"


def _split(n: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    images = {f"eval_{i:06d}": rng.integers(0, 255, size=(40, 48, 3), dtype=np.uint8) for i in range(n)}
    instances = {"images": [{"id": i + 1, "file_name": f"eval_{i:06d}.png", "width": 48, "height": 40}
                            for i in range(n)], "annotations": [], "categories": []}
    return images, instances, {"images": instances["images"], "annotations": []}


def test_a_split_on_an_object_store_loads_as_the_local_one(url, tmp_path):
    images, instances, captions = _split()
    remote, local = CocoSplitDataset(url), CocoSplitDataset(str(tmp_path / "eval"))
    assert not remote.exists()
    remote.save((images, instances, captions))
    local.save((images, instances, captions))
    assert remote.exists() and not remote.changed_files()
    assert remote.stamp() == local.stamp()  # the same content stamps
    fs = fsspec.filesystem("memory")
    assert sorted(p.rsplit("/eval/", 1)[1] for p in fs.find(url)) == sorted(
        p.relative_to(tmp_path / "eval").as_posix() for p in (tmp_path / "eval").rglob("*") if p.is_file())
    split, there = remote.load(), local.load()
    assert split.captions == there.captions
    for image_id in (1, 2, 3):
        got, want = split.image(image_id), there.image(image_id)
        assert got.sha == want.sha and np.array_equal(got.pixels, want.pixels)
    assert split.image_file(2) == f"{url}/images/eval_000001.png"
    # the split travels to another process (a Ray worker) without a connection, and reads there
    import pickle

    shipped = pickle.loads(pickle.dumps(split))
    assert shipped.remote._fs is None
    assert np.array_equal(shipped.pixels(1, there.image(1).sha), there.image(1).pixels)


def test_an_edited_object_makes_the_split_missing_and_a_save_remakes_it(url, caplog):
    images, instances, captions = _split()
    dataset = CocoSplitDataset(url)
    dataset.save((images, instances, captions))
    fs = fsspec.filesystem("memory")
    fs.pipe_file(f"{url}/images/eval_000002.png", b"not a png")
    assert not dataset.exists() and dataset.changed_files() == ["images/eval_000002.png"]
    with pytest.raises(CocoFormatError, match="eval_000002.png"):
        dataset.load().image(3)
    dataset.save((images, instances, captions))
    assert dataset.exists() and dataset.load().image(3).pixels.shape == (40, 48, 3)
    # a smaller split: the image it no longer has is removed, split.json written last
    smaller = _split(2)
    dataset.save(smaller)
    assert not fs.exists(f"{url}/images/eval_000002.png") and dataset.exists()
    assert json.loads(fs.cat_file(f"{url}/split.json"))["files"] == 4


def test_a_save_cut_off_before_split_json_leaves_no_split(url, monkeypatch):
    images, instances, captions = _split()
    dataset = CocoSplitDataset(url)
    dataset.save((images, instances, captions))
    from eagle_pipelines.io import storage

    write = storage.Remote.write

    def failing(self, relative, data):
        if relative.startswith("images/eval_000001"):
            raise StorageError("object store at memory:// failed to write (stopped)")
        write(self, relative, data)

    monkeypatch.setattr(storage.Remote, "write", failing)
    with pytest.raises(StorageError):
        dataset.save(_split(seed=1))  # other images: the split is rewritten, and cut off
    monkeypatch.undo()
    assert not dataset.exists()  # no split.json: not a split, remade by --only-missing-outputs
    assert dataset.changed_files() == ["split.json"]
