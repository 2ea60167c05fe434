"""How often our reading of the reference's word-level rule picks the same (image, word) entries as the authors'
``coco_single_target_once_*`` lists (docs/paper.md#word-level).

    python benchmarks/word_list_agreement.py [FOLDER ...]     # default: tests/fixtures/reference_lists

For every word-level list in the folders (the authors' ``coco_single_target_once_<model>.json``, or the format
sample ``sample-object.json``), each entry is an image, the model's sentence, the category the authors chose and
the token they explain. On each entry this measures:

- **category**: does the rule find the entry's category in the sentence? The reference's rule as we read it
  (``core/targets.py: literal_match``: the name as a substring, any case), the same case-sensitive, and the rule
  this project used before (``word_selection: once``: whole words, the name, its plural or capitalised);
- **token**: is the token where the first match begins (``literal_position``) the one the list explains
  (``target_generated_index``)? And the earlier rule's first token of the whole-word match.

Tokens are decoded without a model: the vocabulary is taken from the lists of the same folder and model family
(the ``words`` of its caption, MMVP and RePOPE lists with their ids, and each word-level entry's target token);
an entry with a token outside it is counted as not decodable, and the token figure is over the decodable ones
(lists whose ``words`` carry no leading spaces, LLaVA's, give no vocabulary: their tokens are not measured).

Which images a category gets (its candidates in pycocotools' ``getImgIds`` order, the quota of 4) needs the COCO
instances file and the model's sentences for the images the lists left out, so it is not measured here; the
lists' own order agrees with it (docs/paper.md#word-level).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from eagle_pipelines.core.targets import literal_match, literal_position, phrase_positions  # noqa: E402
from eagle_pipelines.data.coco_sample import CocoSampleParams, category_words  # noqa: E402


def family(name: str) -> str:
    low = name.lower()
    if "llava" in low:
        return "llava"
    if "intern" in low:
        return "internvl"
    return "qwen"  # Qwen2.5-VL 3B and 7B share a tokenizer; the format samples are Qwen2.5-VL-3B's


def _token_text(token: str) -> str:
    return token.replace("Ġ", " ").replace("▁", " ").replace("Ċ", "\n")


def vocabularies(files: list[Path]) -> dict[str, dict[int, str]]:
    vocab: dict[str, dict[int, str]] = {}
    for path in files:
        entries = json.loads(path.read_text(encoding="utf-8"))
        known = vocab.setdefault(family(path.name), {})
        # a list whose decoded words carry no leading spaces (LLaVA's sentencepiece lists) cannot rebuild a sentence
        spaced = any(str(w).startswith(" ") for e in entries for w in e.get("words", []))
        for e in entries:
            if spaced and "words" in e and "selected_interpretation_token_word_id" in e:
                for i, w in zip(e["selected_interpretation_token_word_id"], e["words"]):
                    known.setdefault(int(i), w)
            if "target_generated_id" in e:
                known.setdefault(int(e["target_generated_id"]), _token_text(e["target_generated_token"]))
    return vocab


def measure(path: Path, vocab: dict[int, str]) -> dict:
    entries = json.loads(path.read_text(encoding="utf-8"))
    plain = CocoSampleParams()
    row = {"list": path.name, "entries": len(entries), "category_rule": 0, "category_case_sensitive": 0,
           "category_earlier_rule": 0, "decodable": 0, "token_rule": 0, "token_earlier_rule": 0}
    for e in entries:
        name, sentence = e["select_category"], e["generate_sentence"]
        row["category_rule"] += literal_match(sentence, name) is not None
        row["category_case_sensitive"] += name in sentence
        ids = [int(t) for t in e["output_word_id"]]
        decodable = all(i in vocab for i in ids)
        if decodable:
            row["decodable"] += 1

            def decode(prefix):
                return "".join(vocab[int(i)] for i in prefix)

            row["token_rule"] += literal_position(decode, ids, name) == e["target_generated_index"]
            earlier = next((p for w in category_words(name, plain) if (p := phrase_positions(decode, ids, w))), [])
            row["category_earlier_rule"] += bool(earlier)
            row["token_earlier_rule"] += bool(earlier) and earlier[0] == e["target_generated_index"]
        else:
            text = sentence
            row["category_earlier_rule"] += any(
                literal_match(text, w) is not None and _whole_word(text, w) for w in category_words(name, plain))
    return row


def _whole_word(text: str, word: str) -> bool:
    import re

    return re.search(r"(?<!\w)" + re.escape(word) + r"(?!\w)", text) is not None


def main(folders: list[str]) -> list[dict]:
    folders = folders or [str(ROOT / "tests" / "fixtures" / "reference_lists")]
    rows = []
    for folder in folders:
        files = sorted(Path(folder).glob("*.json"))
        if not files:
            raise SystemExit(f"{folder}: no .json list there; name a folder with the authors' lists "
                             f"(datasets/ of RuoyuChen10/EAGLE) or their format samples")
        vocab = vocabularies(files)
        word_lists = [p for p in files if "single_target" in p.name or "object" in p.name]
        if not word_lists:
            raise SystemExit(f"{folder}: no word-level list (coco_single_target_once_*.json or sample-object.json)")
        rows += [measure(p, vocab[family(p.name)]) for p in word_lists]
    header = ("list", "entries", "category: rule", "case-sensitive", "earlier rule", "decodable",
              "token: rule", "earlier rule")
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for r in rows:
        n, d = r["entries"], r["decodable"]
        print(f"| {r['list']} | {n} | {r['category_rule']}/{n} | {r['category_case_sensitive']}/{n} | "
              f"{r['category_earlier_rule']}/{n} | {d} | {r['token_rule']}/{d} | {r['token_earlier_rule']}/{d} |")
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
