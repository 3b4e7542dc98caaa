"""Point clouds: PointCLIP's projection against a literal per-point loop, the ModelNet40 / ScanObjectNN
loaders on in-format h5 fixtures, and their bad input."""
import json
import math

import h5py
import numpy as np
import pytest
import torch

from falip.data.pointcloud.modelnet40 import load_modelnet40_split, write_modelnet40
from falip.data.pointcloud.projection import (NUM_VIEWS, TRANSLATION, VIEW_ANGLES, depth_maps, foreground_region,
                                              model_inputs)
from falip.data.pointcloud.scanobjectnn import CLASSES, load_scanobjectnn_split, write_scanobjectnn
from falip.errors import DatasetError


def literal_depth_maps(points: np.ndarray, resolution: int = 128) -> np.ndarray:
    """The released ``PCViews.get_img`` for one cloud, written as a loop over views and points in float32:
    R = Rx Ry Rz of each view's Euler angles, p @ R^T - t, u = x/(z+eps), row = ceil((u+1)*R/2 - 0.5), ...,
    pixel = sum(z * (1/(z+eps))) / sum(1/(z+eps)) over its points with z >= 0 on the canvas, 0 if none."""
    f = np.float32
    out = np.zeros((NUM_VIEWS, resolution, resolution), f)
    for view, (ax, ay, az) in enumerate(VIEW_ANGLES):
        ax, ay, az = f(ax), f(ay), f(az)
        rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]], f)
        ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]], f)
        rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]], f)
        rotation = (rx @ ry @ rz).astype(f)
        weights = np.zeros((resolution, resolution), np.float64)
        values = np.zeros((resolution, resolution), np.float64)
        for point in points.astype(f):
            x, y, z = (point @ rotation.T - np.array(TRANSLATION, f)).astype(f)
            u, v = x / (z + f(1e-12)), y / (z + f(1e-12))
            row = math.ceil(f((u + 1) * resolution / 2) - f(0.5))
            col = math.ceil(f((v + 1) * resolution / 2) - f(0.5))
            if 0 <= row <= resolution - 1 and 0 <= col <= resolution - 1 and z >= 0:
                weight = f(1) / (z + f(1e-12))
                weights[row, col] += weight
                values[row, col] += f(z * weight)
        filled = weights > 0
        out[view][filled] = values[filled] / weights[filled]
    return out


@pytest.mark.parametrize("seed", [0, 1])
def test_projection_matches_the_released_algorithm_point_by_point(seed):
    rng = np.random.default_rng(seed)
    inside = rng.uniform(-1, 1, (400, 3))
    wide = rng.uniform(-4, 4, (200, 3))  # behind the camera (z + 1.6 < 0) and off the canvas
    clouds = np.stack([np.concatenate([inside, wide]), rng.normal(0, 0.4, (600, 3))]).astype(np.float32)
    maps = depth_maps(torch.from_numpy(clouds)).numpy()
    assert maps.shape == (2, NUM_VIEWS, 128, 128)
    for index, cloud in enumerate(clouds):
        expected = literal_depth_maps(cloud)
        assert ((maps[index] > 0) == (expected > 0)).all()
        np.testing.assert_allclose(maps[index], expected, rtol=2e-6, atol=1e-6)
    assert maps[0].max() > 0 and (maps[0] > 0).mean() < 0.2


def test_points_behind_the_camera_or_off_canvas_leave_no_trace():
    behind = torch.tensor([[[0.0, 0.0, -2.5], [0.0, 0.0, 2.5], [2.5, 0.0, 0.0], [-2.5, 0.0, 0.0],
                            [0.0, 2.5, 0.0], [0.0, -2.5, 0.0]]])
    maps = depth_maps(behind)
    # each point lies 2.5 along one axis: in front of some views, behind others; never NaN
    assert torch.isfinite(maps).all()
    # the 6 views tile every direction, so a point far out lands on one canvas only (behind or beside the rest)
    far = depth_maps(torch.tensor([[[40.0, 1.0, 2.0]]]))
    assert int((far > 0).sum()) == 1
    with_nan = torch.tensor([[[0.1, 0.1, 0.1], [float("nan"), 0.0, 0.0]]])
    assert torch.isfinite(depth_maps(with_nan)).all() and depth_maps(with_nan).sum() > 0


def test_harmonic_mean_of_depths_in_one_pixel():
    # two points on the optical axis of view 0 (same pixel), at depths 1.6 + 0.2 and 1.6 - 0.3 after the shift
    rotation_free = torch.tensor([[[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]])
    maps = depth_maps(rotation_free)
    assert torch.isclose(maps.max(), torch.tensor(1.6), atol=1e-5)
    assert (maps > 0).sum() == NUM_VIEWS  # one pixel per view


def test_model_inputs_are_raw_depth_bilinear_with_corners_kept():
    maps = torch.zeros(1, NUM_VIEWS, 4, 4)
    maps[0, 0, 0, 0], maps[0, 0, 3, 3] = 2.0, 1.0
    inputs = model_inputs(maps, 10)
    assert inputs.shape == (NUM_VIEWS, 3, 10, 10)
    assert inputs[0, :, 0, 0].tolist() == [2.0, 2.0, 2.0] and inputs[0, 1, 9, 9] == 1.0  # align_corners=True
    assert inputs[1:].abs().sum() == 0


def test_foreground_region_is_the_box_and_mask_of_nonzero_pixels():
    view = torch.zeros(3, 8, 8)
    view[:, 2:4, 5:7] = 1.5
    region = foreground_region(view)
    assert region.boxes == ((5.0, 2.0, 7.0, 4.0),) and region.mask.sum() == 4
    assert foreground_region(torch.zeros(3, 8, 8)) is None


# ------------------------------------------------------------------------------------------- loaders
def clouds(count, points=2048, seed=0):
    return np.random.default_rng(seed).uniform(-0.5, 0.5, (count, points, 3)).astype(np.float32)


def test_modelnet40_loader_reads_every_test_shard_in_order(tmp_path):
    names = ["air_plane", "bath_tub", "bed"]
    data = clouds(5)
    data[1, 3] = np.nan  # within the first 1,024: dropped and counted
    data[1, 1500] = np.inf  # beyond them: cut before it matters
    write_modelnet40(tmp_path, names, {"test": (data, np.array([0, 2, 1, 1, 0])), "train": (clouds(2), np.array([0, 1]))},
                     shard_size=3)
    folder = tmp_path / "modelnet40_ply_hdf5_2048"
    (folder / "ply_data_test_0_id2file.json").write_text(json.dumps(["a/a_1.ply"] * 3))  # matches ply_data_test*: not a shard
    with h5py.File(folder / "ply_data_test1.h5") as handle:
        assert handle["label"].shape == (2, 1) and handle["label"].dtype == np.uint8
    split = load_modelnet40_split(tmp_path, "test")
    assert split.classes == ["air plane", "bath tub", "bed"]
    assert [s.label for s in split.samples] == [0, 2, 1, 1, 0]
    assert [s.sample_id for s in split.samples] == ["ply_data_test0/0", "ply_data_test0/1", "ply_data_test0/2",
                                                    "ply_data_test1/0", "ply_data_test1/1"]
    assert split.samples[0].points.shape == (1024, 3) and split.samples[1].points.shape == (1023, 3)
    np.testing.assert_array_equal(split.samples[3].points, data[3, :1024])
    assert split.dropped_points == 1
    assert len(load_modelnet40_split(folder, "train", num_points=None).samples[0].points) == 2048
    assert load_modelnet40_split(tmp_path, "test", classes=["x", "y", "z"]).classes == ["x", "y", "z"]


def test_modelnet40_bad_input_names_the_file_and_key(tmp_path):
    write_modelnet40(tmp_path, ["a", "b"], {"test": (clouds(2), np.array([0, 1]))})
    folder = tmp_path / "modelnet40_ply_hdf5_2048"
    with pytest.raises(DatasetError, match="labels|outside the 1 class names"):
        load_modelnet40_split(tmp_path, "test", classes=["only"])
    with pytest.raises(DatasetError, match="no split 'val'"):
        load_modelnet40_split(tmp_path, "val")
    with h5py.File(folder / "ply_data_test0.h5", "w") as handle:
        handle.create_dataset("points", data=clouds(1))
    with pytest.raises(DatasetError, match=r"ply_data_test0\.h5 has no dataset 'data'"):
        load_modelnet40_split(tmp_path, "test")
    with h5py.File(folder / "ply_data_test0.h5", "w") as handle:
        handle.create_dataset("data", data=np.zeros((2, 10), np.float32))
        handle.create_dataset("label", data=np.zeros((2, 1), np.uint8))
    with pytest.raises(DatasetError, match=r"'data' has shape \(2, 10\)"):
        load_modelnet40_split(tmp_path, "test")
    (folder / "ply_data_test0.h5").write_bytes(b"not hdf5")
    with pytest.raises(DatasetError, match="not a readable HDF5"):
        load_modelnet40_split(tmp_path, "test")
    with pytest.raises(DatasetError, match="holds no ModelNet40"):
        load_modelnet40_split(tmp_path / "elsewhere", "test")


@pytest.mark.parametrize("variant, path", [("PB_T50_RS", "main_split/test_objectdataset_augmentedrot_scale75.h5"),
                                           ("OBJ_BG", "main_split/test_objectdataset.h5"),
                                           ("OBJ_ONLY", "main_split_nobg/test_objectdataset.h5")])
def test_scanobjectnn_variants_read_their_file(tmp_path, variant, path):
    data = clouds(3) * 7 + 3  # a scan in its own units, off-centre
    write_scanobjectnn(tmp_path, variant, {"test": (data, np.array([0, 7, 14]))},
                       background={"test": np.s_[:, :512]})
    with h5py.File(tmp_path / "h5_files" / path) as handle:
        assert handle["label"].shape == (3,) and (handle["mask"][:, :512] == -1).all()
    split = load_scanobjectnn_split(tmp_path / "h5_files", "test", variant)
    assert split.classes == list(CLASSES) and len(CLASSES) == 15 and split.classes[14] == "toilet"
    assert [s.label for s in split.samples] == [0, 7, 14]
    radius = np.linalg.norm(split.samples[0].points, axis=1)
    assert radius.max() == pytest.approx(1.0, abs=1e-6)
    raw = load_scanobjectnn_split(tmp_path, "test", variant, normalize=False)
    np.testing.assert_array_equal(raw.samples[2].points, data[2, :1024])


def test_scanobjectnn_bad_input(tmp_path):
    write_scanobjectnn(tmp_path, "OBJ_BG", {"test": (clouds(2), np.array([0, 15]))})
    with pytest.raises(DatasetError, match="outside the 15 class names"):
        load_scanobjectnn_split(tmp_path, "test", "OBJ_BG")
    with pytest.raises(DatasetError, match="not a ScanObjectNN variant"):
        load_scanobjectnn_split(tmp_path, "test", "PB_T99")
    with pytest.raises(DatasetError, match="test_objectdataset_augmentedrot_scale75.h5 not found"):
        load_scanobjectnn_split(tmp_path, "test", "PB_T50_RS")


def test_public_module_runs_the_documented_steps(tiny_clip):
    from falip.pointcloud import depth_maps as public_depth_maps, foreground_region as region_of, model_inputs as inputs_of
    from falip.prompts import FALIP

    points = torch.from_numpy(np.random.default_rng(0).normal(0, 0.3, (1, 1024, 3)).astype(np.float32))
    views = inputs_of(public_depth_maps(points), tiny_clip.image_size)
    regions = [region_of(view) for view in views]
    bias = FALIP.bias.for_model(tiny_clip).build(regions, tiny_clip.image_size, tiny_clip.patch_size)
    embeddings = tiny_clip.encode_image(views, bias, list(FALIP.bias.layers))
    assert embeddings.shape == (6, 16) and not torch.allclose(embeddings, tiny_clip.encode_image(views))
