"""The one registry of search strategies (``STRATEGIES``: name -> search function, its forward-pass count, its
settings model) and the one model of a search's settings (``SearchParams``), from which the pipelines' parameters
(``attribution``, ``eagle_video``, ``eagle_mitigation.guidance``), ``explain()``'s checks and ``eagle-explain
--strategy`` all take the strategy names.

A new strategy is one module and one line here: the module has the search,
``search(scorer: CountingScorer, lambda1, lambda2, **settings, progress=None) -> SearchTrace``, its forward-pass
count ``passes(n, **settings) -> int`` and (when it has settings) a pydantic model of them; the line is
``"name": Strategy(search, passes, SettingsModel)``. Its settings are then ``params:attribution.<name>`` (the
pipelines) and ``search_params`` (``explain()``). See docs/method.md, "Adding a search strategy".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, create_model, model_validator

from eagle_pipelines.core.search import (Count, EfficientParams, LazyParams, PooledParams, SearchTrace,
                                         bidirectional, bidirectional_passes, efficient, efficient_passes, greedy,
                                         greedy_passes, lazy, lazy_passes, pooled, pooled_passes, windowed,
                                         windowed_passes, WindowedParams)


@dataclass(frozen=True)
class Strategy:
    """A search strategy: the search, its forward passes over n regions (``passes(n, **settings)``), the pydantic
    model of its settings (None: it takes none), whether that count is exact or a lower bound, and the key its
    settings sit under in ``SearchParams`` (its name by default; ``bidirectional`` shares ``efficient``'s)."""

    search: Callable[..., SearchTrace]
    passes: Callable[..., int]
    params: type[BaseModel] | None = None
    exact: bool = True
    group: str | None = None


STRATEGIES: dict[str, Strategy] = {
    "pooled": Strategy(pooled, pooled_passes, PooledParams),
    "greedy": Strategy(greedy, greedy_passes),
    "efficient": Strategy(efficient, efficient_passes, EfficientParams),
    "bidirectional": Strategy(bidirectional, bidirectional_passes, EfficientParams, group="efficient"),
    "lazy": Strategy(lazy, lazy_passes, LazyParams, exact=False),
    "windowed": Strategy(windowed, windowed_passes, WindowedParams),
}


def group_of(name: str) -> str:
    """The key of strategy `name`'s settings in ``SearchParams``."""
    return STRATEGIES[name].group or name


def _known(name: str) -> str:
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose one of {sorted(STRATEGIES)}")
    return name


#: a strategy's name: one of the registry's (checked when the value is validated, so a strategy registered later
#: is accepted too)
StrategyName = Annotated[str, AfterValidator(_known), Field(json_schema_extra={"enum": list(STRATEGIES)})]
#: a weight of the EAGLE objective: a finite number >= 0 (not inf, not nan; the YAML string 'inf' neither)
Weight = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class _Search(BaseModel):
    """How one target is searched: the strategy, the objective's weights, the scoring's batch and memory."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    strategy: StrategyName = "pooled"
    lambda1: Weight = 1.0
    lambda2: Weight = 1.0
    batch_size: Count = Field(default=32, description="the most masked images per forward pass")
    memory_budget_mb: float | None = Field(
        default=None, ge=0, allow_inf_nan=False,
        description="peak memory the scoring may use (MB); null: what the device has; 0: no planning")

    @model_validator(mode="after")
    def _objective(self):
        if self.lambda1 == 0 and self.lambda2 == 0:
            raise ValueError("lambda1 and lambda2 are both 0: the objective would be constant and the order "
                             "arbitrary; give at least one of them a value > 0")
        return self

    @property
    def spec(self) -> Strategy:
        return STRATEGIES[self.strategy]

    def search_params(self, defaults: bool = True) -> dict:
        """The chosen strategy's settings, every field (`defaults` False: only those that differ from their
        defaults); {} for a strategy without any."""
        settings = getattr(self, group_of(self.strategy), None)
        if settings is None and self.spec.params is not None:
            settings = self.spec.params()
        return settings.model_dump(exclude_defaults=not defaults) if settings is not None else {}


def _search_model() -> type[BaseModel]:
    """``SearchParams``: ``_Search`` plus one settings field per strategy group of the registry (``pooled``,
    ``efficient``, ``lazy``), so a new strategy needs no line here."""
    groups: dict[str, type[BaseModel]] = {}
    for name, spec in STRATEGIES.items():
        if spec.params is not None:
            groups.setdefault(spec.group or name, spec.params)
    return create_model("SearchParams", __base__=_Search, __module__=__name__,
                        **{group: (groups[group], groups[group]()) for group in sorted(groups)})


SearchParams = _search_model()
SearchParams.__doc__ = ("How one target is searched (``params:attribution``, ``eagle_video``, guidance, explain()): "
                        "strategy, lambda1, lambda2, batch_size, memory_budget_mb and each strategy group's "
                        "settings (only the chosen strategy's are used).")
