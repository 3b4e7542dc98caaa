"""Quick, in-memory evaluations of a sandbox model, through the same task code as the experiments.

Used by the training script (model card numbers) and the tests; the official sandbox tables come
from ``falip-run experiment=shapes_rec|shapes_cls|shapes_ablation``, which read scenes from disk.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ..clip import FoveatedCLIP
from ..data.box_classification import ClsSample, ClsSplit
from ..data.rec import RecImage, RecSentence, RecSplit
from ..prompts import VisualPrompt
from ..tasks.classification import evaluate_classification_split
from ..tasks.rec import RecOptions, evaluate_rec_split
from ..text import TextCache
from .scenes import CLASS_NAMES, generate_scene


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
                               height: int = 80) -> ClsSplit:
    """Generated scenes as a region-classification split: one random object of each scene is the target."""
    rng = np.random.default_rng(seed)
    samples = []
    for index in range(num_scenes):
        scene = generate_scene(rng, num_objects, width, height)
        target = scene.objects[int(rng.integers(num_objects))]
        samples.append(ClsSample(str(index), Path(f"<scene {index}>"), target.box, target.label, scene.image))
    return ClsSplit("shapes_cls", f"objects{num_objects}", list(CLASS_NAMES), samples,
                    source=f"generated in memory, seed {seed}")


def rec_accuracy(model: FoveatedCLIP, prompts: Sequence[VisualPrompt], split: RecSplit) -> dict[str, float]:
    result = evaluate_rec_split(model, split, list(prompts), RecOptions(progress=False), TextCache(model))
    return result.accuracy


def classification_accuracy(model: FoveatedCLIP, prompts: Sequence[VisualPrompt], split: ClsSplit,
                            templates: Sequence[str] = ("a photo of a {}.",)) -> dict[str, float]:
    details = evaluate_classification_split(model, split, list(prompts), list(templates), TextCache(model),
                                            progress=False)
    return details["accuracy"]
