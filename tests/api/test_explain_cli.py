"""eagle-explain: one image from the command line."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from eagle_pipelines.core.attribution import Attribution
from eagle_pipelines.explain_cli import main

from tests.conftest import SHIPPED_MODEL

MODEL = str(SHIPPED_MODEL)


@pytest.fixture(scope="module")
def photo(eval_split, tmp_path_factory):
    from PIL import Image

    path = tmp_path_factory.mktemp("cli") / "shapes.png"
    Image.fromarray(eval_split.images["eval_000001.png"]).save(path)
    return path


def test_eagle_explain_prints_the_explanation_and_writes_a_loadable_attribution(photo, tmp_path, capsys):
    out = tmp_path / "out"
    # a program that logs to stdout from its root logger (as Kedro's logging setup does) must not get the CLI's
    # log records mixed into the explanation
    root_handler = logging.StreamHandler(sys.stdout)
    root_handler.addFilter(logging.Filter("eagle_pipelines"))  # this package's records, as they reached it before
    logging.getLogger().addHandler(root_handler)  # (records propagate to it whatever the root logger's level)
    try:
        assert main([str(photo), "--model", MODEL, "--regions", "12", "--out", str(out)]) == 0
    finally:
        logging.getLogger().removeHandler(root_handler)
    printed = capsys.readouterr().out
    assert printed.startswith("answer: ")
    answer = printed.splitlines()[0].removeprefix("answer: ")
    a = Attribution.load(out / "shapes.png.npz")  # the full file name, extension kept
    assert a.answer == answer and a.strategy == "pooled" and a.meta["image"] == str(photo)
    assert sorted(a.order.tolist()) == list(range(a.n_regions))
    assert f"region {a.order[0]}:" in printed and f"{a.forward_passes} forward passes" in printed
    assert (out / "shapes.png.png").stat().st_size > 10_000

    word = answer.split()[1]  # "a <colour> <shape> ...": explain the first colour word
    assert main([str(photo), "--model", MODEL, "--regions", "12", "--out", str(out), "--tokens", word,
                 "--no-plot"]) == 0
    w = Attribution.load(out / f"shapes.png_{word}.npz")
    assert w.target_words == [word] and not (out / f"shapes.png_{word}.png").exists()
    np.testing.assert_array_equal(w.labels, a.labels)


@pytest.mark.parametrize("args, message", [
    (["nothere.png"], "image file 'nothere.png' does not exist"),
    (["{photo}", "--tokens", "banana"], "'banana' does not occur in the answer"),
    (["{photo}", "--model", "no/such/model"], "no/such/model"),
    (["{photo}", "--regions", "1"], "n_regions must be at least 2"),
    (["{photo}", "--family", "nonsense"], "Unknown model family 'nonsense'"),
])
def test_eagle_explain_names_what_is_wrong(photo, tmp_path, capsys, args, message):
    args = [a.replace("{photo}", str(photo)) for a in args]
    model = [] if "--model" in args else ["--model", MODEL]
    assert main([*args, *model, "--out", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err
    assert not list(tmp_path.glob("*.npz"))


def test_eagle_explain_runs_over_a_folder_skips_what_is_done_and_reports_a_bad_image(eval_split, tmp_path, capsys):
    from PIL import Image

    folder = tmp_path / "photos"
    folder.mkdir()
    for k in (1, 2):
        Image.fromarray(eval_split.images[f"eval_00000{k}.png"]).save(folder / f"shapes{k}.png")
    (folder / "broken.png").write_bytes(b"not a png")
    (folder / "notes.txt").write_text("not an image, not read")
    out = tmp_path / "out"
    argv = [str(folder), "--model", MODEL, "--regions", "8", "--out", str(out), "--no-plot"]
    assert main(argv) == 1  # one of three images failed
    captured = capsys.readouterr()
    assert "broken.png" in captured.err and "cannot be read as an image" in captured.err
    summary = pd.read_csv(out / "summary.csv")
    assert dict(zip(summary["image"].map(lambda p: Path(p).name), summary["status"])) == {
        "broken.png": "failed", "shapes1.png": "explained", "shapes2.png": "explained"}
    assert "cannot be read as an image" in summary.loc[summary["status"] == "failed", "error"].iloc[0]
    explained = summary[summary["status"] == "explained"].drop(columns=["status", "error"]).reset_index(drop=True)
    assert explained["insertion_auc"].between(0, 1).all() and (explained["forward_passes"] > 0).all()
    done = {p.name: p.stat().st_mtime_ns for p in out.glob("shapes*")}
    assert len(done) == 4  # npz + json each

    (folder / "broken.png").unlink()
    assert main(argv) == 0
    assert capsys.readouterr().out.count("already explained from the same inputs") == 2
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("shapes*")} == done
    again = pd.read_csv(out / "summary.csv")
    assert (again["status"] == "resumed").all()
    pd.testing.assert_frame_equal(again.drop(columns=["status", "error"]), explained, check_dtype=False)


def test_eagle_explain_refuses_two_images_that_would_share_an_output(photo, tmp_path, capsys):
    import shutil

    other = tmp_path / "again"
    other.mkdir()
    shutil.copy(photo, other / "shapes.png")
    assert main([str(photo), str(other / "shapes.png"), "--model", MODEL, "--out", str(tmp_path / "out")]) == 2
    assert "same output name" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
