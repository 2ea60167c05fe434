"""Parity switches: parameters that select the reference's reading of a point (conf/paper) instead of ours
(conf/base). Docs: docs/paper.md, "Parity with the reference".

A switch at its base value is left out of the parameter model's dump, so adding one changes no fingerprint of
items made before it existed (the item stores of ``make run`` stay valid and its results identical); at the
reference's value it is in the dump, so the items it changes are filed apart.

``StrictModel``: the base of the parameter models that take no parity switch (unknown keys refused, frozen).
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict, model_serializer


class StrictModel(BaseModel):
    """The base of a parameter model: an unknown key is refused (a misspelt setting is an error, not ignored) and a
    parsed value cannot be changed."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ParitySwitches(BaseModel):
    """Mixin: the fields named in ``parity_switches`` are dumped only when they differ from their default."""

    parity_switches: ClassVar[tuple[str, ...]] = ()

    @model_serializer(mode="wrap")
    def _omit_base_switches(self, handler):
        data = handler(self)
        for name in self.parity_switches:
            if name in data and getattr(self, name) == type(self).model_fields[name].default:
                del data[name]
        return data
