"""eagle-explain on a clip picks the video-capable embedded model and the video question by default, and says so
(issue 26 item 7); given --model / --prompt, they are used as they are and nothing is announced."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from eagle_pipelines.explain_cli import (
    DEFAULT_MODEL,
    DEFAULT_VIDEO_MODEL,
    IMAGE_PROMPT,
    VIDEO_PROMPT,
    _video_defaults,
    main,
    prompt_for,
)


def _args(**kw) -> argparse.Namespace:
    base = {"model": None, "prompt": None, "api_base": None, "images": ["x"]}
    return argparse.Namespace(**{**base, **kw})


def test_images_alone_keep_the_image_model_and_prompt_without_a_word(capsys):
    args = _args()
    _video_defaults(args, [], n_files=3)
    assert args.model == DEFAULT_MODEL and prompt_for(args) == IMAGE_PROMPT
    assert capsys.readouterr().err == ""


def test_a_clip_switches_to_the_video_model_and_question_and_says_so(capsys):
    args = _args()
    _video_defaults(args, [Path("clip.mp4")], n_files=2)
    assert args.model == DEFAULT_VIDEO_MODEL
    assert prompt_for(args, clip=True) == VIDEO_PROMPT and prompt_for(args) == IMAGE_PROMPT
    err = capsys.readouterr().err
    assert "toy_qwen2_5_vl_video" in err and "--model chooses another" in err
    assert VIDEO_PROMPT in err and IMAGE_PROMPT in err  # a mixed run names both questions


def test_given_model_and_prompt_are_kept_for_a_clip(capsys):
    args = _args(model="/models/mine", prompt="What moves?")
    _video_defaults(args, [Path("clip.mp4")], n_files=1)
    assert args.model == "/models/mine" and prompt_for(args, clip=True) == "What moves?"
    assert capsys.readouterr().err == ""


def _clip(path: Path) -> Path:
    from eagle_pipelines.models.video import write_video

    frames = np.full((2, 112, 112, 3), 10, np.uint8)
    yy, xx = np.mgrid[:112, :112]
    frames[1][(yy - 56) ** 2 + (xx - 56) ** 2 < 16 ** 2] = (220, 40, 40)
    return write_video(path, frames, fps=2)


def test_eagle_explain_on_a_clip_uses_the_video_model_and_question(tmp_path, capsys):
    import torch

    torch.set_num_threads(1)
    clip = _clip(tmp_path / "clip.mp4")
    out = tmp_path / "out"
    assert main([str(clip), "--frames", "2", "--grid", "2x2", "--max-new-tokens", "6", "--no-plot",
                 "--strategy", "greedy", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "video-capable embedded model" in err and VIDEO_PROMPT in err
    meta = json.loads((out / "clip.mp4.json").read_text())
    from eagle_pipelines.api import load_model

    fingerprint = meta["meta"]["fingerprint"] if "meta" in meta else meta["fingerprint"]
    assert fingerprint["prompt"] == VIDEO_PROMPT
    assert fingerprint["model"] == load_model(DEFAULT_VIDEO_MODEL).fingerprint != load_model(DEFAULT_MODEL).fingerprint


def test_help_names_both_defaults(capsys):
    assert main(["--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "toy_qwen2_5_vl_video" in text and VIDEO_PROMPT in text and IMAGE_PROMPT in text
