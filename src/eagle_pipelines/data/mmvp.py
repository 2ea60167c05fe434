"""MMVP (Tong et al., "Eyes Wide Shut?", CVPR 2024): 300 two-option questions on 150 pairs of images.

The local copy is the dataset's own layout (the Hugging Face dataset repository ``MMVP/MMVP``)::

    data/01_raw/mmvp/Questions.csv      Index, Question, Options, Correct Answer
    data/01_raw/mmvp/MMVP Images/1.jpg ... 300.jpg   (image <Index>.jpg answers question <Index>)

A row reads ``1,Are the butterfly's wings closer to being open or closed?,(a) Open (b) Closed,(a)``. Questions
2k-1 and 2k share their text and options and differ in the correct answer (a pair of images).

``mmvp_eval_list`` turns it into the evaluation list format of eagle_coco (image_id, file_name, prompt,
reference) with the parsed options, the correct letter and text, and the pair.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

import pandas as pd
from pydantic import ConfigDict, Field

from eagle_pipelines.core.parity import ParitySwitches

COLUMNS = ("Index", "Question", "Options", "Correct Answer")
OPTION = re.compile(r"\(([a-z])\)\s*")


class MmvpFormatError(ValueError):
    """Questions.csv or the images folder do not follow MMVP's layout; the message names the row or file."""


class MmvpParams(ParitySwitches):
    model_config = ConfigDict(extra="forbid", frozen=True)
    parity_switches = ("prompt_format",)

    instruction: str = Field(default="Answer with the option's letter from the given choices directly.",
                             description="appended to every question, after its options")
    prompt_format: Literal["options", "bare"] = Field(
        default="options", description="options: the question, one line per option and the instruction; bare: the "
                                       "question alone, as the reference asks it (faithfulness_explanation/*/*-MMVP-"
                                       "vqa.py: text_prompt = content['question'])")
    max_questions: int | None = Field(default=None, gt=0, description="only the first N questions")


def parse_options(text: str) -> dict[str, str]:
    """``"(a) Open (b) Closed"`` -> ``{"a": "Open", "b": "Closed"}``."""
    parts = OPTION.split(str(text).strip())
    if len(parts) < 5 or parts[0].strip():
        return {}
    return {parts[k]: parts[k + 1].strip() for k in range(1, len(parts) - 1, 2)}


def parse_answer(text: str) -> str:
    """``"(a)"`` or ``"a"`` -> ``"a"``."""
    found = re.search(r"\(([a-z])\)", str(text).strip().lower())
    return found.group(1) if found else str(text).strip().lower().strip("()")


def format_prompt(question: str, options: dict[str, str], instruction: str, prompt_format: str = "options") -> str:
    """The question, one line per option, then the instruction (the format MMVP's evaluations use); ``bare``: the
    question alone (the reference's)."""
    if prompt_format == "bare":
        return question.strip()
    return "\n".join([question.strip(), *(f"({k}) {v}" for k, v in sorted(options.items())), instruction]).strip()


def mmvp_eval_list(questions: pd.DataFrame, images: Mapping[str, Any], params: MmvpParams,
                   source: str = "Questions.csv") -> pd.DataFrame:
    """One row per question: image_id (the MMVP index), file_name, prompt, reference (``"(a) Open"``), answer
    (the letter), answer_text, options (``"a: Open | b: Closed"``) and pair (0-based pair index). `images` is
    keyed by file stem (a ``PartitionedDataset`` of the images folder). Raises MmvpFormatError naming the row,
    column or missing image."""
    missing = [c for c in COLUMNS if c not in questions.columns]
    if missing:
        raise MmvpFormatError(f"{source}: missing column(s) {missing}; expected {list(COLUMNS)} "
                              f"(found {list(questions.columns)})")
    rows = []
    for k, row in enumerate(questions.itertuples(index=False)):
        values = dict(zip(questions.columns, row))
        where = f"{source} row {k + 2}"  # 1-based, after the header
        try:
            index = int(values["Index"])
        except (TypeError, ValueError):
            raise MmvpFormatError(f"{where}: Index {values['Index']!r} is not an integer") from None
        options = parse_options(values["Options"])
        if len(options) < 2:
            raise MmvpFormatError(f"{where}: options {values['Options']!r} are not '(a) ... (b) ...'")
        answer = parse_answer(values["Correct Answer"])
        if answer not in options:
            raise MmvpFormatError(f"{where}: correct answer {values['Correct Answer']!r} is not one of the "
                                  f"options {sorted(options)}")
        if str(index) not in images:
            raise MmvpFormatError(f"{where}: no image '{index}.jpg' in the MMVP images folder")
        rows.append({"image_id": index, "file_name": f"{index}.jpg",
                     "prompt": format_prompt(str(values["Question"]), options, params.instruction,
                                              params.prompt_format),
                     "reference": f"({answer}) {options[answer]}", "answer": answer, "answer_text": options[answer],
                     "options": " | ".join(f"{key}: {text}" for key, text in sorted(options.items())),
                     "pair": (index - 1) // 2})
    frame = pd.DataFrame(rows, columns=["image_id", "file_name", "prompt", "reference", "answer", "answer_text",
                                        "options", "pair"])
    if frame.image_id.duplicated().any():
        raise MmvpFormatError(f"{source}: duplicated Index {frame.image_id[frame.image_id.duplicated()].tolist()}")
    frame = frame.sort_values("image_id", kind="stable").reset_index(drop=True)
    return frame.head(params.max_questions) if params.max_questions else frame
