#!/usr/bin/env python
"""How well a CLIP's image features tell the sandbox's 3D shapes apart from their PointCLIP depth maps.

For each model directory: the 6 depth maps of held-out posed shapes (falip/sandbox/shapes3d.py, up to
20 % clutter) go through the vision tower; a shape's feature is the mean of its 6 L2-normalised view
embeddings. Printed: the mean pairwise cosine of those features (near 1 = every shape looks alike to
the model) and the accuracy of a linear probe (multinomial logistic regression, fixed seed and steps)
trained on one set of shapes and tested on another. No text is involved, so a model that never saw a
depth map (e.g. the 2D-only sandbox CLIP of commit 5447aaf) can be compared with the shipped one:

    mkdir -p /tmp/sandbox-2d && for f in config.json model.safetensors preprocessor_config.json \\
        tokenizer.json tokenizer_config.json; do git show 5447aaf:falip/sandbox/model/$f > /tmp/sandbox-2d/$f; done
    python scripts/probe_depth_features.py falip/sandbox/model /tmp/sandbox-2d
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from falip import FoveatedCLIP
from falip.data.pointcloud.projection import depth_maps, model_inputs
from falip.sandbox.shapes3d import SHAPES_3D, sample_shapes

PROBE_SEED = 555_000  # held out from training (seed 0's streams)


def shape_features(model: FoveatedCLIP, count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(count, D) mean-of-views features of ``count`` random posed shapes, and their labels."""
    clouds, labels = sample_shapes(np.random.default_rng(seed), count, 1024, 0.2)
    maps = depth_maps(torch.from_numpy(clouds))
    pixels = model_inputs(maps.flatten(0, 1)[:, None], model.image_size)
    views = model.encode_image(pixels)  # L2-normalised view embeddings
    return views.view(count, maps.shape[1], -1).mean(1), torch.from_numpy(labels)


def linear_probe(train_x, train_y, test_x, test_y, steps: int = 500) -> tuple[float, float]:
    """Train / test accuracy of a logistic-regression probe (Adam, seeded)."""
    torch.manual_seed(0)
    weight = torch.zeros(train_x.shape[1], len(SHAPES_3D), requires_grad=True)
    bias = torch.zeros(len(SHAPES_3D), requires_grad=True)
    optimizer = torch.optim.Adam([weight, bias], lr=0.05)
    scale = 30.0  # the features are near unit norm: a fixed temperature keeps the step size sensible
    for _ in range(steps):
        loss = F.cross_entropy(scale * train_x @ weight + bias, train_y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        accuracy = lambda x, y: ((scale * x @ weight + bias).argmax(1) == y).float().mean().item() * 100
        return accuracy(train_x, train_y), accuracy(test_x, test_y)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", type=Path, help="HF CLIP model directories")
    parser.add_argument("--train-shapes", type=int, default=300)
    parser.add_argument("--test-shapes", type=int, default=150)
    args = parser.parse_args()
    torch.set_num_threads(2)
    print("| model | mean pairwise cosine | probe train % | probe test % |\n|---|---|---|---|")
    for path in args.models:
        model = FoveatedCLIP.from_pretrained(path)
        train_x, train_y = shape_features(model, args.train_shapes, PROBE_SEED)
        test_x, test_y = shape_features(model, args.test_shapes, PROBE_SEED + 1)
        spread = (train_x @ train_x.T).mean().item() / (train_x.norm(dim=1).mean().item() ** 2)
        train_acc, test_acc = linear_probe(train_x, train_y, test_x, test_y)
        print(f"| {path} | {spread:.3f} | {train_acc:.1f} | {test_acc:.1f} |")


if __name__ == "__main__":
    main()
