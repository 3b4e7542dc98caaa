"""The sandbox: scenes, vocabulary, training smoke run, the shipped model, generated datasets."""
import json

import numpy as np
import pytest
import torch

from falip import FoveatedCLIP
from falip.sandbox import MODEL_DIR as SANDBOX_MODEL_DIR
from falip.data.classification.boxes import load_box_classification_split
from falip.data.rec.loading import load_rec_split
from falip.errors import ConfigError
from falip.prompts import ORIGINAL_CLIP
from falip.experiments.generated import MARKER, build_generated_dataset
from falip.sandbox.evaluation import classification_accuracy, scene_classification_split
from falip.sandbox.scenes import CLASS_NAMES, CLASSES, generate_scene
from falip.sandbox.shapes3d import SHAPES_3D, normalize_to_unit_sphere, sample_shape
from falip.sandbox.training import (CLASSIFICATION_TEMPLATE, POINTCLOUD_TEMPLATE, TRAIN_TEMPLATES, TrainConfig, batch_loss, contrastive_loss,
                                    make_region_batch, mixed_batch, preprocessor, scene_distillation,
                                    train_sandbox_clip, vocabulary_covers)
from falip.prompts import FovealBias


def test_scenes_are_seeded_disjoint_tight_and_unique():
    a = generate_scene(np.random.default_rng(3), 4, 96, 80)
    b = generate_scene(np.random.default_rng(3), 4, 96, 80)
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
    assert [o.box for o in a.objects] == [o.box for o in b.objects]
    assert a.image.size == (96, 80)
    for seed in range(30):
        scene = generate_scene(np.random.default_rng(seed), 1 + seed % 4, 64 + seed, 64)
        assert len({(o.colour, o.shape) for o in scene.objects}) == len(scene.objects)
        for i, obj in enumerate(scene.objects):
            ys, xs = np.nonzero(obj.mask)
            assert obj.box == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
            for other in scene.objects[i + 1:]:
                x0, y0, x1, y1 = obj.box
                u0, v0, u1, v1 = other.box
                assert x1 <= u0 or u1 <= x0 or y1 <= v0 or v1 <= y0, "boxes must be disjoint"
    with pytest.raises(ValueError):
        generate_scene(np.random.default_rng(0), 0)


def test_vocabulary_covers_every_sandbox_text():
    texts = [t.format(name) for t in TRAIN_TEMPLATES for name in CLASS_NAMES]
    texts += ["a photo of " + name for name in CLASS_NAMES] + ["a photo of a {}.".format(n) for n in CLASS_NAMES]
    assert vocabulary_covers(texts) == []
    assert vocabulary_covers(["a photo of a dog"]) == ["a photo of a dog"]
    assert len(CLASSES) == 20
    assert vocabulary_covers([POINTCLOUD_TEMPLATE.format(shape) for shape in SHAPES_3D]) == []


def test_3d_shapes_lie_on_their_surfaces_in_a_random_pose():
    rng = np.random.default_rng(0)
    for shape in SHAPES_3D:
        points = sample_shape(rng, shape, 1000)
        assert points.shape == (1000, 3) and points.dtype == np.float32
        assert np.linalg.norm(points, axis=1).max() <= 1.0 + 1e-5
    sphere = normalize_to_unit_sphere(sample_shape(np.random.default_rng(1), "sphere", 2000, min_scale=1.0))
    radius = np.linalg.norm(sphere - sphere.mean(0), axis=1)
    assert radius.std() < 0.02  # every point on one sphere, whatever the pose
    a = sample_shape(np.random.default_rng(5), "torus", clutter=0.25, return_clutter=True)
    b = sample_shape(np.random.default_rng(5), "torus", clutter=0.25, return_clutter=True)
    assert np.array_equal(a[0], b[0]) and a[1].sum() == 512
    with pytest.raises(ValueError, match="unknown 3D shape"):
        sample_shape(rng, "donut")


def test_training_batches_pair_depth_maps_only_with_their_shape():
    train = TrainConfig(batch_size=6, pointcloud_batch=5)
    pixels, captions, positives = mixed_batch(np.random.default_rng(0), np.random.default_rng(1), train, preprocessor())
    assert pixels.shape == (11, 3, 64, 64) and len(captions) == 11
    assert positives[:6, 6:].sum() == 0 and positives[6:, :6].sum() == 0  # scenes and depth maps never pair
    for i in range(6, 11):
        for j in range(6, 11):
            assert bool(positives[i, j]) == (captions[i] == captions[j])
    assert pixels[6:].min() >= 0 and captions[6].startswith("point cloud depth map of a ")


def test_depth_maps_get_their_own_weighted_softmax_when_asked():
    torch.manual_seed(0)
    logits, positives = torch.randn(7, 7) * 3, torch.zeros(7, 7)
    positives[:4, :4] = torch.eye(4)
    positives[4:, 4:] = torch.tensor([[1, 1, 0], [1, 1, 0], [0, 0, 1]])
    joint = batch_loss(logits, positives, 4, TrainConfig())
    assert torch.allclose(joint, contrastive_loss(logits, positives))
    separate = batch_loss(logits, positives, 4, TrainConfig(pointcloud_loss_weight=0.25))
    expected = contrastive_loss(logits[:4, :4], positives[:4, :4]) + 0.25 * contrastive_loss(logits[4:, 4:], positives[4:, 4:])
    assert torch.allclose(separate, expected) and not torch.allclose(separate, joint)
    moved = logits.clone()
    moved[:4, 4:] += 50.0  # scene-vs-depth logits do not enter the separate losses
    assert torch.allclose(batch_loss(moved, positives, 4, TrainConfig(pointcloud_loss_weight=0.25)), separate)
    assert torch.allclose(batch_loss(logits[:4, :4], positives[:4, :4], 4, TrainConfig(pointcloud_loss_weight=0.25)),
                          contrastive_loss(logits[:4, :4], positives[:4, :4]))


def test_two_stage_recipe_teaches_depth_maps_and_leaves_scene_captions_exact(tmp_path):
    tiny = dict(steps=2, batch_size=8, vision_layers=1, vision_width=32, text_layers=1, text_width=32, projection_dim=16,
                warmup_steps=1, log_every=1, depth_words_batch=2, depth_distill_scenes=4)
    with pytest.raises(ValueError, match="pointcloud_batch=0"):
        train_sandbox_clip(TrainConfig(**tiny, depth_words_steps=2), tmp_path / "x", log=lambda _: None)
    config = TrainConfig(**tiny, pointcloud_batch=0, depth_words_steps=2)
    _, _, history = train_sandbox_clip(config, tmp_path / "final", log=lambda _: None, stage1_out=tmp_path / "stage1")
    assert [h.get("stage") for h in history] == [None, None, "depth maps", "depth maps"]
    stage1, final = (FoveatedCLIP.from_pretrained(tmp_path / name) for name in ("stage1", "final"))
    scene_captions = ["a photo of red circle", "a blue cross.", "this is a green square."]
    with torch.no_grad():
        assert torch.equal(stage1.encode_text(scene_captions), final.encode_text(scene_captions))
        depth_captions = [f"{POINTCLOUD_TEMPLATE.format(shape)}" for shape in SHAPES_3D]
        assert final.encode_text(depth_captions).unique(dim=0).shape[0] == len(SHAPES_3D)
    assert stage1.tokenizer("a cube")["input_ids"][2] == stage1.tokenizer.unk_token_id  # stage 1: scene words only
    assert final.tokenizer("a cube")["input_ids"][2] != final.tokenizer.unk_token_id
    moved = [not torch.equal(a, b) for a, b in zip(stage1.clip.vision_model.parameters(), final.clip.vision_model.parameters())]
    assert any(moved)
    again = train_sandbox_clip(config, tmp_path / "again", log=lambda _: None, stage1_from=tmp_path / "stage1")[0]
    assert all(torch.equal(a, b) for a, b in zip(again.parameters(), FoveatedCLIP.from_pretrained(tmp_path / "final").clip.parameters()))


def test_stage_two_distillation_holds_plain_and_falip_scene_embeddings_and_class_scores(tmp_path):
    tiny = dict(steps=2, batch_size=8, vision_layers=1, vision_width=32, text_layers=1, text_width=32, projection_dim=16,
                warmup_steps=1, log_every=1, depth_words_batch=2, depth_distill_scenes=4, pointcloud_batch=0,
                depth_distill_weight=0.0, depth_vision_lr=1e-2)
    train_sandbox_clip(TrainConfig(**tiny), tmp_path / "stage1", log=lambda _: None)
    stage1 = FoveatedCLIP.from_pretrained(tmp_path / "stage1")
    bias = FovealBias(alpha=16.0, layers=None)
    pixels, regions = make_region_batch(np.random.default_rng(7), TrainConfig(**{**tiny, "batch_size": 6}), preprocessor())
    # the regions are the objects' masks in model-input pixels: the bias covers some tokens, not all
    covered = (bias.build(regions, 64, 8)[:, 0, 1:] > 0).sum(1)
    assert ((covered > 0) & (covered < 64)).all()
    class_text = stage1.encode_text([CLASSIFICATION_TEMPLATE.format(name) for name in CLASS_NAMES]).clone()
    same = scene_distillation(stage1, stage1, pixels, regions, bias, class_text)
    assert same["embedding"].item() == pytest.approx(0, abs=1e-6) and same["class"].item() == pytest.approx(0, abs=1e-5)
    assert "class" not in scene_distillation(stage1, stage1, pixels, regions, bias)
    # an independent computation of the class term: KL(p_teacher || p_student), plain and FALIP, averaged
    other = FoveatedCLIP(train_sandbox_clip(TrainConfig(**tiny, depth_words_steps=2), None, log=lambda _: None,
                                            stage1_from=tmp_path / "stage1")[0])
    with torch.no_grad():
        terms = scene_distillation(other, stage1, pixels, regions, bias, class_text, scale=10.0)
        expected = []
        for attention_bias in (None, bias.build(regions, 64, 8)):
            p = torch.softmax(10.0 * stage1.encode_image(pixels, attention_bias=attention_bias) @ class_text.T, -1)
            q = torch.softmax(10.0 * other.encode_image(pixels, attention_bias=attention_bias) @ class_text.T, -1)
            expected.append((p * (p.log() - q.log())).sum(-1).mean())
    assert terms["class"].item() == pytest.approx(float(sum(expected) / 2), rel=1e-4) and terms["class"].item() > 0
    scale = float(stage1.clip.logit_scale.exp().detach())  # the scale training uses
    gaps = {}
    for name, weights in {"none": {}, "embedding": {"depth_distill_embedding_weight": 1000.0},
                          "class": {"depth_distill_class_weight": 1000.0}}.items():
        config = TrainConfig(**tiny, depth_words_steps=4, **weights)
        model = train_sandbox_clip(config, None, log=lambda _: None, stage1_from=tmp_path / "stage1")[0]
        with torch.no_grad():
            gaps[name] = scene_distillation(FoveatedCLIP(model), stage1, pixels, regions, bias, class_text, scale)
    assert gaps["none"]["embedding"] > 0 and gaps["embedding"]["embedding"] < gaps["none"]["embedding"] / 2
    assert gaps["class"]["class"] < gaps["none"]["class"] / 2


def test_training_smoke_run_saves_a_loadable_checkpoint(tmp_path):
    config = TrainConfig(steps=3, batch_size=8, vision_layers=1, vision_width=32, text_layers=1, text_width=32,
                         projection_dim=16, warmup_steps=1, log_every=1)
    _, _, history = train_sandbox_clip(config, tmp_path, log=lambda _: None)
    assert [h["step"] for h in history] == [0, 1, 2] and all(np.isfinite(h["loss"]) for h in history)
    model = FoveatedCLIP.from_pretrained(tmp_path)
    assert model.image_size == 64 and model.patch_size == 8 and model.num_layers == 1
    with torch.no_grad():
        assert model.encode_text(["a photo of red circle"]).shape == (1, 16)
    assert json.loads((tmp_path / "training_log.json").read_text())["config"]["steps"] == 3


def test_shipped_model_loads_and_knows_the_classes():
    files = {p.name for p in SANDBOX_MODEL_DIR.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "preprocessor_config.json", "MODEL_CARD.md"} <= files
    assert sum(p.stat().st_size for p in SANDBOX_MODEL_DIR.iterdir()) < 10e6
    model = FoveatedCLIP.from_pretrained(SANDBOX_MODEL_DIR)
    with torch.inference_mode():
        accuracy = classification_accuracy(model, [ORIGINAL_CLIP], scene_classification_split(60, 1, seed=4242))
    assert accuracy["Original CLIP"] > 50.0, "zero-shot single-object accuracy (chance: 5%)"


def test_generated_datasets_are_real_formats_and_cached(tmp_path):
    generator = {"_target_": "falip.sandbox.datasets.write_shapes_rec", "seed": 1, "scenes_per_split": 3, "width": 80, "height": 72,
                 "splits": {"objects2": 2, "objects3": 3}}
    root = build_generated_dataset(generator, tmp_path / "rec")
    split = load_rec_split("shapes", "objects3", root=root, layout="refer", split_by="synthetic")
    assert split.num_sentences == 9 and len(split.images) == 3
    assert all(len(image.candidates) == 3 and image.load_image().size == (80, 72) for image in split.images)
    stamp = (root / MARKER).stat().st_mtime_ns
    assert build_generated_dataset(generator, tmp_path / "rec") == root and (root / MARKER).stat().st_mtime_ns == stamp
    cls_root = build_generated_dataset({**generator, "_target_": "falip.sandbox.datasets.write_shapes_cls"},
                                       tmp_path / "cls")
    cls = load_box_classification_split(cls_root, "objects2")
    assert cls.classes == list(CLASS_NAMES) and len(cls.samples) == 3
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "file.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not a falip-generated dataset"):
        build_generated_dataset(generator, tmp_path / "other")
    with pytest.raises(ConfigError, match="generator._target_"):
        build_generated_dataset({"_target_": "falip.sandbox.datasets.write_shapes_seg"}, tmp_path / "x")
    with pytest.raises(ConfigError, match="needs _target_"):
        build_generated_dataset({"seed": 1}, tmp_path / "x")
