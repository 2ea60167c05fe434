"""One place that maps each parameter group (``params:<group>``) to its pydantic model.

``parse`` turns the dict Kedro passes to a node into the validated model; ``ParameterError`` names the exact
dotted parameter that is wrong and where it is set, so a bad value never surfaces as a traceback deep in a node.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from eagle_pipelines.core.baselines import BASELINES, CaptumParams, IgosParams, LlavaCamParams, TamParams  # noqa: F401
from eagle_pipelines.core.parity import ParitySwitches
from eagle_pipelines.core.search import Count, EfficientParams, LazyParams, PooledParams  # noqa: F401
from eagle_pipelines.core.strategies import SearchParams
from eagle_pipelines.data.clips import ClipParams
from eagle_pipelines.data.coco_sample import EvalDataParams
from eagle_pipelines.data.mmvp import MmvpParams
from eagle_pipelines.data.params import RepopeQuestionParams, ShapesParams  # noqa: F401 - RepopeQuestionParams: re-exported
from eagle_pipelines.errors import UserError
from eagle_pipelines.models.guidance import GuidanceParams
from eagle_pipelines.models.toy import ToyModelParams


#: the most regions a superpixel setting may ask for: a 1024x1024 image at 16 pixels per region (engine.py:
#: MIN_REGION_PIXELS). The image's own limit (H·W / 16 of the image the regions are drawn on) is checked per image
#: by explain(), and at start by the pipelines where the image size is a parameter (hooks.py)
MAX_SEGMENTS = 65536


def _not_blank(text: str) -> str:
    if not text.strip():
        raise ValueError("must be a non-empty question (explain() refuses a blank prompt too)")
    return text


#: a prompt: not empty, not only spaces
Prompt = Annotated[str, AfterValidator(_not_blank)]


class ExperimentParams(BaseModel):
    """What an experiment explains on which images (``params:eagle_coco``, ``params:eagle_mmvp``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: Prompt = Field(default="Describe the image.", description="the question asked about every image")
    max_images: int | None = Field(default=None, gt=0, description="explain only the first N images")
    max_new_tokens: Count = 32
    batch_size: Count = 32


EagleCocoParams = ExperimentParams


class SuperpixelParams(ParitySwitches):
    """The regions EAGLE orders, and where masking happens (docs/method.md, docs/regions.md).

    ``backend``: ``skimage`` (scikit-image ``slic(..., slic_zero=True)``, connected regions; `compactness`,
    `max_num_iter`, `sigma`) or ``opencv`` (the reference's OpenCV SLICO: region size sqrt(H·W/n), `ruler`,
    `num_iterations`, no connectivity enforcement; the ``opencv`` extra). ``compose``: ``pixel_values`` (regions and
    masks on the image the model sees) or ``processor`` (the reference's protocol: regions and masks on the photo,
    the processor resizes every masked copy; attributions and Point Game at the photo's resolution)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    parity_switches = ("opencv_labels",)

    backend: Literal["skimage", "opencv"] = "skimage"
    n_segments: int = Field(default=64, strict=True, ge=2, le=MAX_SEGMENTS,
                            description="about this many regions: an integer from 2 to 65536 (and at most one per "
                                        "16 pixels of the image)")
    compactness: float = Field(default=10.0, gt=0, allow_inf_nan=False)
    max_num_iter: Count = 10
    sigma: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    ruler: float = Field(default=20.0, gt=0, allow_inf_nan=False)
    num_iterations: Count = 20
    opencv_labels: Literal["renumbered", "opencv"] = Field(
        default="renumbered",
        description="opencv backend: renumbered (ids 0..n-1 in raster order, ids without pixels dropped) or opencv "
                    "(OpenCV's own ids and count kept, an id without pixels a no-op region, as the reference)")
    compose: Literal["pixel_values", "processor"] = "pixel_values"

    def region_params(self) -> dict:
        """The backend and its own settings (``core/regions.py: superpixels``)."""
        if self.backend == "opencv":
            # the default numbering adds no key, so label maps made before the switch keep their fingerprints
            labels = {"labels": self.opencv_labels} if self.opencv_labels != "renumbered" else {}
            return {"backend": "opencv", "n_segments": self.n_segments, "ruler": self.ruler,
                    "num_iterations": self.num_iterations, **labels}
        return {"backend": "skimage", "n_segments": self.n_segments, "compactness": self.compactness,
                "max_num_iter": self.max_num_iter, "sigma": self.sigma}


class AttributionParams(SearchParams):
    """The EAGLE search (``SearchParams``: core/strategies.py, the same model ``explain()`` checks its arguments
    with) and what it explains; the pipelines validate ``params:attribution`` with it before any node runs."""

    batch_size: Count = Field(default=64, description="the most masked images per forward pass")
    levels: tuple[Literal["sentence", "word"], ...] = Field(
        default=("sentence", "word"), min_length=1, description="sentence, word or both (at least one)")
    word_targets: Literal["objects"] | list[str | int] = Field(
        default="objects",
        description="'objects': the category name of each annotated object (one attribution per object); "
                    "or words / token positions to explain in every answer that has them",
    )
    end_token: bool = Field(
        default=False,
        description="sentence level also explains the end-of-turn token that ended the answer (<|im_end|> for "
                    "Qwen), as the reference's caption lists do")
    word_selection: Literal["each", "once", "reference"] = Field(
        default="each",
        description="'each': every annotated object the answer names (whole words: name, plural, synonyms), all "
                    "tokens of its word; 'once': one target per image, the first token of the first of the image's "
                    "objects (in category order) that the answer names; 'reference': the reference's rule, per "
                    "category the first eval_data.coco.word_quota candidate images whose answer contains the "
                    "category name as a substring, any case, the token where it begins")


class EvaluationParams(ParitySwitches):
    """One protocol for every method (see docs/evaluation.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    parity_switches = ("pixel_ties",)

    pixel_steps: Count = Field(default=16, description="keep/remove steps of the pixel protocol")
    pixel_ties: Literal["stable", "numpy_default"] = Field(
        default="stable",
        description="order of equal-saliency pixels in the pixel protocol: stable (raster order, the same on every "
                    "machine) or numpy_default (the reference's np.argsort(-map), numpy's unstable default sort; "
                    "its tie order depends on the numpy build)")
    random_seed: int = 0
    batch_size: Count = 256


def _baselines_model() -> type[BaseModel]:
    """``params:baselines``: which methods run and each method's settings, built from the baseline registry
    (core/baselines/__init__.py: one record per method), so a new method needs no line here."""
    from pydantic import create_model

    names = tuple(BASELINES)

    def settings(self, method: str) -> dict:
        return getattr(self, method).model_dump()

    model = create_model(
        "BaselinesParams",
        __config__=ConfigDict(extra="forbid", frozen=True),
        __doc__="Which baselines run beside EAGLE and their settings (see docs/baselines.md).",
        methods=(list[Literal[names]], Field(default=list(names), description="which baselines run")),
        **{name: (spec.params, spec.params()) for name, spec in BASELINES.items()},
    )
    model.settings = settings
    return model


BaselinesParams = _baselines_model()


class ReportingParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    figure_samples: Count = Field(default=6, description="images shown in the overlay figures")
    headline_protocol: Literal["pixels", "regions"] = Field(
        default="pixels",
        description="the protocol of the methods that order regions (EAGLE, random) in the report's headline table: "
                    "pixels (every method alike) or regions (their own region curves, as the reference scores "
                    "EAGLE: evals/eval_AUC_faithfulness.py); the baselines are always under pixels")


class PaperComparisonParams(BaseModel):
    """The run's model preset and how presets map onto the paper's model names (``params:paper_comparison``;
    reporting/paper.py compares the run's tables with the paper's cells of that model)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    preset: str = Field(description="the model preset this run explains (conf/paper: --params model=<preset>)")
    paper_models: dict[str, str | None] = Field(
        description="model preset (conf/paper/globals.yml) -> the model's name in the paper's tables; null: a "
                    "preset the paper does not report")

    @model_validator(mode="after")
    def _preset_is_mapped(self):
        if self.preset not in self.paper_models:
            raise ValueError(f"the model preset {self.preset!r} has no entry in paper_comparison.paper_models "
                             "(conf/base/parameters_paper_comparison.yml): add it, with the paper's model name or "
                             "null")
        return self


class EagleRepopeParams(BaseModel):
    """Hallucination diagnosis on yes/no questions (see docs/hallucination.md). The nodes read the sub-models they
    use (``answering``, ``correction``), so a field only the tables read reruns only the tables."""

    class Answering(BaseModel):
        """How the answers are generated and read: the first answers and every regeneration after removal."""

        model_config = ConfigDict(extra="forbid", frozen=True)

        max_new_tokens: Count = 3
        batch_size: Count = Field(default=32, description="images per generation batch")
        answer_reading: Literal["ours", "reference"] = Field(
            default="ours", description="ours: the first word, any case; reference: the decoded text starts with "
                                        "'Yes' / 'No', case-sensitive")

    class Correction(BaseModel):
        """Correction by removal: which orders' lowest-ranked regions are removed, and how the answers are
        regenerated after removal: our protocol (default) or the reference's (conf/paper; docs/hallucination.md,
        "Parity with the reference")."""

        model_config = ConfigDict(extra="forbid", frozen=True)
        #: the fields of the removal protocol (ours or the reference's), as the manifests have always recorded it
        PROTOCOL: ClassVar[tuple[str, ...]] = ("removal_steps", "baseline_maps", "pixel_steps", "invert_maps")

        methods: list[Literal[("eagle", "random", *BASELINES)]] = Field(
            default=["eagle", "random", *BASELINES], min_length=1,
            description="orders whose lowest-ranked regions are removed: eagle, random (the floor), or a baseline "
                        "(its map of the counter token ranks the regions; settings from params:baselines)")
        random_seed: int = 0
        cause_min_overlap: float = Field(default=0.0, ge=0, lt=1, description="a cause hit needs more than this "
                                                                               "fraction of the region in the cause")
        stop_at_first: bool = Field(default=True, description="stop regenerating at the first correction")
        removal_steps: Literal["ours", "reference"] = Field(
            default="ours", description="ours: k = 1..n lowest-ranked regions removed (the last step a black "
                                        "image); reference: k = 0..n-1 (the intact image first, never a black one)")
        baseline_maps: Literal["regions", "pixels"] = Field(
            default="regions", description="regions: a baseline's map ranks the superpixels by mean saliency; "
                                           "pixels: the reference's pixel protocol, the top i/pixel_steps of the "
                                           "map's pixels kept (its lowest bands removed)")
        pixel_steps: Count = Field(default=64, description="bands of the pixel protocol (the reference: 64)")
        invert_maps: list[Literal[tuple(BASELINES)]] = Field(
            default=[], description="baselines whose map is turned upside down before ranking (the reference "
                                   "inverts TAM's on RePOPE)")

        def protocol(self) -> dict:
            """The removal protocol's fields (what the manifests record as ``correction``)."""
            return self.model_dump(mode="json", include=set(self.PROTOCOL))

        def pixel_protocol(self, method: str) -> bool:
            """Whether `method`'s map goes through the pixel protocol (its saliency bands) instead of the
            regions."""
            return method not in ("eagle", "random") and self.baseline_maps == "pixels"

        def protocol_facts(self, method: str, answer_reading: str = "ours") -> dict:
            """What of the reading and removal protocol differs from ours for `method` (empty under ours: the
            fingerprints of our protocol's records stay as they were before these settings existed)."""
            facts = {}
            if answer_reading != "ours":
                facts["answer_reading"] = answer_reading
            if self.removal_steps != "ours":
                facts["removal_steps"] = self.removal_steps
            if self.pixel_protocol(method):
                facts["pixel_steps"] = self.pixel_steps
            if method in self.invert_maps:
                facts["inverted"] = True
            return facts

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: Literal["shapes", "repope"] = Field(
        default="shapes", description="shapes: the embedded question set; repope: the RePOPE list and COCO val2014 "
                                      "images of the catalog entry `repope_source` (the paper environment)")
    questions: RepopeQuestionParams = RepopeQuestionParams()
    question_template: str = "Is there a {name} in the image?"
    prompt_template: str = Field(
        default="{question}", pattern=r"\{question\}|\{\}",
        description="the prompt around each question: '{question}' (or '{}') is replaced by it; the reference's "
                    "multi-line yes/no instruction in conf/paper")
    prompt_suffix: str = Field(default="", description="appended to every prompt (after prompt_template)")
    max_questions: int | None = Field(default=None, gt=0, description="use only the first N questions")
    answering: Answering = Answering()
    correction: Correction = Correction()
    csr_threshold: float = Field(default=0.1, gt=0, le=1, description="CSR@threshold (area fraction)")
    figure_samples: Count = 6
    prompt_units: Literal["none", "words"] = Field(
        default="none", description="none: the search orders the image's regions; words: one joint order over the "
                                    "regions and the words of each question's prompt (docs/joint.md): the "
                                    "attributions are joint records")

    @property
    def methods(self) -> list[str]:
        """The methods of the correction (``correction.methods``): the tables' rows."""
        return list(self.correction.methods)


class EagleMmvpParams(ParitySwitches):
    """VQA with a prompt per question, MMVP-style (docs/paper.md#mmvp): what eagle_mmvp explains."""

    class Embedded(BaseModel):
        """The embedded question set: pairs of shapes images (split ``mmvp``) that differ in one object's colour."""

        model_config = ConfigDict(extra="forbid", frozen=True)

        pairs: Count = Field(default=5, description="image pairs; four yes/no questions each")
        seed: int = Field(default=0, description="draws the images and the object each pair recolours")
        question_template: str = "Is there a {name} in the image?"
        prompt_suffix: str = Field(default="", description="appended to every question (e.g. ' Answer with Yes or "
                                                           "No.' for real models)")

    model_config = ConfigDict(extra="forbid", frozen=True)
    parity_switches = ("prompt_format",)

    source: Literal["embedded", "mmvp", "reference_list"] = Field(
        default="embedded", description="embedded: the question set drawn from the shapes benchmark; mmvp: the "
                                        "local MMVP copy of the catalog entry `mmvp_source`; reference_list: the "
                                        "reference's MMVP list (`reference_list`) on that copy's images")
    embedded: Embedded = Embedded()
    instruction: str = Field(default="Answer with the option's letter from the given choices directly.",
                             description="mmvp: appended to every question, after its options")
    prompt_format: Literal["options", "bare"] = Field(
        default="options", description="mmvp: options (the question, its options and the instruction) or bare (the "
                                       "question alone, as the reference asks it)")
    max_questions: int | None = Field(default=None, gt=0, description="only the first N questions")
    max_new_tokens: Count = 8
    batch_size: Count = Field(default=32, description="images per generation batch")
    prompt_units: Literal["none", "words"] = Field(
        default="none", description="none: the search orders the image's regions; words: one joint order over the "
                                    "regions and the words of each question's prompt (docs/joint.md): the "
                                    "attributions are joint records")


class MitigationDiagnosticsParams(BaseModel):
    """Necessity and sufficiency per token and layer (core/diagnostics.py) on a few answers."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    answers: int = Field(default=3, ge=0, description="answers diagnosed per kind (biased/control question, "
                                                      "biased/unbiased caption)")
    top_k: Count = Field(default=3, description="'part': the token's top-k EAGLE regions kept")
    n_regions: int = Field(default=16, ge=2, description="SLICO regions of the diagnostics' EAGLE attributions")
    eps: float = Field(default=1e-3, gt=0, description="ε of the sufficiency ratio")
    prior_threshold: float = Field(default=0.5, description="a token is prior-driven when N_t (last layer, nats) "
                                                            "is below this")


class EagleMitigationParams(BaseModel):
    """Evidence-guided decoding measured on the embedded data (docs/mitigation.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    questions: RepopeQuestionParams = RepopeQuestionParams(biased=40, controls=40)
    question_template: str = "Is there a {name} in the image?"
    caption_prompt: Prompt = "Describe the image."
    question_max_new_tokens: Count = 3
    caption_max_new_tokens: Count = 16
    guidance: GuidanceParams = GuidanceParams()
    sweep: dict[str, list] = Field(
        default_factory=dict, description="a grid over guidance fields, e.g. {strength: [0.5, 1], b: [1, -1]}; "
                                          "every combination is one setting, beside plain greedy decoding")
    max_drop: float = Field(default=0.02, ge=0, description="the best setting may lower unbiased accuracy and "
                                                            "caption exact match by at most this")
    threads: Count | None = Field(default=1, description="torch threads while decoding and diagnosing "
                                                               "(restored after); null: torch's default")
    diagnostics: MitigationDiagnosticsParams = MitigationDiagnosticsParams()

    def settings(self) -> list[GuidanceParams]:
        """Plain greedy decoding, then every combination of the sweep over the base guidance (validated)."""
        import itertools

        unknown = sorted(set(self.sweep) - set(GuidanceParams.model_fields))
        if unknown:
            raise ValueError(f"eagle_mitigation.sweep: unknown guidance fields {unknown}; allowed: "
                             f"{sorted(GuidanceParams.model_fields)}")
        base = self.guidance.model_dump()
        out = [GuidanceParams(**{**base, "strength": 0.0})]
        names = sorted(self.sweep)
        for values in itertools.product(*(self.sweep[n] for n in names)):
            setting = GuidanceParams(**{**base, **dict(zip(names, values))})
            if setting not in out:
                out.append(setting)
        return out


class RayParams(BaseModel):
    """Where and how ``compute.executor: ray`` runs the per-item jobs (docs/scale.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    address: str = Field(
        default="local", pattern=r"^(local|auto|ray://\S+|[\w.\-]+:\d+)$",
        description="local: a Ray instance started for this run; auto: the cluster this host joined (ray start); "
                    "ray://<head>:10001: a remote cluster through Ray Client; <head>:6379: a cluster by address")
    workers: Count = Field(default=2, description="Ray actors; each loads the model once and makes items")
    gpus_per_worker: float = Field(default=0.0, ge=0, description="GPUs each worker reserves (1 on a GPU node)")
    cpus_per_worker: float = Field(default=1.0, gt=0, description="CPUs each worker reserves (and torch threads)")
    max_restarts: int = Field(default=4, ge=-1, description="times Ray restarts a worker that died (-1: always)")
    max_task_retries: int = Field(default=1, ge=0, description="times an item whose worker died is retried "
                                                                "before it is recorded as failed")
    runtime_env: dict | None = Field(default=None, description="Ray runtime_env of the workers (pip, env_vars, "
                                                               "working_dir), when the cluster's image lacks them")
    driver_folder: bool = Field(default=True, description="workers change to the driver's working folder when it "
                                                          "exists on their host (relative catalog paths resolve as "
                                                          "in the driver); false: they stay in their own (a job "
                                                          "working_dir), for data all on an object store (--env=s3)")


class EagleVideoParams(SearchParams):
    """eagle_video (``params:eagle_video``, docs/video.md): which clips, the search over each clip's spatio-temporal
    grid (rows × cols cells per frame) and the evaluation protocol shared by EAGLE and the random floor."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_clips: int | None = Field(default=None, gt=0, description="explain only the first N clips of the split")
    max_new_tokens: Count = 8
    targets: Literal["event", "answer"] = Field(
        default="event", description="event: the words naming the clip's event object ('red circle'); answer: "
                                     "every answer token ('a red circle')")
    rows: Count = 5
    cols: Count = 5
    batch_size: Count = Field(default=16, description="masked clips per forward pass")
    curve_steps: Count = Field(default=16, description="prefix lengths at which every method's insertion "
                                                             "and deletion curves are scored")
    random_seed: int = 0
    figures: int = Field(default=3, ge=0, description="clips drawn in the report (per-frame overlays and a GIF)")


class ComputeParams(BaseModel):
    """Where the per-item jobs (superpixels, attribution, baselines, per-sample evaluation, hallucination
    correction) run: ``sequential`` in the run's own process, or ``ray`` on Ray workers. Outputs are the same
    either way; only where they are computed changes (read by ``hooks.ComputeHook``, not by a node)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    executor: Literal["sequential", "ray"] = "sequential"
    ray: RayParams = RayParams()


#: parameter groups read by a hook, not by a node (they decide where the work runs, not what it computes)
HOOK_PARAMETER_GROUPS: frozenset[str] = frozenset({"compute"})

PARAMETER_MODELS: dict[str, type[BaseModel]] = {
    "shapes": ShapesParams,
    "eval_data": EvalDataParams,
    "mmvp": MmvpParams,
    "toy_model": ToyModelParams,
    "eagle_coco": ExperimentParams,
    "superpixels": SuperpixelParams,
    "attribution": AttributionParams,
    "evaluation": EvaluationParams,
    "baselines": BaselinesParams,
    "reporting": ReportingParams,
    "paper_comparison": PaperComparisonParams,
    "eagle_repope": EagleRepopeParams,
    "eagle_mmvp": EagleMmvpParams,
    "eagle_mitigation": EagleMitigationParams,
    "compute": ComputeParams,
    "clips": ClipParams,
    "eagle_video": EagleVideoParams,
}
PARAMETER_FILES = {
    "shapes": "conf/<env>/parameters_data_preparation.yml",
    "eval_data": "conf/<env>/parameters_data_preparation.yml",
    "mmvp": "conf/<env>/parameters_data_preparation.yml",
    "toy_model": "conf/<env>/parameters_toy_model.yml",
    "eagle_coco": "conf/<env>/parameters_eagle_coco.yml",
    "superpixels": "conf/<env>/parameters_superpixels.yml",
    "attribution": "conf/<env>/parameters_attribution.yml",
    "evaluation": "conf/<env>/parameters_evaluation.yml",
    "baselines": "conf/<env>/parameters_baselines.yml",
    "reporting": "conf/<env>/parameters_reporting.yml",
    "paper_comparison": "conf/<env>/parameters_paper_comparison.yml",
    "eagle_repope": "conf/<env>/parameters_eagle_repope.yml",
    "eagle_mmvp": "conf/<env>/parameters_eagle_mmvp.yml",
    "eagle_mitigation": "conf/<env>/parameters_eagle_mitigation.yml",
    "compute": "conf/<env>/parameters_compute.yml",
    "clips": "conf/<env>/parameters_clips.yml",
    "eagle_video": "conf/<env>/parameters_eagle_video.yml",
}


class ParameterError(UserError, ValueError):
    """A parameter group failed validation; the message lists every wrong key with its dotted name."""


def parse(group: str, value: dict | BaseModel):
    """Validates `value` against the model of parameter group `group`."""
    model = PARAMETER_MODELS[group]
    if isinstance(value, model):
        return value
    try:
        return model.model_validate(value if value is not None else {})
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in (group, *err["loc"]))
            got = f" (got {err['input']!r})" if "input" in err and not isinstance(err["input"], dict) else ""
            msg = str(err["ctx"]["error"]) if err["type"] == "value_error" and "error" in err.get("ctx", {}) \
                else err["msg"]
            lines.append(f"  - {loc}: {msg}{got}")
        raise ParameterError(
            f"Invalid parameters in '{group}' (set in {PARAMETER_FILES[group]} or by --params):\n" + "\n".join(lines)
        ) from None
