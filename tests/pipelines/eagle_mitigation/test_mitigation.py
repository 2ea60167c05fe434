"""Evidence-guided decoding (models/guidance.py), the necessity/sufficiency diagnostics (core/diagnostics.py) and
the eagle_mitigation nodes, on the shipped model and by hand."""

from __future__ import annotations


import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from tests.conftest import ROOT

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # many small passes (as eagle_mitigation's `threads`)


@pytest.fixture(scope="module")
def shapes():
    from eagle_pipelines.data.params import ShapesParams

    return ShapesParams(**yaml.safe_load((ROOT / "conf/base/parameters_data_preparation.yml").read_text())["shapes"])


def _biased_image(shapes, skip: int = 0):
    """A repope-split image with the red circle and without the blue square."""
    from eagle_pipelines.data.shapes import generate_image

    for i in range(500):
        image, objects = generate_image(shapes, "repope", i)
        names = {o.name for o in objects}
        if "red circle" in names and "blue square" not in names:
            if skip == 0:
                return image, objects
            skip -= 1
    raise AssertionError("no biased image")


# --- the attention function ---------------------------------------------------------------------------------------
class _Attn(torch.nn.Module):
    num_key_value_groups = 1


def test_the_guided_attention_adds_the_bias_to_the_last_query_row_only():
    from eagle_pipelines.models.guidance import guided_attention_forward

    torch.manual_seed(0)
    q, k, v = torch.randn(1, 2, 3, 4), torch.randn(1, 2, 5, 4), torch.randn(1, 2, 5, 4)
    mask = torch.zeros(1, 1, 3, 5)
    mask[0, 0, 0, 4] = mask[0, 0, 1, 4] = torch.finfo(torch.float32).min  # a causal-like mask
    module = _Attn()
    module._eagle_bias, module._eagle_heads, module._eagle_capture = None, None, None
    plain, w_plain = guided_attention_forward(module, q, k, v, mask, scaling=0.5)
    bias = torch.tensor([[0.0, 2.0, -1.0, 0.0, 0.0]])
    module._eagle_bias, module._eagle_heads, module._eagle_capture = bias, [1], []
    out, w = guided_attention_forward(module, q, k, v, mask, scaling=0.5)
    by_hand = torch.softmax((q @ k.transpose(2, 3)) * 0.5 + mask, dim=-1)
    assert torch.allclose(w_plain, by_hand, atol=1e-6)
    assert torch.allclose(w[:, :, :2], by_hand[:, :, :2], atol=1e-6)  # earlier rows untouched
    assert torch.allclose(w[:, 0], by_hand[:, 0], atol=1e-6)  # head 0 is not among the biased heads
    biased_row = torch.softmax((q[0, 1, -1] @ k[0, 1].T) * 0.5 + bias[0], dim=-1)
    assert torch.allclose(w[0, 1, -1], biased_row, atol=1e-6)
    assert torch.allclose(module._eagle_capture[0], w[:, :, -1])
    assert torch.allclose(out[:, :2], plain[:, :2], atol=1e-6)


def test_the_bias_is_lambda_b_log_of_the_normalised_evidence():
    from eagle_pipelines.models.guidance import evidence_bias

    g = np.array([2.0, 1.0, 0.0])
    assert np.allclose(evidence_bias(g, 2.0, -1.0, 0.05), -2.0 * np.log(np.array([1.0, 0.5, 0.0]) + 0.05))
    assert evidence_bias(np.zeros(3), 1.0, 1.0, 0.05) is None  # no evidence: no bias
    assert evidence_bias(g, 0.0, 1.0, 0.05) is None
    assert np.allclose(evidence_bias(np.ones(4), 3.0, 1.0, 0.05), 3.0 * np.log(1.05))  # even evidence: constant


def test_token_cells_are_the_image_tokens_row_major():
    from eagle_pipelines.models.guidance import token_cells

    cells = token_cells(112, 112, (4, 4))
    assert cells.n_regions == 16
    assert cells.labels[0, 0] == 0 and cells.labels[0, 27] == 0 and cells.labels[0, 28] == 1
    assert cells.labels[28, 0] == 4 and cells.labels[111, 111] == 15
    assert np.all(np.bincount(cells.labels.ravel()) == 28 * 28)


# --- guided decoding on the shipped model -------------------------------------------------------------------------
def test_guidance_of_strength_zero_is_plain_greedy_decoding(shipped_model, shapes):
    from eagle_pipelines.models.guidance import guided_generate

    for skip in range(2):
        image, _ = _biased_image(shapes, skip)
        for prompt, n in (("Describe the image.", 16), ("Is there a blue square in the image?", 3)):
            plain = shipped_model.generate(image, prompt, n)
            guided = guided_generate(shipped_model, image, prompt, {"strength": 0.0}, n)
            assert guided.answer.token_ids == plain.token_ids
            assert np.allclose(guided.answer.token_probs, plain.token_probs, atol=1e-4)
            assert guided.evidence_passes == 0 and guided.decode_passes == len(plain.token_ids) + 1


def test_without_a_draft_a_one_token_answer_is_never_guided(shipped_model, shapes):
    """g_0 holds no evidence, so the first token is the unguided one whatever λ."""
    from eagle_pipelines.models.guidance import guided_generate

    image, _ = _biased_image(shapes)
    prompt = "Is there a blue square in the image?"
    plain = shipped_model.generate(image, prompt, 3)
    for b in (1.0, -1.0):
        guided = guided_generate(shipped_model, image, prompt, {"strength": 5.0, "b": b, "source": "attention"}, 3)
        assert guided.answer.token_ids[:1] == plain.token_ids[:1]
        assert guided.evidence[0] is None


def test_a_draft_seeds_the_evidence_and_the_bias_moves_attention(shipped_model, shapes):
    """With a draft, g_0 is the draft's evidence; the bias with b < 0 lowers the attention the first step pays to
    the image tokens with the most evidence (measured by capturing the biased layer's attention)."""
    from eagle_pipelines.models.guidance import GuidedDecoder, guided_attention, image_token_grid

    image, _ = _biased_image(shapes)
    prompt = "Is there a blue square in the image?"
    decoder = GuidedDecoder(shipped_model, {"strength": 2.0, "b": -1.0, "source": "attention", "draft": True})
    out = decoder.generate(image, prompt, 3)
    g0 = out.evidence[0]
    assert g0 is not None and np.isclose(g0.max(), 1.0) and out.draft is not None
    assert out.evidence_passes == len(shipped_model.generate(image, prompt, 3).token_ids) + 1
    enc = shipped_model.encode([image], prompt)
    assert len(g0) == np.prod(image_token_grid(shipped_model, enc))
    positions = (enc["input_ids"][0] == shipped_model.model.config.image_token_id).nonzero().squeeze(-1)
    from eagle_pipelines.models.guidance import evidence_bias

    bias = evidence_bias(g0, 2.0, -1.0, 0.05)
    top = int(np.argmax(g0))
    with guided_attention(shipped_model.model):
        _, plain = decoder._step_logits(enc, [], None, positions, capture=True)
        _, steered = decoder._step_logits(enc, [], bias, positions, capture=True)
    layer = decoder.biased_layers[0]
    before = plain[layer][0].mean(0)[positions]
    after = steered[layer][0].mean(0)[positions]
    assert after[top] < before[top]
    assert torch.allclose(plain[0], steered[0])  # the layers before the range are untouched


def test_eagle_evidence_is_computed_once_per_prefix(shipped_model, shapes):
    from eagle_pipelines.engine import explain_image
    from eagle_pipelines.models.guidance import EvidenceCache, guided_generate

    image, _ = _biased_image(shapes)
    cache = EvidenceCache()
    setting = {"strength": 1.0, "b": 1.0, "source": "eagle", "pooled": {"pool_size": 2}}
    first = guided_generate(shipped_model, image, "Describe the image.", setting, 6, cache=cache, explain=explain_image)
    n_entries = len(cache.entries)
    assert n_entries == len(first.answer.token_ids) - (0 if first.answer.finished else 1)
    again = guided_generate(shipped_model, image, "Describe the image.", setting, 6, cache=cache, explain=explain_image)
    assert again.answer.token_ids == first.answer.token_ids
    assert len(cache.entries) == n_entries and cache.hits >= n_entries
    assert again.evidence_passes == first.evidence_passes > 0  # the cost does not depend on the cache


def test_guided_decoding_refuses_layers_outside_the_model(shipped_model):
    from eagle_pipelines.models.guidance import GuidedDecoder

    with pytest.raises(ValueError, match="outside the model's 2 decoder layers"):
        GuidedDecoder(shipped_model, {"layers": [1, 3]})
    with pytest.raises(ValueError, match="attention heads"):
        GuidedDecoder(shipped_model, {"heads": [7]})


def test_api_generate_validates_the_guidance(shipped_model, shapes):
    from eagle_pipelines.api import generate

    image, _ = _biased_image(shapes)
    with pytest.raises(ValueError, match="guidance\\['strength'\\]"):
        generate(shipped_model, image, "Describe the image.", guidance={"strength": -1})
    plain = generate(shipped_model, image, "Describe the image.")
    guided = generate(shipped_model, image, "Describe the image.", guidance={"strength": 0.0})
    assert guided.answer.text == plain.text


# --- the logit lens and the diagnostics ---------------------------------------------------------------------------
def test_the_logit_lens_last_layer_is_the_models_own_distribution(shipped_model, shapes):
    from eagle_pipelines.models.guidance import LogitLens

    image, _ = _biased_image(shapes)
    answer = shipped_model.generate(image, "Describe the image.", 16)
    lens = LogitLens(shipped_model)
    full = lens.image_logprobs(image, "Describe the image.", answer.token_ids)
    assert full.shape == (1, 2, len(answer.token_ids))
    assert np.allclose(np.exp(full[0, -1]), answer.token_probs, atol=1e-4)
    black = lens.image_logprobs(image, "Describe the image.", answer.token_ids,
                                np.zeros((1, *image.shape[:2]), dtype=bool))
    blank = shipped_model.model_image(np.zeros_like(image))
    assert np.allclose(black[1], lens.image_logprobs(blank, "Describe the image.", answer.token_ids)[0], atol=1e-5)
    text = lens.text_logprobs("Describe the image.", answer.token_ids)
    assert text.shape == (2, len(answer.token_ids)) and np.all(text <= 0)
    assert not np.allclose(text, full[0])


def test_necessity_and_sufficiency_by_hand():
    from eagle_pipelines.core.diagnostics import Diagnostics, necessity, sufficiency

    full = np.log([[0.5, 0.9], [0.9, 0.99]])
    text = np.log([[0.5, 0.1], [0.8, 0.1]])
    part = np.log([[0.5, 0.5], [0.85, 0.9]])
    n = necessity(full, text)
    assert np.allclose(n, [[0.0, np.log(9)], [np.log(9 / 8), np.log(9.9)]])
    s = sufficiency(part, full, text, eps=0.0)
    assert np.isclose(s[1, 1], np.log(9) / np.log(9.9))
    d = Diagnostics(full, text, part, tokens=["a", "red"], token_ids=[1, 2], part_regions=[[0], [1]],
                    part_area=[0.1, 0.2], prior_threshold=0.5)
    assert d.prior_driven().tolist() == [True, False]  # ln(9/8) = 0.12 < 0.5; ln(9.9) > 0.5
    rows = d.table()
    assert rows[1]["token"] == "red" and np.isclose(rows[1]["necessity"], np.log(9.9))


def test_diagnostics_round_trip_and_refuse_foreign_records(tmp_path):
    from eagle_pipelines.core.diagnostics import Diagnostics

    d = Diagnostics(np.zeros((2, 1)), np.ones((2, 1)) * -1, np.zeros((2, 1)), tokens=["Yes"], token_ids=[5])
    d.save(tmp_path / "x")
    back = Diagnostics.load(tmp_path / "x")
    assert np.allclose(back.necessity, d.necessity) and back.tokens == ["Yes"]
    (tmp_path / "y.json").write_text('{"order": [1]}')
    with pytest.raises(ValueError, match="not a readable Diagnostics record"):
        Diagnostics.load(tmp_path / "y")
    with pytest.raises(ValueError, match="layers, tokens"):
        Diagnostics(np.zeros((2, 1)), np.zeros((2, 2)), np.zeros((2, 1)))


class _Lens:
    """A lens whose log p is the fraction of the image kept (full: 1, text: 0), per layer and token."""

    def image_logprobs(self, image, prompt, ids, keep_masks=None):
        kept = [1.0] + [float(m.mean()) for m in (keep_masks if keep_masks is not None else [])]
        return np.stack([np.full((2, len(ids)), np.log(0.1 + 0.9 * k)) for k in kept])

    def text_logprobs(self, prompt, ids):
        return np.full((2, len(ids)), np.log(0.1))


class _Attribution:
    def __init__(self, order, labels):
        self.order, self.labels = np.asarray(order), labels


def test_diagnose_keeps_each_tokens_top_k_regions_as_its_part():
    from eagle_pipelines.core.diagnostics import diagnose

    labels = np.repeat(np.arange(4), 4).reshape(4, 4)  # four rows, one region each
    orders = {0: [3, 1, 0, 2], 1: [0, 2, 1, 3]}
    d = diagnose(_Lens(), np.zeros((4, 4, 3), np.uint8), "p", [7, 8], ["a", "b"],
                 lambda t: _Attribution(orders[t], labels), top_k=2, eps=0.0)
    assert d.part_regions == [[3, 1], [0, 2]] and d.part_area == [0.5, 0.5]
    # part keeps half the image: (log 0.55 − log 0.1) / (log 1 − log 0.1)
    assert np.allclose(d.sufficiency, np.log(5.5) / np.log(10))
    assert np.allclose(d.necessity, np.log(10))


def test_diagnose_on_the_shipped_model_flags_template_words_as_prior_driven(shipped_model, shapes):
    """'a' follows the caption template whatever the image: N ≈ 0 (prior-driven); a colour word needs the image."""
    from eagle_pipelines.api import diagnose

    image, _ = _biased_image(shapes)
    d = diagnose(shipped_model, image, "Describe the image.", n_regions=8, top_k=2)
    rows = d.table()
    assert rows[0]["token"] == "a" and rows[0]["prior_driven"]
    colour = next(r for r in rows if r["token"] in ("red", "green", "blue", "yellow"))
    assert not colour["prior_driven"] and colour["necessity"] > 1.0
    assert d.necessity.shape == (2, len(rows))
    fig = d.plot(title="test")
    assert len(fig.axes) == 4  # two heat maps and their colour bars


# --- metrics and the best setting ---------------------------------------------------------------------------------
CATS = ["red circle", "red square", "blue square", "green triangle"]


def _rows(biased_yes: int, control_right: int, companion: int, exact: int) -> list[dict]:
    rows = []
    for i in range(4):
        rows.append({"kind": "biased_question", "text": "Yes" if i < biased_yes else "No", "label": "no",
                     "objects": "red circle", "decode_passes": 2, "evidence_passes": 0, "seconds": 0.1})
        rows.append({"kind": "control_question", "text": "No" if i < control_right else "Yes", "label": "no",
                     "objects": "green triangle", "decode_passes": 2, "evidence_passes": 4, "seconds": 0.3})
        rows.append({"kind": "biased_caption", "label": "a red circle", "objects": "red circle",
                     "text": "a red circle and a blue square" if i < companion else "a red circle",
                     "decode_passes": 6, "evidence_passes": 0, "seconds": 0.2})
        rows.append({"kind": "unbiased_caption", "label": "a green triangle", "objects": "green triangle",
                     "text": "a green triangle" if i < exact else "a red square", "decode_passes": 4,
                     "evidence_passes": 0, "seconds": 0.2})
    return rows


def test_setting_metrics_by_hand():
    from eagle_pipelines.core.diagnostics import objects_named, setting_metrics

    assert objects_named("a red circle, a blue square and a red square", CATS) == {"red circle", "blue square",
                                                                                  "red square"}
    m = setting_metrics(_rows(biased_yes=3, control_right=2, companion=1, exact=4), "blue square", CATS)
    assert m["hallucination_rate_biased"] == 0.75 and m["accuracy_unbiased"] == 0.5
    assert m["companion_rate_captions"] == 0.25 and m["object_hallucination_captions"] == 0.25
    assert m["exact_match_biased_captions"] == 0.75 and m["exact_match_unbiased_captions"] == 1.0
    assert np.isclose(m["decode_passes"], 3.5) and np.isclose(m["evidence_passes"], 1.0)
    assert np.isclose(m["seconds_per_answer"], 0.2)


def test_the_best_setting_lowers_hallucination_within_the_allowed_drop():
    from eagle_pipelines.core.diagnostics import best_setting, setting_metrics

    def row(name, **kw):
        return {"setting": name, **setting_metrics(_rows(**kw), "blue square", CATS)}

    base = row("greedy", biased_yes=3, control_right=4, companion=1, exact=4)
    costly = row("costly", biased_yes=0, control_right=3, companion=0, exact=4)  # accuracy −0.25
    modest = row("modest", biased_yes=2, control_right=4, companion=1, exact=4)
    useless = row("useless", biased_yes=3, control_right=4, companion=1, exact=4)
    assert best_setting([base, costly, modest, useless], 0.02)["setting"] == "modest"
    assert best_setting([base, costly, modest], 0.5)["setting"] == "costly"
    assert best_setting([base, costly, useless], 0.02) is None  # nothing helps within the limit


def test_the_sweep_is_a_grid_over_the_guidance_fields():
    from eagle_pipelines.parameters import EagleMitigationParams

    p = EagleMitigationParams(sweep={"strength": [1.0, 2.0], "b": [1.0, -1.0]})
    settings = p.settings()
    assert len(settings) == 5 and settings[0].strength == 0.0
    assert {(s.strength, s.b) for s in settings[1:]} == {(1.0, 1.0), (1.0, -1.0), (2.0, 1.0), (2.0, -1.0)}
    with pytest.raises(ValueError, match="unknown guidance fields \\['lamda'\\]"):
        EagleMitigationParams(sweep={"lamda": [1.0]}).settings()


# --- the pipeline's nodes -----------------------------------------------------------------------------------------
def test_the_tasks_reuse_eagle_repopes_questions_and_add_a_caption_per_image(shapes):
    from eagle_pipelines.parameters import RepopeQuestionParams
    from eagle_pipelines.pipelines.eagle_mitigation.nodes import prepare_tasks
    from eagle_pipelines.pipelines.eagle_repope.nodes import generate_question_split

    q = RepopeQuestionParams(biased=3, controls=4)
    (images, instances, captions), tasks = prepare_tasks(shapes, q, "Is there a {name} in the image?",
                                                         "Describe the image.", 3, 16)
    repope_images, _, _ = generate_question_split(shapes, q, "Is there a {name} in the image?")
    assert sorted(images) == sorted(repope_images)
    counts = tasks["kind"].value_counts().to_dict()
    assert counts == {"biased_question": 3, "control_question": 4, "biased_caption": 3, "unbiased_caption": 4}
    biased = tasks[tasks["kind"] == "biased_question"]
    assert (biased["prompt"] == "Is there a blue square in the image?").all() and (biased["label"] == "no").all()
    for objects in tasks[tasks["kind"] == "biased_caption"]["objects"]:
        assert "red circle" in objects.split(";") and "blue square" not in objects.split(";")
    refs = {c["image_id"]: c["caption"] for c in captions["annotations"]}
    caps = tasks[tasks["kind"].str.endswith("caption")]
    assert all(refs[i] == label for i, label in zip(caps["image_id"], caps["label"]))


def test_decode_sweep_and_summarise_through_the_item_store(tmp_path, shipped_model, shapes):
    from eagle_pipelines.io.items import ItemStore, Manifest
    from eagle_pipelines.io.split_dataset import CocoSplitDataset
    from eagle_pipelines.parameters import GuidanceParams, RepopeQuestionParams
    from eagle_pipelines.pipelines.eagle_mitigation.nodes import decode_sweep, prepare_tasks, setting_keys, summarise

    split, tasks = prepare_tasks(shapes, RepopeQuestionParams(biased=2, controls=2),
                                 "Is there a {name} in the image?", "Describe the image.", 3, 16)
    dataset = CocoSplitDataset(str(tmp_path / "split"))
    dataset.save(split)
    store = ItemStore(tmp_path / "store", "record")
    guidance = GuidanceParams(source="attention", draft=True)
    manifest = Manifest(decode_sweep(shipped_model, dataset.load(), tasks, guidance, {"b": [-1.0]}).run(store))
    assert len(manifest) == 2
    plain = manifest.load(setting_keys(manifest)[0])
    assert plain["guidance"]["strength"] == 0.0
    for a, r in zip(plain["answers"], tasks.to_dict("records")):
        image = dataset.load().image(int(r["image_id"])).pixels
        model_image = shipped_model.model_image(image)
        assert a["text"] == shipped_model.generate(model_image, r["prompt"], int(r["max_new_tokens"])).text
    table, per_sample = summarise(tasks, manifest, shapes, 0.02)
    assert list(table["setting"]) == ["greedy (no guidance)", guidance.model_copy(update={"b": -1.0}).label()]
    assert table["extra_passes_per_answer"].iloc[0] == 0 and table["extra_passes_per_answer"].iloc[1] > 0
    assert len(per_sample) == 2 * len(tasks)
    again = Manifest(decode_sweep(shipped_model, dataset.load(), tasks, guidance, {"b": [1.0, -1.0]}).run(store))
    minus = setting_keys(manifest)[1]
    assert setting_keys(again)[2] == minus  # the same setting keeps its item wherever the sweep puts it
    assert again.info(minus)["fp"] == manifest.info(minus)["fp"]
    assert again.load(minus) == manifest.load(minus)
    assert len(again) == 3
    assert isinstance(per_sample, pd.DataFrame)
