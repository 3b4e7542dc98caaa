"""What a task is: a split's items -> the regions to encode -> one scored line per unit -> metrics.

The split into steps follows lm-evaluation-harness (``process_results`` per document, then
``aggregation``): a :class:`Task` knows what its items, regions, texts and metrics are, and nothing
about loops. The experiment runner (:func:`falip.experiments.runner.evaluate_split`) owns every loop
around it -- splits, limit, resume, skips, predictions file, progress, counters -- so a new task is
one subclass and one YAML.

A *line* is one scored unit (a REC sentence, a classification sample) as a JSON-ready dict: the
unit's identity (:meth:`Task.lines`), then ``pred`` and ``correct`` per prompt (:meth:`Task.score`).
A skipped item's lines carry ``skipped`` (the reason) and ``correct`` 0 for every prompt, so they
count as wrong in every metric.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Mapping, Sequence

import torch

from ..encoding.text import TextCache
from ..errors import ConfigError
from ..geometry import RESIZE_MODES, Box

Line = dict[str, Any]


def check_option(valid: bool, key: str, value: Any, expected: str) -> None:
    """Raise :class:`ConfigError` naming ``task.<key>`` when ``valid`` is false."""
    if not valid:
        raise ConfigError(f"task.{key}={value!r} is not valid: expected {expected}")


def check_template(key: str, template: Any) -> None:
    check_option(isinstance(template, str) and "{}" in template, key, template,
                 "a text with one {} for the expression / class name")


def check_resize(resize: Any) -> None:
    check_option(resize in RESIZE_MODES, "resize", resize, f"one of {list(RESIZE_MODES)}")


class Task(ABC):
    """One task family. Subclasses set :attr:`name` (``task.name`` in config) and :attr:`unit`."""

    name: ClassVar[str]
    unit: ClassVar[str]  # what one line is: "sentence", "sample"
    resize: str = "squash"

    @classmethod
    @abstractmethod
    def from_config(cls, task_cfg: Mapping[str, Any]) -> "Task":
        """The task as configured by the ``task`` section of an experiment."""

    # ---------------------------------------------------------------- the split's items
    @abstractmethod
    def items(self, split) -> Sequence[Any]:
        """What gets encoded: objects with ``load_image()`` (and ``image_path``, optionally ``width``,
        ``height``, ``embedded_image``); each is loaded and encoded once per prompt."""

    @abstractmethod
    def regions(self, split) -> list[list[Box] | None]:
        """Per item, its regions (xyxy, original-image pixels): one embedding each per prompt (``None``
        for an item that renders its own views and regions, :class:`falip.encoding.regions.Views`)."""

    def check_prompts(self, prompts: Sequence[Any]) -> None:
        """Reject prompts this task cannot run (before the model loads); default: all run."""

    @abstractmethod
    def limit(self, split, count: int):
        """The split reduced to its first ``count`` units (``run.limit``)."""

    @abstractmethod
    def describe(self, split) -> dict[str, Any]:
        """Counts and origin of the split for the sidecar (``num_images``, ``source`` ...)."""

    @abstractmethod
    def item_key(self, split, index: int) -> dict[str, Any]:
        """What identifies item ``index`` in a skip record (e.g. ``{"image_id": 7}``)."""

    # ---------------------------------------------------------------- scoring
    def prepare(self, split, texts: TextCache, logit_scale: float) -> Any:
        """Whatever :meth:`score` needs for the whole split (text embeddings ...), computed once."""
        return None

    def notes(self, context: Any) -> list[str]:
        """Protocol notes that :meth:`prepare` decided (recorded in the sidecar)."""
        return []

    @abstractmethod
    def lines(self, split, index: int) -> list[Line]:
        """The identity part of item ``index``'s lines, one per unit."""

    @abstractmethod
    def score(self, split, index: int, embeddings: Mapping[str, torch.Tensor], context: Any) -> list[Line]:
        """Item ``index``'s lines with ``pred`` and ``correct`` per prompt, from its region embeddings
        ``{prompt name: (K, D)}`` (K = its regions)."""

    def split_details(self, split, lines: Sequence[Line], prompt_names: Sequence[str]) -> dict[str, Any]:
        """What the lines tell about the split beyond its metrics, for the sidecar (default: nothing)."""
        return {}

    # ---------------------------------------------------------------- metrics
    def aggregate(self, split, lines: Sequence[Line], prompt_names: Sequence[str]) -> dict[str, dict[str, float]]:
        """Metrics over every line of a split: ``{metric: {prompt: value}}``. Default: accuracy (%)."""
        total = len(lines)
        return {"accuracy": {name: 100.0 * sum(line["correct"][name] for line in lines) / total
                             for name in prompt_names}}

    def columns(self, split_name: str, metrics: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, float]]:
        """The table columns one split contributes: by default one, named after the split (accuracy)."""
        return {split_name: dict(metrics["accuracy"])}
