"""Hostile inputs: every file of the hostile corpus (tests/hostile_corpus.py) through eagle-explain, alone and as
one folder, and through explain(); output names, fingerprint-based resume, corrupt earlier results, argument
checks, region limits, the CPU memory plan and file modes."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from eagle_pipelines import api
from eagle_pipelines.core.attribution import Attribution, CorruptAttributionError
from eagle_pipelines.core.images import as_rgb
from eagle_pipelines.explain_cli import main, output_base, safe_name, shown, token_suffix
from tests.hostile_corpus import build, shapes_image
from tests.conftest import ROOT, SHIPPED_MODEL

PROMPT = "Describe the image."
FAST = ["--regions", "4", "--max-new-tokens", "4", "--no-plot"]


@pytest.fixture
def one_model(monkeypatch, shipped_model):
    """eagle-explain loads its model per run: hand it the one loaded model."""
    monkeypatch.setattr(api, "load_model", lambda *args, **kwargs: shipped_model)
    return shipped_model


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile") / "photos"
    return folder, build(folder)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _wrong(a: Attribution, path: Path, model, fingerprinted: bool = True) -> str:
    """Why `a` is not the explanation of the image at `path` ('' when it is)."""
    rgb = as_rgb(path)
    seen = model.model_image(rgb)
    if fingerprinted and a.meta.get("fingerprint", {}).get("image_sha256") != _sha(path):
        return "fingerprint of other bytes"
    if a.labels.shape != seen.shape[:2]:
        return f"labels {a.labels.shape} for a model image of {seen.shape[:2]}"
    answer = model.generate(seen, PROMPT, max_new_tokens=4).text
    if a.answer != answer:
        return f"answer {a.answer!r} is not this image's ({answer!r})"
    if sorted(a.order.tolist()) != list(range(a.n_regions)) or not np.isfinite(a.insertion).all():
        return "not a complete order with finite curves"
    if path.name == "sixteen_bit.png":  # scaled by 255/65535, not clipped at 255
        grey8 = shapes_image(9).mean(axis=2).round().astype(np.uint8)
        if not np.array_equal(rgb, np.repeat(grey8[..., None], 3, axis=2)):
            return "16-bit image not scaled to its 8-bit values"
    return ""


def _error_lines(err: str, reason: str) -> list[str]:
    return [line for line in re.split(r"[\r\n]", err) if line.startswith("eagle-explain:") and reason in line]


def _table(title: str, rows: dict[str, int]) -> str:
    return f"{title}: " + ", ".join(f"{k} {v}" for k, v in rows.items())


# -- the corpus -------------------------------------------------------------------------------------------------------
def test_every_hostile_input_alone_through_eagle_explain(corpus, one_model, tmp_path, capsys):
    folder, cases = corpus
    problems, tally = [], {"inputs": 0, "explained": 0, "clear errors": 0, "crashes": 0, "silent wrong": 0,
                           "lost": 0}
    for k, case in enumerate(cases):
        path, out = case.path(folder), tmp_path / f"alone{k}"
        tally["inputs"] += 1
        try:
            code = main([str(path), "--out", str(out), *FAST])
        except BaseException as exc:  # noqa: BLE001 - a crash is what this test counts
            tally["crashes"] += 1
            problems.append(f"{case.name}: crashed with {type(exc).__name__}: {exc}")
            continue
        out_text, err = capsys.readouterr()
        if "Traceback" in err + out_text:
            tally["crashes"] += 1
            problems.append(f"{case.name}: traceback")
        if case.kind == "ok":
            base = output_base(out, path, None)
            if code != 0 or not base.with_name(base.name + ".json").exists():
                tally["lost"] += 1
                problems.append(f"{case.name}: exit {code}, no output at {base}: {err}")
                continue
            assert base.parent == out  # inside --out, named from the full file name
            why = _wrong(Attribution.load(base.with_name(base.name + ".npz")), path, one_model)
            tally["silent wrong" if why else "explained"] += 1
            if why:
                problems.append(f"{case.name}: {why}")
        else:
            reason = case.alone_reason or case.reason
            lines = _error_lines(err, reason)
            if code == 2 and len(lines) == 1 and shown(path) in lines[0] and not list(out.glob("*.npz")):
                tally["clear errors"] += 1
            else:
                tally["lost"] += 1
                problems.append(f"{case.name}: exit {code}, expected one line with {reason!r}: {err!r}")
    with capsys.disabled():
        print("\n" + _table("eagle-explain, each input alone", tally))
    assert not problems, "\n".join(problems)
    assert tally["explained"] == sum(c.kind == "ok" for c in cases)


def test_the_hostile_folder_as_one_run_names_every_bad_input_and_finishes_the_rest(corpus, one_model, tmp_path,
                                                                                  capsys):
    folder, cases = corpus
    out = tmp_path / "out"
    code = main([str(folder), "--out", str(out), *FAST])
    text, err = capsys.readouterr()
    assert code == 1 and "Traceback" not in err + text  # some failed, the rest finished
    summary = pd.read_csv(out / "summary.csv", keep_default_na=False)
    by_name = {Path(p).name: row for p, row in zip(summary["image"], summary.to_dict("records"))}
    problems, tally = [], {"inputs": len(cases), "explained": 0, "clear errors": 0, "skipped (named)": 0,
                           "crashes": 0, "silent wrong": 0, "lost": 0}
    for case in cases:
        path, row = case.path(folder), by_name.get(shown(case.name))
        if row is None:
            tally["lost"] += 1
            problems.append(f"{case.name}: not in summary.csv")
            continue
        if case.kind == "ok":
            base = output_base(out, path, None)
            a = Attribution.load(base.with_name(base.name + ".npz"))
            why = _wrong(a, path, one_model) or ("" if row["answer"] == a.answer else "summary row of another image")
            ok = row["status"] == "explained" and not why
            tally["explained" if ok else "silent wrong"] += 1
            if not ok:
                problems.append(f"{case.name}: {row['status']} {why}")
            continue
        lines = [line for line in _error_lines(err, case.reason) if shown(path) in line]
        expected = "failed" if case.kind == "error" else "skipped"
        if row["status"] == expected and case.reason in row["error"] and len(lines) == 1 and shown(path) in lines[0]:
            tally["clear errors" if case.kind == "error" else "skipped (named)"] += 1
        else:
            tally["lost"] += 1
            problems.append(f"{case.name}: {row['status']} {row['error']!r}; lines {lines}")
    assert len(summary) == len(cases)  # one row per named entry, nothing else
    names = [p.name for p in out.iterdir() if p.suffix == ".json"]
    assert len(names) == len(set(names)) == sum(c.kind == "ok" for c in cases)
    assert all(p.resolve().parent == out.resolve() for p in out.iterdir())
    with capsys.disabled():
        print("\n" + _table("eagle-explain, the corpus as one folder", tally))
    assert not problems, "\n".join(problems)

    # again: every explained image is read back (same inputs), nothing rewritten, the bad ones named again
    written = {p.name: p.stat().st_mtime_ns for p in out.glob("*.npz")}
    assert main([str(folder), "--out", str(out), *FAST]) == 1
    text, err = capsys.readouterr()
    assert text.count("already explained from the same inputs") == tally["explained"]
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.npz")} == written
    again = pd.read_csv(out / "summary.csv", keep_default_na=False)
    assert sorted(again["status"]) == sorted(["resumed" if s == "explained" else s for s in summary["status"]])


def test_every_hostile_input_through_explain(corpus, shipped_model, capsys):
    folder, cases = corpus
    problems, tally = [], {"inputs": 0, "explained": 0, "clear errors": 0, "crashes": 0, "silent wrong": 0,
                           "lost": 0}
    for case in cases:
        path = case.path(folder)
        tally["inputs"] += 1
        try:
            a = api.explain(shipped_model, path, PROMPT, n_regions=4, max_new_tokens=4)
        except (ValueError, FileNotFoundError) as exc:
            reason = case.api_reason or case.reason
            if case.kind != "ok" and reason in str(exc) and str(path) in str(exc) and "\n" not in str(exc):
                tally["clear errors"] += 1
            else:
                tally["lost"] += 1
                problems.append(f"{case.name}: {type(exc).__name__}: {exc}")
            continue
        except Exception as exc:  # noqa: BLE001 - counted
            tally["crashes"] += 1
            problems.append(f"{case.name}: crashed with {type(exc).__name__}: {exc}")
            continue
        why = ("an Attribution for a bad input" if case.kind != "ok"
               else _wrong(a, path, shipped_model, fingerprinted=False))
        tally["silent wrong" if why else "explained"] += 1
        if why:
            problems.append(f"{case.name}: {why}")
    with capsys.disabled():
        print("\n" + _table("explain(), each input", tally))
    assert not problems, "\n".join(problems)


# -- output names -----------------------------------------------------------------------------------------------------
def test_output_names_keep_the_whole_file_name_stay_inside_out_and_never_collide(tmp_path):
    out = tmp_path / "out"
    assert output_base(out, Path("photo.2024.01.png"), None).name == "photo.2024.01.png"
    assert output_base(out, Path("photo.2024.02.png"), None).name == "photo.2024.02.png"
    assert output_base(out, Path("photo.jpg"), None) != output_base(out, Path("photo.png"), None)
    for hostile in ("..png", ".png", ".hidden.png", "a\\b.png", "tab\t.png", os.fsdecode(b"x\xff.png"), "é" * 200):
        base = output_base(out, Path(hostile), None)
        assert base.parent == out and not base.name.startswith(".") and "/" not in base.name, hostile
        assert len(base.name.encode()) < 200 and "~" in base.name  # changed, so a hash of the original is added
    assert safe_name("..png") != safe_name("_.png") and safe_name("фото.png") == "фото.png"
    # tokens: any script kept, different targets never share a suffix
    suffixes = [token_suffix(t) for t in (["红色"], ["蓝色"], ["red circle"], ["red", "circle"], ["red-circle"],
                                          ["red_circle"], ["!!"], ["?"], ["a" * 70], ["a" * 71])]
    assert len(set(suffixes)) == len(suffixes) and all(s.startswith("_") and len(s) > 1 for s in suffixes)
    assert token_suffix(["红色"]) == "_红色" and token_suffix(["red circle"]) == "_red-circle"


def test_two_images_with_dotted_names_get_their_own_attributions(one_model, tmp_path, capsys):
    from PIL import Image

    folder = tmp_path / "photos"
    folder.mkdir()
    for k in (1, 2):
        Image.fromarray(shapes_image(k)).save(folder / f"photo.2024.0{k}.png")
    out = tmp_path / "out"
    assert main([str(folder), "--out", str(out), *FAST]) == 0
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary["status"]) == ["explained", "explained"]
    for k in (1, 2):
        a = Attribution.load(out / f"photo.2024.0{k}.png.npz")
        assert a.meta["image"] == str(folder / f"photo.2024.0{k}.png") and not _wrong(a, folder / a.meta["image"],
                                                                                          one_model)
        assert summary.loc[k - 1, "answer"] == a.answer
    assert summary.loc[0, "answer"] != summary.loc[1, "answer"]


# -- resume only from the same inputs ---------------------------------------------------------------------------------
def test_resume_needs_the_same_fingerprint_and_a_corrupt_earlier_result_is_named_and_recomputed(
        one_model, tmp_path, capsys):
    from PIL import Image

    photo, out = tmp_path / "photo.jpg", tmp_path / "out"
    Image.fromarray(shapes_image(1)).save(photo, quality=95)
    argv = [str(photo), "--out", str(out), *FAST]
    base = out / "photo.jpg"
    npz, meta = base.with_name("photo.jpg.npz"), base.with_name("photo.jpg.json")

    def run(*extra) -> tuple[str, str]:
        assert main([*argv, *extra]) == 0
        captured = capsys.readouterr()
        assert "Traceback" not in captured.err
        return captured.out, captured.err

    run()
    first = Attribution.load(npz)
    assert first.meta["fingerprint"]["image_sha256"] == _sha(photo)
    assert "already explained from the same inputs" in run()[0]

    Image.fromarray(shapes_image(2)).save(photo, quality=95)  # another picture under the same name
    text, err = run()
    assert "differs in: image_sha256" in err and "already explained" not in text
    second = Attribution.load(npz)
    assert second.meta["fingerprint"]["image_sha256"] == _sha(photo) and not _wrong(second, photo, one_model)
    assert second.answer != first.answer

    for extra, key in ((["--prompt", "Describe the image ."], "prompt"), (["--regions", "6"], "n_regions"),
                       (["--lambda1", "0.5"], "lambda1"), (["--strategy", "greedy"], "strategy"),
                       (["--max-new-tokens", "5"], "max_new_tokens")):
        text, err = run(*extra)
        assert re.search(rf"differs in: [\w, ]*\b{key}\b", err), (extra, err)
        assert Attribution.load(npz).meta["fingerprint"][key] == json.loads(json.dumps(
            {"prompt": extra[1], "n_regions": 6, "lambda1": 0.5, "strategy": "greedy", "max_new_tokens": 5}[key]))
    run()  # back to the defaults: recomputed once
    assert "already explained" in run()[0]

    # a truncated .npz, a truncated .json, a .json without its .npz: named, recomputed, never a traceback
    for damage in (lambda: npz.write_bytes(npz.read_bytes()[:50]), lambda: meta.write_text(meta.read_text()[:40]),
                   lambda: npz.unlink()):
        damage()
        text, err = run()
        assert "the earlier result cannot be read" in err and "recomputing" in err and "already" not in text
        assert "photo.jpg" in err
        assert not _wrong(Attribution.load(npz), photo, one_model)


def test_attribution_load_names_a_damaged_file(tmp_path, shipped_model):
    a = api.explain(shipped_model, shapes_image(1), PROMPT, n_regions=4, max_new_tokens=4)
    a.save(tmp_path / "x.npz")
    whole = (tmp_path / "x.npz").read_bytes()
    (tmp_path / "x.npz").write_bytes(whole[:100])
    with pytest.raises(CorruptAttributionError, match=r"x\.npz' cannot be read \(BadZipFile"):
        Attribution.load(tmp_path / "x")
    (tmp_path / "x.npz").write_bytes(whole)
    text = (tmp_path / "x.json").read_text()
    (tmp_path / "x.json").write_text(text[:30])
    with pytest.raises(CorruptAttributionError, match=r"x\.json' is not valid JSON"):
        Attribution.load(tmp_path / "x")
    record = json.loads(text)
    record["target_positions"] = record["target_positions"][:-1]  # one token fewer than the curves
    (tmp_path / "x.json").write_text(json.dumps(record))
    with pytest.raises(CorruptAttributionError, match=r"insertion is \(\d+, \d+\), expected"):
        Attribution.load(tmp_path / "x")
    (tmp_path / "x.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"x\.json' does not exist"):
        Attribution.load(tmp_path / "x")


# -- arguments --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, message", [
    ({"lambda1": -1}, r"lambda1 must be a finite number >= 0 .*got -1"),
    ({"lambda1": float("nan")}, r"lambda1 must be a finite number >= 0 .*got nan"),
    ({"lambda2": float("inf")}, r"lambda2 must be a finite number >= 0 .*got inf"),
    ({"lambda1": 0, "lambda2": 0}, r"lambda1 and lambda2 are both 0"),
    ({"memory_budget_mb": -5}, r"memory_budget_mb must be None .*or a finite number of MB > 0; got -5"),
    ({"batch_size": 0}, r"batch_size must be an integer >= 1; got 0"),
    ({"prompt": None}, r"prompt must be a non-empty string .*got None"),
    ({"prompt": "  "}, r"prompt must be a non-empty string"),
    ({"strategy": "fast"}, r"unknown strategy 'fast'; choose one of"),
    ({"search_params": {"budget": 0}}, r"search_params\['budget'\] of strategy 'pooled': Input should be greater"),
    ({"n_regions": 1}, r"n_regions must be at least 2 \(got 1\)"),
    ({"n_regions": 10000}, r"n_regions=10000 is more than a 112x112 image can hold .*at most 784"),
    ({"max_new_tokens": 0}, r"max_new_tokens must be an integer >= 1; got 0"),
])
def test_explain_names_a_wrong_argument_and_its_allowed_range(shipped_model, kwargs, message):
    kwargs = {"prompt": PROMPT, **kwargs}
    with pytest.raises(ValueError, match=message):
        api.explain(shipped_model, shapes_image(1), kwargs.pop("prompt"), **{"n_regions": 4, **kwargs})


def test_a_small_image_holds_few_regions_and_the_forward_passes_are_logged_before_the_search(shipped_model, caplog):
    with pytest.raises(ValueError, match=r"n_regions=30 is more than a 20x20 image can hold .*at most 25"):
        api.explain(shipped_model, np.zeros((20, 20, 3), np.uint8), PROMPT, n_regions=30)
    for strategy in ("pooled", "greedy", "efficient"):
        caplog.clear()
        with caplog.at_level(logging.DEBUG, logger="eagle_pipelines.api"):
            a = api.explain(shipped_model, shapes_image(1), PROMPT, n_regions=6, strategy=strategy, max_new_tokens=4)
        logged = [r.getMessage() for r in caplog.records if "forward passes" in r.getMessage()]
        assert logged == [f"{strategy} search over {a.n_regions} regions: {a.forward_passes} forward passes"]
    assert api.expected_forward_passes("greedy", 784) == (784 * 785, True)


@pytest.mark.parametrize("args, message", [
    (["--regions", "0"], "n_regions must be at least 2"),
    (["--lambda1", "nan"], "lambda1 must be a finite number >= 0"),
    (["--lambda1", "0", "--lambda2", "0"], "lambda1 and lambda2 are both 0"),
    (["--batch-size", "0"], "batch_size must be an integer >= 1"),
    (["--max-new-tokens", "0"], "--max-new-tokens must be at least 1"),
    (["--prompt", ""], "prompt must be a non-empty string"),
    (["--regions", "many"], "argument --regions: invalid int value: 'many'"),
    (["--strategy", "fast"], "argument --strategy: invalid choice: 'fast'"),
    (["--out", "{file}"], "is a file, not a folder"),
    (["--out", "{file}/sub"], "cannot be made"),
    (["--out", "{folder}"], "is also an image folder given"),
    (["--regions", "10000"], "n_regions=10000 is more than a 112x112 image can hold"),
])
def test_eagle_explain_refuses_bad_arguments_in_one_line(one_model, tmp_path, capsys, args, message):
    from PIL import Image

    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(shapes_image(1)).save(folder / "a.png")
    (tmp_path / "file.txt").write_text("x")
    args = [a.replace("{file}", str(tmp_path / "file.txt")).replace("{folder}", str(folder)) for a in args]
    code = main([str(folder), *(["--out", str(tmp_path / "out")] if "--out" not in args else []), *args])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert not list(tmp_path.rglob("*.npz"))


def test_eagle_explain_prints_the_expected_forward_passes(one_model, tmp_path, capsys):
    from PIL import Image

    Image.fromarray(shapes_image(1)).save(tmp_path / "a.png")
    assert main([str(tmp_path / "a.png"), "--out", str(tmp_path / "out"), *FAST]) == 0
    a = Attribution.load(tmp_path / "out" / "a.png.npz")
    assert (f"eagle-explain: {tmp_path / 'a.png'}: pooled search over {a.n_regions} regions: {a.forward_passes} "
            f"forward passes") in capsys.readouterr().err


def test_a_corrupt_model_config_is_named(tmp_path, capsys):
    from PIL import Image

    model = tmp_path / "model"
    shutil.copytree(SHIPPED_MODEL, model)
    (model / "config.json").write_text("{\n")

    Image.fromarray(shapes_image(1)).save(tmp_path / "a.png")
    assert main([str(tmp_path / "a.png"), "--model", str(model), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"'{model / 'config.json'}' cannot be read as JSON (Expecting" in err and len(err.splitlines()) == 1
    with pytest.raises(Exception, match=r"config\.json' cannot be read as JSON"):
        api.load_model(str(model))


# -- images -----------------------------------------------------------------------------------------------------------
def test_sixteen_bit_images_are_scaled_by_their_type_range_and_non_finite_floats_refused(tmp_path):
    from PIL import Image

    values = np.array([[0, 257, 32768, 65535]], np.uint16).repeat(4, axis=0)
    Image.fromarray(values).save(tmp_path / "g16.png")
    expected = np.array([0, 1, 128, 255], np.uint8)
    for given in (tmp_path / "g16.png", values, Image.open(tmp_path / "g16.png")):
        np.testing.assert_array_equal(as_rgb(given)[0, :, 0], expected)
    floats = np.full((4, 4), 0.5, np.float32)
    floats[0, 0] = np.inf
    with pytest.raises(ValueError, match=r"1 of 16 values are NaN or infinite"):
        as_rgb(floats)
    with pytest.raises(ValueError, match=r"every value is NaN or infinite"):
        as_rgb(np.full((4, 4), np.nan))


# -- memory plan ------------------------------------------------------------------------------------------------------
def test_the_cpu_memory_plan_measures_each_masked_image_and_fits_a_small_budget(shipped_model):
    from eagle_pipelines.core.memory import resident_mb

    image = shipped_model.model_image(shapes_image(1))
    answer = shipped_model.generate(image, PROMPT, max_new_tokens=4)
    masks = np.ones((40, *image.shape[:2]), dtype=bool)
    roomy = shipped_model.scorer(image, PROMPT, answer.token_ids, [0], batch_size=32, memory_budget_mb=1e6)
    roomy(masks)
    assert roomy.memory_plan["per_image_mb"] > 0.1 and roomy.batch_size == 32, roomy.memory_plan
    tight = shipped_model.scorer(image, PROMPT, answer.token_ids, [0], batch_size=32,
                                 memory_budget_mb=resident_mb() + 2)
    probs = tight(masks)
    assert 1 <= tight.batch_size < 32 and probs.shape == (40, 1), tight.memory_plan
    np.testing.assert_allclose(probs, roomy(masks), rtol=1e-5, atol=1e-6)


def test_the_plan_counts_tensors_the_resident_set_does_not_show():
    import torch

    from eagle_pipelines.core.memory import resident_mb
    from eagle_pipelines.models.scoring import BatchedTokenScorer

    class SmallTensors(BatchedTokenScorer):
        """Each masked image: 160 tensors of 64 KB (10 MB), small enough for the heap to recycle."""

        height = width = 8
        device = torch.device("cpu")
        target_positions = (0,)

        def _forward(self, chunk):
            held = [torch.ones(16 * 1024) for _ in range(160 * len(chunk))]
            assert len(held) == 160 * len(chunk)
            return chunk.reshape(len(chunk), -1).mean(axis=1, keepdims=True)

    masks = np.random.default_rng(0).random((30, 8, 8)) > 0.5
    scorer = SmallTensors(batch_size=16, memory_budget_mb=resident_mb() + 60)  # room for about 0.8 * 60 / 10
    scorer(masks)
    assert scorer.memory_plan["per_image_tensors_mb"] == pytest.approx(10, rel=0.01)
    assert 2 <= scorer.batch_size <= 6, scorer.memory_plan


# -- small things -----------------------------------------------------------------------------------------------------
def test_saved_attributions_get_the_ordinary_file_mode(shipped_model, tmp_path):
    a = api.explain(shipped_model, shapes_image(1), PROMPT, n_regions=4, max_new_tokens=4)
    old = os.umask(0o022)
    try:
        a.save(tmp_path / "x")
        assert {(tmp_path / f"x{s}").stat().st_mode & 0o777 for s in (".npz", ".json")} == {0o644}
        os.umask(0o077)
        a.save(tmp_path / "y")
        assert {(tmp_path / f"y{s}").stat().st_mode & 0o777 for s in (".npz", ".json")} == {0o600}
    finally:
        os.umask(old)


def test_warnings_are_logged_and_the_notebook_keeps_repeated_words():
    import yaml

    config = yaml.safe_load((ROOT / "conf/logging.yml").read_text())
    assert config["loggers"]["py.warnings"]["level"] == "WARNING"
    cells = json.loads((ROOT / "notebooks/explain_embedded_model.ipynb").read_text())["cells"]
    code = "".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    assert "dict(zip(" not in code and "list(zip(sentence.target_words" in code

