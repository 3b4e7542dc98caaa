"""Procedural 3D shapes for the sandbox: surface point clouds of six solids, posed at random.

Each shape is sampled uniformly over its surface (area-weighted faces), centred and scaled into the
unit sphere, then rotated by a uniformly random rotation, shrunk by a random factor and shifted a
little. Optional clutter replaces a random fraction of the points with uniform points in the unit
cube (ScanObjectNN-like background). Points are shuffled, so "the first 1,024 of 2,048" (the
ModelNet40 protocol) is a uniform subset. Everything is drawn from a ``numpy.random.Generator``.
"""
from __future__ import annotations

import math

import numpy as np

SHAPES_3D: tuple[str, ...] = ("cube", "sphere", "cylinder", "cone", "torus", "pyramid")
POINTS_PER_SHAPE = 2048


def _by_area(rng: np.random.Generator, count: int, areas: list[float]) -> np.ndarray:
    """How many of ``count`` points each part gets, in proportion to its area."""
    return rng.multinomial(count, np.asarray(areas) / sum(areas))


def _cube(rng, count):
    face = rng.integers(0, 6, count)
    points = rng.uniform(-1, 1, (count, 3))
    axis, sign = face % 3, np.where(face < 3, -1.0, 1.0)
    points[np.arange(count), axis] = sign
    return points


def _sphere(rng, count):
    points = rng.normal(size=(count, 3))
    return points / np.linalg.norm(points, axis=1, keepdims=True)


def _cylinder(rng, count):  # radius 1, z in [-1, 1]
    side, top, bottom = _by_area(rng, count, [4 * math.pi, math.pi, math.pi])
    angle = rng.uniform(0, 2 * math.pi, count)
    radius = np.concatenate([np.ones(side), np.sqrt(rng.uniform(0, 1, top + bottom))])
    z = np.concatenate([rng.uniform(-1, 1, side), np.ones(top), -np.ones(bottom)])
    return np.stack([radius * np.cos(angle), radius * np.sin(angle), z], 1)


def _cone(rng, count):  # base radius 1 at z = -1, apex at z = 1
    lateral, base = _by_area(rng, count, [math.pi * math.sqrt(5.0), math.pi])
    angle = rng.uniform(0, 2 * math.pi, count)
    t = 1 - np.sqrt(rng.uniform(0, 1, lateral))  # height fraction: density ~ (1 - t), the ring's circumference
    radius = np.concatenate([1 - t, np.sqrt(rng.uniform(0, 1, base))])
    z = np.concatenate([-1 + 2 * t, -np.ones(base)])
    return np.stack([radius * np.cos(angle), radius * np.sin(angle), z], 1)


def _torus(rng, count, major=1.0, minor=0.35):
    points = []
    while sum(len(p) for p in points) < count:  # rejection: area density ~ (major + minor cos phi)
        theta, phi = rng.uniform(0, 2 * math.pi, (2, count))
        keep = rng.uniform(0, major + minor, count) < major + minor * np.cos(phi)
        theta, phi = theta[keep], phi[keep]
        ring = major + minor * np.cos(phi)
        points.append(np.stack([ring * np.cos(theta), ring * np.sin(theta), minor * np.sin(phi)], 1))
    return np.concatenate(points)[:count]


def _triangles(rng, count, triangles: np.ndarray) -> np.ndarray:
    a, b, c = triangles[:, 0], triangles[:, 1], triangles[:, 2]
    areas = 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)
    which = np.repeat(np.arange(len(triangles)), _by_area(rng, count, list(areas)))
    u, v = rng.uniform(0, 1, (2, count))
    flip = u + v > 1
    u, v = np.where(flip, 1 - u, u), np.where(flip, 1 - v, v)
    return a[which] + u[:, None] * (b - a)[which] + v[:, None] * (c - a)[which]


def _pyramid(rng, count):  # square base [-1, 1]^2 at z = -1, apex (0, 0, 1)
    corners = np.array([[-1, -1, -1], [1, -1, -1], [1, 1, -1], [-1, 1, -1]], dtype=float)
    apex = np.array([0.0, 0.0, 1.0])
    faces = [[corners[i], corners[(i + 1) % 4], apex] for i in range(4)]
    faces += [[corners[0], corners[1], corners[2]], [corners[0], corners[2], corners[3]]]
    return _triangles(rng, count, np.asarray(faces))


SAMPLERS = {"cube": _cube, "sphere": _sphere, "cylinder": _cylinder, "cone": _cone, "torus": _torus,
            "pyramid": _pyramid}


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random 3x3 rotation (QR of a Gaussian matrix, signs fixed)."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def normalize_to_unit_sphere(points: np.ndarray) -> np.ndarray:
    centred = points - (points.max(0) + points.min(0)) / 2
    return centred / np.linalg.norm(centred, axis=1).max()


def sample_shape(rng: np.random.Generator, shape: str, count: int = POINTS_PER_SHAPE, clutter: float = 0.0,
                 min_scale: float = 0.6, return_clutter: bool = False):
    """``(count, 3)`` float32 surface points of ``shape`` in a random pose, inside the unit sphere;
    ``clutter`` (0-1) is the fraction of points replaced by uniform background points (with
    ``return_clutter``, also the ``(count,)`` bool mask of those points)."""
    if shape not in SAMPLERS:
        raise ValueError(f"unknown 3D shape {shape!r}; shapes: {SHAPES_3D}")
    points = normalize_to_unit_sphere(SAMPLERS[shape](rng, count)) @ random_rotation(rng).T
    scale = rng.uniform(min_scale, 1.0)
    points = points * scale + rng.uniform(-1, 1, 3) * (1 - scale) * 0.5
    background = int(round(clutter * count))
    if background:
        points[:background] = rng.uniform(-1, 1, (background, 3))
    order = rng.permutation(count)
    points = points[order].astype(np.float32)
    if return_clutter:
        return points, order < background
    return points


def sample_shapes(rng: np.random.Generator, count: int, points: int = POINTS_PER_SHAPE, max_clutter: float = 0.0,
                  labels=None) -> tuple[np.ndarray, np.ndarray]:
    """``count`` shapes: ``(count, points, 3)`` float32 clouds and their ``(count,)`` labels (into
    :data:`SHAPES_3D`; random unless given); each gets a clutter fraction uniform in [0, max_clutter]."""
    labels = rng.integers(0, len(SHAPES_3D), count) if labels is None else np.asarray(labels)
    clouds = [sample_shape(rng, SHAPES_3D[int(label)], points, float(rng.uniform(0, max_clutter))) for label in labels]
    return np.stack(clouds) if clouds else np.zeros((0, points, 3), np.float32), labels.astype(np.int64)
