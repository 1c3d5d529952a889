"""The run's plan: its config read, checked and fitted once, then only read.

`config.load.resolve` makes the first plan from config.list and --set; fitting it to the folder
(training/setup.py `fit_to_folder`: the recipe's open keys, the class weights "auto" counts, the
unlabeled images' threshold) makes the final plan with `with_changes`, which returns a new plan.
No code writes to a plan: it has no item assignment, and every list or dict read from it is a copy,
so a reader cannot change what the next reader sees. What changes during a run lives in the run's
own state (training/schedule.py: the schedule's length, which a time budget moves).

A plan reads like the config dict it replaces (`plan["lr"]`) and is saved as one (`as_dict`), so
checkpoints and exported files keep their format.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Mapping
from typing import Any

from segtrain.config.time_budget import budget_seconds


class Plan(Mapping[str, Any]):
    """An immutable mapping of config keys to JSON-able built-ins, with the facts parsed from them."""

    __slots__ = ("_values", "budget_seconds")

    def __init__(self, values: Mapping[str, Any]):
        # A JSON round trip both copies and proves the values are plain data a checkpoint can hold.
        object.__setattr__(self, "_values", json.loads(json.dumps(dict(values))))
        # Checked by resolve (config/load.py); parsed here, once.
        object.__setattr__(self, "budget_seconds", budget_seconds(self._values.get("time_budget")))

    def __getitem__(self, key: str) -> Any:
        value = self._values[key]
        return copy.deepcopy(value) if isinstance(value, (list, dict)) else value

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __setattr__(self, name, value):
        raise AttributeError(f"a Plan is read-only ({name}); make a new one with with_changes")

    def __repr__(self) -> str:
        return f"Plan({self._values!r})"

    def __reduce__(self):
        return Plan, (self._values,)

    def with_changes(self, **changes: Any) -> Plan:
        """A new plan with these keys set (the fitting stages' results); this one is unchanged."""
        return Plan({**self._values, **changes})

    def as_dict(self) -> dict[str, Any]:
        """A copy as a plain dict: what a checkpoint or exported file stores as its "config"."""
        return copy.deepcopy(self._values)

    @property
    def model_entry(self):
        """The registry's entry of the plan's model (models/registry.py): how to build it, its
        aux head, its smallest input, its default encoder."""
        from segtrain.models.registry import MODELS

        return MODELS[self._values["model"]]

    @property
    def input_size(self) -> tuple[int, int] | None:
        """(height, width) of the model's input; None = each image's native size."""
        size = self._values["image_size"]
        return None if size is None else (size[0], size[1])
