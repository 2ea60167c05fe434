"""eagle-explain: one image from the command line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from eagle_pipelines.core.attribution import Attribution
from eagle_pipelines.explain_cli import main

MODEL = str(Path(__file__).parents[1] / "data/06_models/toy_qwen2_5_vl")


@pytest.fixture(scope="module")
def photo(eval_split, tmp_path_factory):
    from PIL import Image

    path = tmp_path_factory.mktemp("cli") / "shapes.png"
    Image.fromarray(eval_split.images["eval_000001.png"]).save(path)
    return path


def test_eagle_explain_prints_the_explanation_and_writes_a_loadable_attribution(photo, tmp_path, capsys):
    out = tmp_path / "out"
    assert main([str(photo), "--model", MODEL, "--regions", "12", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    answer = printed.splitlines()[0].removeprefix("answer: ")
    a = Attribution.load(out / "shapes")
    assert a.answer == answer and a.strategy == "pooled" and a.meta["image"] == str(photo)
    assert sorted(a.order.tolist()) == list(range(a.n_regions))
    assert f"region {a.order[0]}:" in printed and f"{a.forward_passes} forward passes" in printed
    assert (out / "shapes.png").stat().st_size > 10_000

    word = answer.split()[1]  # "a <colour> <shape> ...": explain the first colour word
    assert main([str(photo), "--model", MODEL, "--regions", "12", "--out", str(out), "--tokens", word,
                 "--no-plot"]) == 0
    w = Attribution.load(out / f"shapes_{word}")
    assert w.target_words == [word] and not (out / f"shapes_{word}.png").exists()
    np.testing.assert_array_equal(w.labels, a.labels)


@pytest.mark.parametrize("args, message", [
    (["nothere.png"], "image file 'nothere.png' does not exist"),
    (["{photo}", "--tokens", "banana"], "'banana' does not occur in the answer"),
    (["{photo}", "--model", "no/such/model"], "no/such/model"),
    (["{photo}", "--regions", "1"], "n_regions must be at least 2"),
])
def test_eagle_explain_names_what_is_wrong(photo, tmp_path, capsys, args, message):
    args = [a.replace("{photo}", str(photo)) for a in args]
    model = [] if "--model" in args else ["--model", MODEL]
    assert main([*args, *model, "--out", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err
    assert not list(tmp_path.glob("*.npz"))
