"""scripts/probe_depth_features.py: its probe separates what is separable and not what is not, and the
shipped sandbox CLIP's features tell the 3D shapes apart."""
from __future__ import annotations

import pytest
from conftest import load_script
import torch

from falip import FoveatedCLIP
from falip.sandbox import MODEL_DIR


@pytest.fixture(scope="module")
def probe():
    return load_script("probe_depth_features")


def test_linear_probe_tells_separable_from_random(probe):
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(120) % 6
    centres = torch.nn.functional.normalize(torch.randn(6, 16, generator=generator), dim=-1)
    separable = centres[labels] + 0.05 * torch.randn(120, 16, generator=generator)
    assert probe.linear_probe(separable[:60], labels[:60], separable[60:], labels[60:])[1] == 100.0
    noise = torch.randn(120, 16, generator=generator)
    assert probe.linear_probe(noise[:60], labels[:60], noise[60:], labels[60:])[1] < 50.0


def test_shipped_model_features_separate_the_3d_shapes(probe):
    model = FoveatedCLIP.from_pretrained(MODEL_DIR)
    train_x, train_y = probe.shape_features(model, 60, probe.PROBE_SEED)
    test_x, test_y = probe.shape_features(model, 30, probe.PROBE_SEED + 1)
    assert train_x.ndim == 2 and len(train_x) == len(train_y) == 60 and set(train_y.tolist()) <= set(range(6))
    assert probe.linear_probe(train_x, train_y, test_x, test_y)[1] > 50.0  # chance: 16.7
