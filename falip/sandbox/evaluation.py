"""Quick, in-memory evaluations of a sandbox model, through the same task code as the experiments.

Used by the training script (model card numbers) and the tests; the official sandbox tables come
from ``falip-run experiment=shapes_rec|shapes_cls|shapes_ablation``, which read scenes from disk.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ..data.classification.types import ClassificationSample, ClassificationSplit
from ..data.pointcloud.types import PointCloudSample, PointCloudSplit
from ..data.rec.types import RecImage, RecSentence, RecSplit
from ..encoding.text import TextCache
from ..experiments.runner import LoopOptions, evaluate_split
from ..model.clip import FoveatedCLIP
from ..prompts.prompt import VisualPrompt
from ..tasks.classification import ClassificationTask
from ..tasks.pointcloud import PointCloudTask
from ..tasks.rec import RecTask
from .datasets import shapes_3d_arrays
from .scenes import CLASS_NAMES, generate_scene
from .shapes3d import SHAPES_3D


def scene_rec_split(num_scenes: int, num_objects: int, seed: int, width: int = 96, height: int = 80) -> RecSplit:
    """Generated scenes as a REC split (every object referred to once by its expression)."""
    rng = np.random.default_rng(seed)
    images = []
    for index in range(num_scenes):
        scene = generate_scene(rng, num_objects, width, height)
        ids = list(range(num_objects))
        sentences = [RecSentence(f"{index}-{k}", obj.expression, (k,)) for k, obj in enumerate(scene.objects)]
        images.append(RecImage(index, Path(f"<scene {index}>"), [o.box for o in scene.objects], ids,
                               {k: o.box for k, o in enumerate(scene.objects)}, sentences, width, height,
                               embedded_image=scene.image))
    return RecSplit("shapes", f"objects{num_objects}", images, source=f"generated in memory, seed {seed}")


def scene_classification_split(num_scenes: int, num_objects: int, seed: int, width: int = 96,
                               height: int = 80) -> ClassificationSplit:
    """Generated scenes as a region-classification split: one random object of each scene is the target."""
    rng = np.random.default_rng(seed)
    samples = []
    for index in range(num_scenes):
        scene = generate_scene(rng, num_objects, width, height)
        target = scene.objects[int(rng.integers(num_objects))]
        samples.append(ClassificationSample(str(index), Path(f"<scene {index}>"), target.box, target.label, scene.image))
    return ClassificationSplit("shapes_cls", f"objects{num_objects}", list(CLASS_NAMES), samples,
                    source=f"generated in memory, seed {seed}")


def rec_accuracy(model: FoveatedCLIP, prompts: Sequence[VisualPrompt], split: RecSplit) -> dict[str, float]:
    """REC accuracy (%) per prompt, through the experiments' loop (no files written)."""
    return evaluate_split(model, RecTask(), split, list(prompts), TextCache(model), LoopOptions(progress=False)).accuracy


def classification_accuracy(model: FoveatedCLIP, prompts: Sequence[VisualPrompt], split: ClassificationSplit,
                            templates: Sequence[str] = ("a photo of a {}.",)) -> dict[str, float]:
    """Top-1 accuracy (%) per prompt, through the experiments' loop (no files written)."""
    task = ClassificationTask(templates=list(templates))
    return evaluate_split(model, task, split, list(prompts), TextCache(model), LoopOptions(progress=False)).accuracy


def shapes_3d_split(shapes_per_class: int, seed: int, cluttered_fraction: float = 0.5,
                    max_clutter: float = 0.3) -> PointCloudSplit:
    """Generated 3D shapes (first 1,024 of 2,048 points, as the ModelNet40 protocol) as a point-cloud split."""
    clouds, labels, _ = shapes_3d_arrays(seed, shapes_per_class, cluttered_fraction, max_clutter)
    samples = [PointCloudSample(str(i), cloud[:1024], int(label)) for i, (cloud, label) in enumerate(zip(clouds, labels))]
    return PointCloudSplit("shapes_3d", "test", list(SHAPES_3D), samples, f"generated in memory, seed {seed}")


def pointcloud_accuracy(model: FoveatedCLIP, prompts: Sequence[VisualPrompt], split: PointCloudSplit) -> dict[str, float]:
    """PointCLIP zero-shot accuracy (%) per prompt, through the experiments' loop (no files written)."""
    return evaluate_split(model, PointCloudTask(), split, list(prompts), TextCache(model),
                          LoopOptions(progress=False)).accuracy
