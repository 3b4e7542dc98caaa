"""REC loaders on fixtures written in the official formats: refer pickles, ReCLIP jsonl, detections, HF."""
import json
import pickle

import numpy as np
import pytest
from PIL import Image

from falip.data.rec.detections import load_detections, with_detections
from falip.data.rec.loading import load_rec_split
from falip.errors import DatasetError
from falip.data.rec.reclip import load_reclip_split, real_file_name
from falip.data.rec.refer import load_refer_split
from falip.data.rec.writers import write_reclip_jsonl, write_refer_dataset

CATEGORIES = [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}]


def fixture_data():
    rng = np.random.default_rng(0)
    images = [{"id": i, "file_name": f"COCO_train2014_{i:012d}.jpg",
               "image": Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))} for i in (1, 2, 3)]
    annotations = [
        {"id": 11, "image_id": 1, "category_id": 1, "bbox": [2.5, 3.0, 20.0, 30.0]},
        {"id": 12, "image_id": 1, "category_id": 3, "bbox": [30.0, 10.0, 25.0, 20.0]},
        {"id": 21, "image_id": 2, "category_id": 1, "bbox": [0.0, 0.0, 10.0, 10.0]},
        {"id": 22, "image_id": 2, "category_id": 3, "bbox": [12.0, 12.0, 30.0, 30.0]},
        {"id": 23, "image_id": 2, "category_id": 3, "bbox": [44.0, 5.0, 18.0, 40.0]},
        {"id": 31, "image_id": 3, "category_id": 1, "bbox": [5.0, 5.0, 20.0, 20.0]},
        {"id": 32, "image_id": 3, "category_id": 1, "bbox": [30.0, 20.0, 20.0, 20.0]},
    ]
    refs = [
        {"ref_id": 0, "ann_id": 11, "image_id": 1, "split": "testA", "sentences": ["The LADY on the left", "woman"]},
        {"ref_id": 1, "ann_id": 22, "image_id": 2, "split": "testB", "sentences": ["red car"]},
        {"ref_id": 2, "ann_id": 23, "image_id": 2, "split": "testB", "sentences": ["car on the right"]},
        {"ref_id": 3, "ann_id": 31, "image_id": 3, "split": "val", "sentences": ["man"]},
        {"ref_id": 4, "ann_id": 12, "image_id": 1, "split": "testAB", "sentences": ["the car"]},
        {"ref_id": 5, "ann_id": 32, "image_id": 3, "split": "train", "sentences": ["other man"]},
    ]
    return images, annotations, refs


@pytest.fixture
def refer_root(tmp_path):
    images, annotations, refs = fixture_data()
    write_refer_dataset(tmp_path, "refcoco", "unc", images, annotations, CATEGORIES, refs)
    return tmp_path


def test_refer_pickle_has_the_official_fields(refer_root):
    with open(refer_root / "refcoco" / "refs(unc).p", "rb") as handle:
        refs = pickle.load(handle)
    assert set(refs[0]) == {"ref_id", "ann_id", "image_id", "category_id", "split", "file_name", "sent_ids", "sentences"}
    assert refs[0]["file_name"] == "COCO_train2014_000000000001_0.jpg"
    assert set(refs[0]["sentences"][0]) == {"tokens", "raw", "sent_id", "sent"}
    instances = json.loads((refer_root / "refcoco" / "instances.json").read_text())
    assert instances["images"][0] == {"id": 1, "file_name": "COCO_train2014_000000000001.jpg", "width": 64, "height": 48}
    assert (refer_root / "images/mscoco/images/train2014/COCO_train2014_000000000001.jpg").is_file()


def test_refer_split_rules_grouping_and_boxes(refer_root):
    test_a = load_refer_split(refer_root, "refcoco", "testA")
    assert [img.image_id for img in test_a.images] == [1]  # testA + testAB refs, one image
    image = test_a.images[0]
    assert [s.text for s in image.sentences] == ["The LADY on the left", "woman", "the car"]
    assert image.candidates == [(2.5, 3.0, 22.5, 33.0), (30.0, 10.0, 55.0, 30.0)] and image.candidate_ids == [11, 12]
    assert image.sentences[2].target_ann_ids == (12,) and image.target_boxes(image.sentences[0]) == [(2.5, 3.0, 22.5, 33.0)]
    assert image.image_path.name == "COCO_train2014_000000000001.jpg"  # from instances.json, not the ref
    assert (image.width, image.height) == (64, 48) and image.load_image().size == (64, 48)
    test_b = load_refer_split(refer_root, "refcoco", "testB")
    assert [img.image_id for img in test_b.images] == [2, 1] and test_b.num_sentences == 3
    assert len(test_b.images[0].candidates) == 3
    test = load_refer_split(refer_root, "refcoco", "test")
    assert test.num_sentences == 5
    assert load_refer_split(refer_root, "refcoco", "val").num_sentences == 1


def test_refer_errors_name_the_file_and_choices(refer_root, tmp_path):
    with pytest.raises(DatasetError, match=r"unknown split 'testC'|has no refs"):
        load_refer_split(refer_root, "refcoco", "testC")
    with pytest.raises(DatasetError, match=r"split 'dev' .*has no refs.*\['testA', 'testAB', 'testB', 'train', 'val'\]"):
        load_refer_split(refer_root, "refcoco", "dev")
    with pytest.raises(DatasetError, match=r"refs\(umd\).p not found.*refs\(unc\).p"):
        load_refer_split(refer_root, "refcoco", "val", split_by="umd")
    with pytest.raises(DatasetError, match="refcocog does not exist"):
        load_refer_split(refer_root, "refcocog", "val")
    with pytest.raises(DatasetError, match="split_by"):
        (refer_root / "mine").mkdir()
        load_refer_split(refer_root, "mine", "val")
    bad = refer_root / "refcoco" / "refs(bad).p"
    bad.write_bytes(pickle.dumps([{"ref_id": 1, "image_id": 1}], protocol=2))
    with pytest.raises(DatasetError, match=r"ref 1 lacks field\(s\) \['ann_id', 'split', 'sentences'\]"):
        load_refer_split(refer_root, "refcoco", "val", split_by="bad")


def test_reclip_jsonl_equals_refer(refer_root, tmp_path):
    images, annotations, refs = fixture_data()
    for split in ("testA", "testB"):
        write_reclip_jsonl(tmp_path / "reclip", "refcoco", split, images, annotations, refs)
    line = json.loads((tmp_path / "reclip" / "refcoco_testa.jsonl").read_text().splitlines()[0])
    assert line["file_name"] == "COCO_train2014_000000000001_0.jpg" and len(line["anns"]) == 2
    assert real_file_name(line["file_name"]) == "COCO_train2014_000000000001.jpg"
    image_dir = refer_root / "images/mscoco/images/train2014"
    from_jsonl = load_reclip_split(tmp_path / "reclip", "refcoco", "testB", image_dir=image_dir)
    from_refer = load_refer_split(refer_root, "refcoco", "testB")
    assert [(i.image_id, i.candidates, [s.text for s in i.sentences], [s.target_ann_ids for s in i.sentences])
            for i in from_jsonl.images] == \
           [(i.image_id, i.candidates, [s.text for s in i.sentences], [s.target_ann_ids for s in i.sentences])
            for i in from_refer.images if i.image_id == 2]
    assert from_jsonl.images[0].image_path == from_refer.images[0].image_path
    with pytest.raises(DatasetError, match=r"refcoco_val.jsonl not found.*refcoco_testa.jsonl"):
        load_reclip_split(tmp_path / "reclip", "refcoco", "val", image_dir=image_dir)
    (tmp_path / "reclip" / "refcoco_val.jsonl").write_text('{"image_id": 1, "anns": []}\n')
    with pytest.raises(DatasetError, match="refcoco_val.jsonl:1: malformed ref"):
        load_reclip_split(tmp_path / "reclip", "refcoco", "val", image_dir=image_dir)


def test_detections_replace_candidates(refer_root, tmp_path):
    dets = tmp_path / "refcoco_dets_dict.json"
    dets.write_text(json.dumps({"1": [[2.0, 3.0, 20.0, 30.0], [0.0, 0.0, 5.0, 5.0]]}))
    split = load_rec_split("refcoco", "testB", root=refer_root, detections=dets)
    by_id = {img.image_id: img for img in split.images}
    assert by_id[1].candidates == [(2.0, 3.0, 22.0, 33.0), (0.0, 0.0, 5.0, 5.0)] and by_id[1].candidate_ids == [None, None]
    assert by_id[2].candidates == [(0.0, 0.0, 64.0, 48.0)], "no detections: the whole image"
    assert split.candidate_setting == "detections" and any("1 images had no detections" in n for n in split.notes)
    assert by_id[2].target_boxes(by_id[2].sentences[0]) == [(12.0, 12.0, 42.0, 42.0)]  # IoU still against gold
    listed = tmp_path / "list.json"
    listed.write_text(json.dumps([{"image_id": 2, "box": [1, 1, 2, 2]}]))
    assert load_detections(listed) == {2: [(1.0, 1.0, 3.0, 3.0)]}
    listed.write_text(json.dumps([{"box": [1, 1, 2, 2]}]))
    with pytest.raises(DatasetError, match="expected"):
        load_detections(listed)


def test_dispatcher_detects_layouts_and_explains_missing_data(refer_root, tmp_path):
    assert load_rec_split("refcoco", "testA", root=refer_root).source.startswith(str(refer_root / "refcoco"))
    with pytest.raises(DatasetError, match=r"refcoco has no split 'test'; valid: \['train', 'val', 'testA', 'testB'\]"):
        load_rec_split("refcoco", "test", root=refer_root)
    with pytest.raises(DatasetError, match=r"(?s)no refcoco\+ data found.*refer layout.*train2014.zip.*gsutil"):
        load_rec_split("refcoco+", "val", root=refer_root)
    with pytest.raises(DatasetError, match="dataset.root is not set"):
        load_rec_split("refcocog", "val")
    with pytest.raises(DatasetError, match="image folder .*nowhere does not exist"):
        load_rec_split("refcoco", "val", root=refer_root, image_dir=tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="layout must be one of"):
        load_rec_split("refcoco", "val", root=refer_root, layout="coco")


def test_hf_refer_like_and_lmms_style_from_local_parquet(refer_root, tmp_path):
    datasets = pytest.importorskip("datasets")
    images, annotations, refs = fixture_data()
    boxes = {a["id"]: a["bbox"] for a in annotations}
    rows = [{"ref_id": r["ref_id"], "image_id": r["image_id"], "ann_id": r["ann_id"], "split": r["split"],
             "bbox": boxes[r["ann_id"]], "image_path": f"COCO_train2014_{r['image_id']:012d}.jpg",
             "sentences": [{"raw": s} for s in r["sentences"]]} for r in refs]
    (tmp_path / "hf_refer" / "data").mkdir(parents=True)
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "hf_refer" / "data" / "train-00000.parquet"))
    image_dir = refer_root / "images/mscoco/images/train2014"
    split = load_rec_split("refcoco", "testB", layout="hf", hf_id=str(tmp_path / "hf_refer"), image_dir=image_dir)
    by_id = {img.image_id: img for img in split.images}
    assert sorted(by_id[2].candidate_ids) == [22, 23], "union of referred boxes: ann 21 is never referred"
    assert any("not comparable" in note for note in split.notes)
    assert by_id[1].image_path.is_file() and split.num_sentences == 3

    lmms = [{"question_id": str(k), "file_name": f"img{r['image_id']}.jpg", "bbox": boxes[r["ann_id"]],
             "answer": r["sentences"], "image": images[r["image_id"] - 1]["image"]} for k, r in enumerate(refs)]
    (tmp_path / "hf_lmms" / "data").mkdir(parents=True)
    datasets.Dataset.from_list(lmms).cast_column("image", datasets.Image()).to_parquet(
        str(tmp_path / "hf_lmms" / "data" / "testA-00000-of-00001.parquet"))
    split = load_rec_split("refcoco", "testA", layout="hf", hf_id=str(tmp_path / "hf_lmms"))
    assert split.num_sentences == 7 and split.images[0].load_image().size == (64, 48)
    assert split.images[0].candidates[0] == (2.5, 3.0, 22.5, 33.0)

    odd = [{"foo": 1, "bar": "x"}]
    (tmp_path / "hf_odd" / "data").mkdir(parents=True)
    datasets.Dataset.from_list(odd).to_parquet(str(tmp_path / "hf_odd" / "data" / "train-00000.parquet"))
    with pytest.raises(DatasetError, match=r"columns \['bar', 'foo'\]; expected a refer-like schema"):
        load_rec_split("refcoco", "train", layout="hf", hf_id=str(tmp_path / "hf_odd"))


def test_hf_offline_uncached_is_a_clear_error(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)  # read at import time; CI sets the env first
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    with pytest.raises(DatasetError, match=r"jxu124/refcoco.*huggingface-cli download --repo-type dataset"):
        load_rec_split("refcoco", "val", layout="hf", hf_id="jxu124/refcoco", image_dir=tmp_path)
