"""Zero-shot point-cloud recognition as PointCLIP (V1) does it, with the foveal bias per view.

Each shape is rendered into PointCLIP's 6 depth maps (:mod:`falip.data.pointcloud.projection`), the
6 views are encoded as one batch under every prompt, and each view's region of attention is its
foreground (pixels > 0 of the model-input depth image): its bounding box and, for prompts whose bias
has ``roa: mask``, the tokens the foreground covers. An empty view gets no bias (counted per prompt:
``empty_regions`` in the sidecar); a shape whose 6 views are all empty is a recorded skip.

Score of class ``c`` = sum over views of ``beta_v * cos(f_v, t_c)`` with L2-normalised view features
and the text ``point cloud depth map of a {class}.`` (PointCLIP's logits up to a constant factor:
equal betas by default). ``task.search_view_weights=true`` adds PointCLIP's post-search (the grid
``{0.25, 0.5, 0.75, 1.0}^6``, first best in its loop order), **tuned on the test set itself**: its
column is labelled so and its weights are in the sidecar.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from ..data.pointcloud.projection import NUM_VIEWS, RESOLUTION, depth_maps, foreground_region, model_inputs
from ..data.pointcloud.types import PointCloudSample, PointCloudSplit
from ..encoding.regions import Views
from ..encoding.text import TextCache
from ..errors import ConfigError, DatasetError
from .base import Line, Task, check_option, check_template

TEMPLATE = "point cloud depth map of a {}."
SEARCH_GRID = (0.25, 0.5, 0.75, 1.0)  # PointCLIP SEARCH.TIME = 4, RANGE = 1
SEARCHED = "searched view weights (tuned on this split)"


@dataclass(frozen=True)
class PointCloudItem:
    """One shape, rendered into its model inputs when the encoder asks (:meth:`load_views`)."""

    sample: PointCloudSample
    resolution: int = RESOLUTION

    @property
    def image_path(self) -> str:  # what error messages call the item
        return f"shape {self.sample.sample_id}"

    def load_views(self, input_size: int, device: torch.device | str = "cpu") -> Views:
        if len(self.sample.points) == 0:
            raise DatasetError("the shape has no finite point")
        points = torch.from_numpy(np.ascontiguousarray(self.sample.points))[None].to(device)
        pixels = model_inputs(depth_maps(points, self.resolution), input_size)
        regions = [foreground_region(view) for view in pixels]
        if all(region is None for region in regions):
            raise DatasetError(f"none of its {NUM_VIEWS} depth maps shows a point (all points behind the camera "
                               f"or off the canvas)")
        return Views(pixels, regions)


def view_weight_grid() -> torch.Tensor:
    """``(4^6, 6)`` PointCLIP's search grid, in its nested-loop order (first view outermost)."""
    return torch.tensor(list(itertools.product(SEARCH_GRID, repeat=NUM_VIEWS)), dtype=torch.float64)


def search_view_weights(scores: torch.Tensor, labels: torch.Tensor, chunk: int = 256) -> tuple[list[float], float]:
    """The first grid point with the best accuracy over ``scores`` ``(N, 6, C)`` (per-view cosines): its
    weights and accuracy (%)."""
    grid, best, best_correct = view_weight_grid(), 0, -1
    scores = scores.double()
    for start in range(0, len(grid), chunk):
        weights = grid[start:start + chunk]                                    # (G, 6)
        preds = torch.einsum("gv,nvc->gnc", weights, scores).argmax(-1)         # (G, N)
        correct = (preds == labels[None]).sum(1)
        top = int(correct.argmax())
        if int(correct[top]) > best_correct:
            best, best_correct = start + top, int(correct[top])
    return grid[best].tolist(), 100.0 * best_correct / max(len(labels), 1)


@dataclass
class PointCloudTask(Task):
    """Shape classification from PointCLIP depth maps over a :class:`PointCloudSplit`."""

    name = "pointcloud"
    unit = "shape"
    template: str = TEMPLATE
    view_weights: list[float] = field(default_factory=lambda: [1.0] * NUM_VIEWS)
    search_view_weights: bool = False
    resolution: int = RESOLUTION

    @classmethod
    def from_config(cls, task_cfg: Mapping[str, Any]) -> "PointCloudTask":
        template = task_cfg.get("template", TEMPLATE)
        check_template("template", template)
        weights = task_cfg.get("view_weights") or [1.0] * NUM_VIEWS
        check_option(isinstance(weights, (list, tuple)) and len(weights) == NUM_VIEWS
                     and all(isinstance(w, (int, float)) and not isinstance(w, bool) for w in weights),
                     "view_weights", weights, f"{NUM_VIEWS} numbers (one per view) or null (equal)")
        resolution = task_cfg.get("resolution", RESOLUTION)
        check_option(isinstance(resolution, int) and resolution > 0, "resolution", resolution, "a positive integer")
        return cls(template=template, view_weights=[float(w) for w in weights],
                   search_view_weights=bool(task_cfg.get("search_view_weights", False)), resolution=resolution)

    def check_prompts(self, prompts: Sequence[Any]) -> None:
        edited = [prompt.name for prompt in prompts if prompt.edits]
        if edited:
            raise ConfigError(f"prompts {edited} edit pixels; depth maps of point clouds take bias-only prompts "
                              f"(Original CLIP, FALIP and its variants)")

    def items(self, split: PointCloudSplit) -> list[PointCloudItem]:
        return [PointCloudItem(sample, self.resolution) for sample in split.samples]

    def regions(self, split: PointCloudSplit) -> list[None]:
        return [None] * len(split.samples)  # each view's region comes from its own rendering

    def limit(self, split: PointCloudSplit, count: int) -> PointCloudSplit:
        if count <= 0:
            raise ValueError(f"limit must be a positive number of shapes, got {count}")
        if count >= len(split.samples):
            return split
        return replace(split, samples=split.samples[:count], notes=split.notes + [f"limited to the first {count} shapes"])

    def describe(self, split: PointCloudSplit) -> dict[str, Any]:
        return {"num_shapes": len(split.samples), "num_classes": len(split.classes), "source": split.source,
                "template": self.template, "view_weights": list(self.view_weights),
                "num_points": int(max((len(s.points) for s in split.samples), default=0)),
                "dropped_nonfinite_points": split.dropped_points}

    def item_key(self, split: PointCloudSplit, index: int) -> dict[str, Any]:
        return {"sample_id": split.samples[index].sample_id}

    def prepare(self, split: PointCloudSplit, texts: TextCache, logit_scale: float) -> torch.Tensor:
        return texts.classifier(split.classes, [self.template])  # (C, D), L2-normalised

    def lines(self, split: PointCloudSplit, index: int) -> list[Line]:
        sample = split.samples[index]
        return [{"sample_id": sample.sample_id, "label": sample.label}]

    def score(self, split: PointCloudSplit, index: int, embeddings: Mapping[str, torch.Tensor],
              context: torch.Tensor) -> list[Line]:
        line = self.lines(split, index)[0]
        line["pred"], line["correct"] = {}, {}
        weights = torch.tensor(self.view_weights)
        for name, views in embeddings.items():  # (6, D), one row per view
            cosines = views @ context.T  # (6, C)
            pred = int(torch.argmax(weights @ cosines))
            line["pred"][name], line["correct"][name] = pred, int(pred == line["label"])
            if self.search_view_weights:
                line.setdefault("view_cosines", {})[name] = cosines.tolist()
        return [line]

    def aggregate(self, split: PointCloudSplit, lines: Sequence[Line],
                  prompt_names: Sequence[str]) -> dict[str, dict[str, float]]:
        metrics = super().aggregate(split, lines, prompt_names)
        if self.search_view_weights:
            metrics[SEARCHED] = {name: self._searched(lines, name)[1] for name in prompt_names}
        return metrics

    def _searched(self, lines: Sequence[Line], name: str) -> tuple[list[float], float]:
        scored = [line for line in lines if "view_cosines" in line]
        if not scored:
            return [1.0] * NUM_VIEWS, 0.0
        scores = torch.tensor([line["view_cosines"][name] for line in scored])
        weights, accuracy = search_view_weights(scores, torch.tensor([line["label"] for line in scored]))
        return weights, accuracy * len(scored) / len(lines)  # skipped shapes count as wrong

    def split_details(self, split: PointCloudSplit, lines: Sequence[Line],
                      prompt_names: Sequence[str]) -> dict[str, Any]:
        if not self.search_view_weights:
            return {}
        return {"searched_view_weights": {name: self._searched(lines, name)[0] for name in prompt_names}}

    def columns(self, split_name: str, metrics: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, float]]:
        columns = {split_name: dict(metrics["accuracy"])}
        if SEARCHED in metrics:
            columns[f"{split_name} {SEARCHED}"] = dict(metrics[SEARCHED])
        return columns
