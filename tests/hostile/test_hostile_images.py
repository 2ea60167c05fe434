"""One corpus of hostile images (tests/hostile_corpus.py) through every path that decodes an image, with the same
verdict expected for each case on every path.

Paths: ``explain()``/``eagle-explain``'s decoder (``as_rgb`` and the size check, before the model), a COCO-format
folder (eagle_coco's split: prepared, saved, loaded, each image read as the answer stage reads it), a reference
list on that folder, a local MMVP copy, a RePOPE list on a COCO folder, and a folder of video frames. Each dataset
folder holds the hostile file and one good image of the same format: the good one must come out right whatever the
other is (the rest of the run finishes).

Verdicts: ``OK`` (exactly the expected pixels: PIL's decoding turned upright by the EXIF orientation, 16-bit and
float images scaled), ``clear error`` (a ValueError naming the file and the reason, raised when its item is read;
the run goes on), ``crash`` (the split cannot be prepared or saved: the whole run stops; or another exception),
``silent wrong`` (pixels other than the expected ones, or pixels for an image that must be refused), ``unclear
error`` (an error that does not name the file or the reason), ``lost`` (the good image of the folder is lost with
the bad one).

The slow test runs eagle_coco (``kedro run``) on a COCO folder with one truncated image: the run finishes and
skipped.csv, the report and run.json name it.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from tests.hostile_corpus import COLOURS, Case, build, shapes_image
from tests.conftest import MODEL_DIR

PATHS = ("explain", "coco", "reference_list", "mmvp", "repope", "video")
OK, CLEAR, CRASH, WRONG, UNCLEAR, LOST = "OK", "clear error", "crash", "silent wrong", "unclear error", "lost"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile_images") / "photos"
    return folder, build(folder)


def expected_verdict(case: Case) -> str:
    return OK if case.kind == "ok" or case.stage == "model" else CLEAR


def expected_pixels(case: Case, path: Path) -> np.ndarray:
    """What the image must decode to: the case's own pixels where given, else PIL's decoding (the first frame),
    turned upright by its EXIF orientation, palette transparency through RGBA."""
    if case.pixels is not None:
        return case.pixels
    with Image.open(path) as opened:
        image = ImageOps.exif_transpose(opened)
        if image.mode == "P" and "transparency" in image.info:
            image = image.convert("RGBA")
        return np.asarray(image.convert("RGB"))


def _place(case: Case, corpus_folder: Path, dst: Path) -> None:
    src = case.path(corpus_folder)
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.is_symlink():
        target = os.readlink(src)
        os.symlink(dst.name if target == src.name else target, dst)
    elif src.is_dir():
        dst.mkdir()
    else:
        mode = src.stat().st_mode & 0o777
        os.chmod(src, 0o600)
        try:
            shutil.copyfile(src, dst)
        finally:
            os.chmod(src, mode)
        os.chmod(dst, mode)


def _good(suffix: str, dst: Path) -> np.ndarray:
    """A good image of the same format beside the hostile one; returns its expected pixels."""
    pixels = shapes_image(30)
    kind = {".jpg": "JPEG", ".tif": "TIFF", ".gif": "GIF"}.get(suffix, "PNG")
    Image.fromarray(pixels).save(dst, format=kind, **({"quality": 95} if kind == "JPEG" else {}))
    with Image.open(dst) as opened:
        return np.asarray(opened.convert("RGB"))


def _suffix(case: Case) -> str:
    return "." + case.name.rsplit(".", 1)[-1]


def _size(case: Case, corpus_folder: Path) -> tuple[int, int]:
    """(width, height) the annotation gives the image: its upright size where it decodes, else 112 x 112."""
    if expected_verdict(case) == OK:
        pixels = expected_pixels(case, case.path(corpus_folder))
        return pixels.shape[1], pixels.shape[0]
    return 112, 112


def _coco_folder(root: Path, case: Case, corpus_folder: Path, images: str = "val2017",
                 instances_file: str = "annotations/instances_val2017.json") -> tuple[str, np.ndarray]:
    """A COCO-format folder with the case's file (image 1) and a good one (image 2); returns the good one's name
    and pixels."""
    suffix = _suffix(case)
    good_name = f"good{suffix}"
    _place(case, corpus_folder, root / images / case.name)
    good = _good(suffix, root / images / good_name)
    width, height = _size(case, corpus_folder)
    instances = {"images": [{"id": 1, "file_name": case.name, "width": width, "height": height},
                            {"id": 2, "file_name": good_name, "width": 112, "height": 112}],
                 "annotations": [{"id": 10 + i, "image_id": i, "category_id": 1, "bbox": [2, 2, 8, 8], "area": 64,
                                  "iscrowd": 0, "segmentation": [[2, 2, 10, 2, 10, 10, 2, 10]]} for i in (1, 2)],
                 "categories": [{"id": 1, "name": "thing", "supercategory": ""}]}
    (root / instances_file).parent.mkdir(parents=True, exist_ok=True)
    (root / instances_file).write_text(json.dumps(instances))
    captions = {"images": instances["images"],
                "annotations": [{"id": i, "image_id": i, "caption": "a thing"} for i in (1, 2)]}
    (root / "annotations/captions_val2017.json").write_text(json.dumps(captions))
    return good_name, good


def _split(root: Path, prepared: tuple):
    from eagle_pipelines.io.split_dataset import CocoSplitDataset

    dataset = CocoSplitDataset(str(root / "split"))
    dataset.save(prepared)
    return dataset.load()


def _coco_split(root: Path, case: Case, corpus_folder: Path):
    from eagle_pipelines.data.coco_sample import CocoSampleParams, EvalDataParams
    from eagle_pipelines.data.params import ShapesParams
    from eagle_pipelines.io.coco_dataset import CocoFolderDataset
    from eagle_pipelines.pipelines.eagle_coco.nodes import prepare_eval_split

    _coco_folder(root / "coco", case, corpus_folder)
    folder = CocoFolderDataset(str(root / "coco"), image_suffix=_suffix(case)).load()
    prepared = prepare_eval_split(EvalDataParams(source="coco", coco=CocoSampleParams(images=2)),
                                  ShapesParams(colours=COLOURS), folder, None)
    return _split(root, prepared), {1: case.name, 2: f"good{_suffix(case)}"}


def _reference_split(root: Path, case: Case, corpus_folder: Path):
    from eagle_pipelines.data.reference_list import reference_eval_split
    from eagle_pipelines.io.coco_dataset import CocoFolderDataset

    _coco_folder(root / "coco", case, corpus_folder)
    folder = CocoFolderDataset(str(root / "coco"), image_suffix=_suffix(case)).load()
    entries = [{"image_path": f"val2017/{name}", "generated_ids": [[5, 6, 7]], "selected_interpretation_token_id": [0],
                "generate_sentence": "a thing", "gt_caption": ["a thing"]}
               for name in (case.name, f"good{_suffix(case)}")]
    prepared = reference_eval_split(entries, folder.images(), folder.instances(), source="list.json")
    return _split(root, prepared), {1: case.name, 2: f"good{_suffix(case)}"}


def _mmvp_split(root: Path, case: Case, corpus_folder: Path):
    from eagle_pipelines.data.params import ShapesParams
    from eagle_pipelines.parameters import EagleMmvpParams
    from eagle_pipelines.io.coco_dataset import MmvpSourceDataset
    from eagle_pipelines.pipelines.eagle_mmvp.nodes import prepare_questions

    suffix = _suffix(case)
    mmvp = root / "mmvp"
    _place(case, corpus_folder, mmvp / "MMVP Images" / f"1{suffix}")
    _good(suffix, mmvp / "MMVP Images" / f"2{suffix}")
    (mmvp / "Questions.csv").write_text("Index,Question,Options,Correct Answer\n"
                                        "1,Is it left or right?,(a) Left (b) Right,(a)\n"
                                        "2,Is it left or right?,(a) Left (b) Right,(b)\n")
    source = MmvpSourceDataset(str(mmvp), image_suffix=suffix).load()
    prepared, _ = prepare_questions(EagleMmvpParams(source="mmvp"), ShapesParams(colours=COLOURS), source, None)
    return _split(root, prepared), {1: f"1{suffix}", 2: f"2{suffix}"}


def _repope_split(root: Path, case: Case, corpus_folder: Path):
    from eagle_pipelines.io.coco_dataset import RepopeSourceDataset
    from eagle_pipelines.pipelines.eagle_repope.nodes import repope_question_split

    instances = "annotations/instances_val2014.json"
    _coco_folder(root / "coco", case, corpus_folder, images="val2014", instances_file=instances)
    questions = root / "repope.json"
    question = "Is there a thing in the image?"
    questions.write_text("\n".join(json.dumps({"question_id": k, "image": name, "text": question, "label": "yes"})
                                   for k, name in enumerate((case.name, f"good{_suffix(case)}"), start=1)))
    source = RepopeSourceDataset(str(questions), str(root / "coco"), images="val2014", instances=instances,
                                 image_suffix=_suffix(case)).load()
    images, subset, _ = repope_question_split(source, None)
    return _split(root, (images, subset, None)), {1: case.name, 2: f"good{_suffix(case)}"}


SPLITS = {"coco": _coco_split, "reference_list": _reference_split, "mmvp": _mmvp_split, "repope": _repope_split}


def _named(exc: BaseException, name: str, case: Case) -> bool:
    text = str(exc)
    shown = name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    reasons = [r for r in (case.reason, case.api_reason, case.alone_reason) if r]
    return (name in text or shown in text) and any(r in text for r in reasons)


def _judge(pixels_or_exc, case: Case, name: str, truth: np.ndarray | None) -> str:
    if isinstance(pixels_or_exc, BaseException):
        exc = pixels_or_exc
        if not isinstance(exc, ValueError):
            return CRASH
        if expected_verdict(case) == OK:
            return LOST  # a good image refused
        return CLEAR if _named(exc, name, case) else UNCLEAR
    if expected_verdict(case) != OK:
        return WRONG
    return OK if truth is not None and np.array_equal(pixels_or_exc, truth) else WRONG


def verdict(path: str, case: Case, corpus_folder: Path, root: Path) -> str:
    """How `path` takes the case (see the module docstring)."""
    truth = expected_pixels(case, case.path(corpus_folder)) if expected_verdict(case) == OK else None
    if path == "explain":
        from eagle_pipelines.core.images import as_rgb, check_size

        try:
            pixels = as_rgb(case.path(corpus_folder))
            try:
                check_size(pixels)
            except ValueError as exc:  # explain() names the file it was given
                raise ValueError(f"'{case.path(corpus_folder)}': {exc}") from None
        except BaseException as exc:  # noqa: BLE001 - judged
            return _judge(exc, case, case.name, truth)
        return _judge(pixels, case, case.name, truth)
    if path == "video":
        from eagle_pipelines.models.video import read_frames

        folder = root / "frames"
        for k in range(2):
            _place(case, corpus_folder, folder / f"frame_{k:02d}{_suffix(case)}")
        try:
            clip = read_frames(str(folder), n_frames=2)
        except BaseException as exc:  # noqa: BLE001 - judged
            return _judge(exc, case, "frame_00", truth)
        return _judge(clip.frames[0], case, "frame_00", truth)
    try:
        split, names = SPLITS[path](root, case, corpus_folder)
    except BaseException:  # noqa: BLE001 - the split cannot be made: the whole run stops
        return CRASH
    from eagle_pipelines.data.coco import CocoFormatError

    try:
        good = split.image(2).pixels
        if good.shape != (112, 112, 3):
            return LOST
    except BaseException:  # noqa: BLE001 - the good image is lost with the bad one
        return LOST
    try:
        pixels = split.image(1).pixels
    except CocoFormatError as exc:
        return _judge(exc, case, names[1], truth)
    except BaseException as exc:  # noqa: BLE001 - judged
        return _judge(exc, case, names[1], truth)
    return _judge(pixels, case, names[1], truth)


def verdict_table(corpus_folder: Path, cases: list[Case], root: Path, paths=PATHS) -> dict[str, dict[str, str]]:
    """path -> case name -> verdict."""
    table = {}
    for path in paths:
        table[path] = {}
        for k, case in enumerate(cases):
            table[path][case.name] = verdict(path, case, corpus_folder, root / path / str(k))
    return table


@pytest.mark.parametrize("path", PATHS)
def test_every_path_gives_each_hostile_image_the_same_verdict(corpus, tmp_path, path, capsys):
    folder, cases = corpus
    table = verdict_table(folder, cases, tmp_path, paths=(path,))[path]
    wrong = {name: got for name, got in table.items()
             if got != expected_verdict(next(c for c in cases if c.name == name))}
    with capsys.disabled():
        print(f"\n{path}: " + ", ".join(f"{v} {n}" for v, n in sorted(Counter(table.values()).items())))
    assert not wrong, "\n".join(f"{name}: {got} (expected {expected_verdict(next(c for c in cases if c.name == name))})"
                                for name, got in wrong.items())
    assert len(table) == len(cases) >= 28


def test_exif_orientation_turns_a_phone_photo_upright_everywhere(corpus):
    from eagle_pipelines.core.images import SourceImage, as_rgb, read_image

    folder, _ = corpus
    path = folder / "exif_rotated.jpg"
    upright = read_image(path)
    assert upright.shape == (112, 80, 3)  # stored 80 x 112 sideways
    np.testing.assert_allclose(upright.astype(float).mean(), shapes_image(20)[:, :80].astype(float).mean(), atol=3)
    assert np.array_equal(as_rgb(Image.open(path)), upright)
    assert SourceImage(str(path)).size() == (80, 112) and np.array_equal(SourceImage(str(path))(), upright)


def test_a_split_whose_bytes_changed_counts_as_missing_and_saving_never_decodes(corpus, tmp_path, caplog):
    """split.json's content stamps: an edited, truncated or removed file makes the split missing for Kedro
    (``--only-missing-outputs`` remakes it); saving copies a source file's bytes, even a damaged one, and records a
    file it cannot read with its reason."""
    from eagle_pipelines.core.images import SourceImage
    from eagle_pipelines.data.coco import CocoFormatError
    from eagle_pipelines.io.split_dataset import CocoSplitDataset

    folder, _ = corpus
    names = ["shapes.png", "truncated.png", "bomb.png", "broken_link.png"]
    images = {n.rsplit(".", 1)[0]: SourceImage(str(folder / n)) for n in names}
    instances = {"images": [{"id": k, "file_name": n, "width": 112, "height": 112} for k, n in enumerate(names, 1)],
                 "annotations": [], "categories": []}
    dataset = CocoSplitDataset(str(tmp_path / "split"))
    dataset.save((images, instances, None))
    stamps = json.loads((tmp_path / "split/split.json").read_text())
    assert sorted(stamps["file_sha256"]) == ["annotations/instances.json", "images/bomb.png", "images/shapes.png",
                                             "images/truncated.png"]
    assert "is a broken symbolic link" in stamps["unreadable"]["broken_link.png"]
    for n in ("shapes.png", "truncated.png", "bomb.png"):  # the bytes as they are
        assert (tmp_path / "split/images" / n).read_bytes() == (folder / n).read_bytes()
    split = dataset.load()
    assert split.image(1).pixels.shape == (112, 112, 3)
    for image_id, reason in ((2, "cannot be read as an image"), (3, "decompression bomb"),
                             (4, "is a broken symbolic link")):
        with pytest.raises(CocoFormatError, match=reason) as error:
            split.image(image_id)
        assert names[image_id - 1] in str(error.value)
    assert dataset.exists() and not dataset.changed_files()

    shown = tmp_path / "split/images/shapes.png"
    whole = shown.read_bytes()
    shown.write_bytes(whole[: len(whole) // 2])  # truncated after the run
    assert not dataset.exists() and dataset.changed_files() == ["images/shapes.png"]
    assert "images/shapes.png changed since the split was saved" in caplog.text
    dataset.save((images, instances, None))  # what --only-missing-outputs does: the split is made again
    assert shown.read_bytes() == whole and dataset.exists()
    (tmp_path / "split/images/extra.png").write_bytes(whole)
    assert dataset.changed_files() == ["images/extra.png"]


@pytest.mark.slow
def test_a_coco_folder_with_a_truncated_image_runs_to_the_end_and_names_it(project, tmp_path, tiny_model,
                                                                           tiny_processor):
    """eagle_coco (paper environment) on a COCO folder whose image 2 is truncated: the split is saved, the run
    finishes with the other images, and skipped.csv, the report and run.json name the file and the reason."""
    import pandas as pd
    from kedro.framework.session import KedroSession

    from eagle_pipelines.models.qwen_vl import QwenVLAdapter
    from tests.coco_fixtures import make_coco

    make_coco(tmp_path / "coco", n_plain=1)  # annotated images 1, 2, 4 and 10
    bad = tmp_path / "coco/val2017/000000000002.jpg"
    bad.write_bytes(bad.read_bytes()[:300])
    QwenVLAdapter(tiny_model, tiny_processor).save(project / MODEL_DIR)
    params = {"model": "toy", "coco_root": str(tmp_path / "coco"), "eval_data": {"coco": {"images": 10}},
              "eagle_coco": {"max_new_tokens": 4, "prompt": "Describe the image."}, "superpixels": {"n_segments": 6},
              "evaluation": {"pixel_steps": 4}, "reporting": {"figure_samples": 1}, "baselines": {"methods": []},
              "attribution": {"end_token": False}}
    from kedro.framework.hooks import hook_impl

    def run(**kwargs) -> set[str]:
        ran: set[str] = set()

        class Recorder:
            @hook_impl
            def before_node_run(self, node):
                ran.add(node.name.rsplit(".", 1)[-1])

        with KedroSession.create(project_path=project, env="paper", runtime_params=params) as session:
            session._hook_manager.register(Recorder())
            session.run(pipeline_names=["eagle_coco"], **kwargs)
        return ran

    run()
    report = project / "data/08_reporting/eagle_coco_paper/toy"
    skipped = pd.read_csv(report / "skipped.csv")
    row = skipped[skipped.item.astype(str) == "2"]
    assert len(row) == 1 and row.stage.iloc[0] == "answers"
    assert "000000000002.jpg" in row.reason.iloc[0] and "cannot be read as an image" in row.reason.iloc[0]
    facts = json.loads((report / "run.json").read_text())
    assert any("000000000002.jpg" in r["reason"] for r in facts["coverage"]["not_made"])
    assert "000000000002.jpg" in (report / "report.html").read_text()
    metrics = pd.read_csv(report / "metrics.csv")
    assert (metrics[metrics.level == "sentence"].n_samples == 3).all()  # images 1, 4 and 10

    # the split keeps the source's bytes; one edited after the run makes --only-missing-outputs remake the split
    copy = project / "data/02_intermediate/eagle_coco_paper/eval/images/000000000001.jpg"
    source = (tmp_path / "coco/val2017/000000000001.jpg").read_bytes()
    assert copy.read_bytes() == source
    copy.write_bytes(source[:200])
    assert "prepare_eval_split" in run(only_missing_outputs=True)
    assert copy.read_bytes() == source
    assert run(only_missing_outputs=True) == set()  # and then nothing is missing
