"""Duplicates by perceptual hash, fluke boxes and the automatic crop."""
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline import columns as C
from pipeline.cli import main
from pipeline.data.crop import auto_box, read_boxes
from pipeline.data.duplicates import merged_ids, put_first, duplicate_answers
from pipeline.data.phash import close_pairs, hamming, phash
from pipeline.errors import PipelineError
from tests.conftest import write_layout


def scene(seed, size=(320, 200)):
    """A photo with structure at several scales (smooth noise), different per seed."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, size=(6, 9, 3)).astype(np.uint8)
    img = Image.fromarray(coarse).resize(size, Image.BICUBIC)
    arr = np.asarray(img).astype(np.int16) + rng.integers(-10, 10, size=(size[1], size[0], 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def test_phash_finds_near_duplicates_and_separates_others(tmp_path):
    a = scene(1)
    a.save(tmp_path / "a.jpg", quality=95)
    a.resize((160, 100)).save(tmp_path / "a_small.jpg", quality=60)  # resized and re-encoded
    ha, hb = phash(a), phash(Image.open(tmp_path / "a_small.jpg"))
    assert hamming(ha, hb) <= 4
    others = [hamming(ha, phash(scene(s))) for s in range(2, 12)]
    assert min(others) > 8, others
    hashes = np.stack([ha, hb, phash(scene(2))])
    i, j, d = close_pairs(hashes, 4)
    assert list(zip(i, j)) == [(0, 1)] and d[0] == hamming(ha, hb)


def test_merge_ids_and_test_answers():
    pairs = pd.DataFrame({"image_a": ["1", "2", "3", "4"], "split_a": ["train"] * 4,
                          "id_a": ["w_b", "w_c", "new_whale", "w_a"],
                          "image_b": ["5", "6", "7", "t1"], "split_b": ["train", "train", "train", "test"],
                          "id_b": ["w_c", "w_d", "w_e", ""], "distance": [0, 2, 1, 3]})
    # w_b~w_c and w_c~w_d form one whale named w_b; new_whale merges with nothing.
    assert merged_ids(pairs) == {"w_c": "w_b", "w_d": "w_b"}
    answers = duplicate_answers(pairs)
    assert answers.to_dict("list") == {C.IMAGE: ["t1"], C.ID: ["w_a"]}
    labels, used = put_first([["new_whale", "w_x", "w_a", "w_y", "w_z"], ["w_q"] * 5], ["t1", "t2"], answers)
    assert used == 1 and labels[0] == ["w_a", "new_whale", "w_x", "w_y", "w_z"] and labels[1] == ["w_q"] * 5


@pytest.fixture()
def dup_data(tmp_path):
    rows = [("a.jpg", "w_1"), ("b.jpg", "w_2"), ("c.jpg", "w_3"), ("d.jpg", "w_3")]
    root = write_layout(tmp_path / "data", rows, ["t.jpg", "u.jpg"], make_images=False)
    scene(1).save(root / "train" / "a.jpg", quality=95)
    scene(1).resize((300, 190)).save(root / "train" / "b.jpg", quality=70)  # a's near-duplicate, other id
    scene(3).save(root / "train" / "c.jpg")
    scene(4).save(root / "train" / "d.jpg")
    scene(3).save(root / "test" / "t.jpg", quality=80)  # c's duplicate
    scene(5).save(root / "test" / "u.jpg")
    return root


def test_preprocess_reports_duplicates_and_merges_on_request(dup_data, tmp_path):
    work = tmp_path / "work"
    assert main(["preprocess", "--data", str(dup_data), "--work", str(work)]) == 0
    report = json.loads((work / "cache" / "preprocess.json").read_text())["duplicates"]
    assert report["train_pairs"] == 1 and report["train_pairs_across_ids"] == 1
    assert report["test_photos_with_train_duplicate"] == 1 and report["merged_ids"] == {}
    pairs = pd.read_csv(work / "cache" / "duplicates.csv")
    assert {(a, b) for a, b in zip(pairs["image_a"], pairs["image_b"])} == {("a.jpg", "b.jpg"), ("c.jpg", "t.jpg")}
    assert main(["preprocess", "--data", str(dup_data), "--work", str(work), "--set",
                 "duplicates.merge_ids=true"]) == 0
    manifest = pd.read_parquet(work / "cache" / "manifest.parquet").set_index(C.IMAGE)
    assert manifest.loc["b.jpg", C.ID] == "w_1" and manifest.loc["b.jpg", C.ORIGINAL_ID] == "w_2"


def test_boxes_file_is_validated_and_honoured(tmp_path):
    rows = [("a.jpg", "w_1"), ("b.jpg", "w_2")]
    root = write_layout(tmp_path / "data", rows, ["t.jpg"])
    photo = np.zeros((100, 200, 3), np.uint8)
    photo[20:60, 100:180] = (255, 0, 0)  # the "fluke": a red block
    Image.fromarray(photo).save(root / "train" / "a.png")
    (root / "train" / "a.jpg").unlink()
    Image.fromarray(photo).save(root / "train" / "a.jpg", quality=98)
    boxes = tmp_path / "boxes.csv"
    boxes.write_text("Image,x0,y0,x1,y1\na.jpg,100,20,180,60\n")
    work = tmp_path / "work"
    assert main(["preprocess", "--data", str(root), "--work", str(work), "--set", f"preprocess.boxes={boxes}",
                 "--set", "preprocess.image_size=[16,32]"]) == 0
    images = np.load(work / "cache" / "images.npy")
    manifest = pd.read_parquet(work / "cache" / "manifest.parquet")
    a = images[manifest.index[manifest[C.IMAGE] == "a.jpg"][0]].astype(int)
    assert (a[..., 0] > 200).mean() > 0.9 and (a[..., 1] < 60).mean() > 0.9  # all red: cropped to the box
    assert manifest.loc[manifest[C.IMAGE] == "a.jpg", C.CROP].item() == "100,20,180,60"
    for text, message in [("Image,x,y\n", "header is 'Image,x,y'"),
                          ("Image,x0,y0,x1,y1\na.jpg,1,2,three,4\n", "row 2: box of 'a.jpg' is not four numbers"),
                          ("Image,x0,y0,x1,y1\na.jpg,5,2,3,4\n", "row 2: box of 'a.jpg' is empty"),
                          ("Image,x0,y0,x1,y1\na.jpg,1,2,3,4\na.jpg,1,2,3,4\n", "row 3: second box for 'a.jpg'")]:
        boxes.write_text(text)
        with pytest.raises(PipelineError, match=message):
            read_boxes(boxes)
    boxes.write_text("Image,x0,y0,x1,y1\nghost.jpg,1,2,3,4\n")
    assert main(["preprocess", "--data", str(root), "--work", str(tmp_path / "w2"), "--set",
                 f"preprocess.boxes={boxes}"]) == 2
    assert not (tmp_path / "w2" / "cache" / "images.npy").exists()


def test_auto_box_finds_a_dark_subject_on_sea():
    sea = np.zeros((140, 300, 3), np.uint8)
    sea[...] = (30, 90, 160)
    sea[50:100, 180:280] = (20, 20, 20)  # a dark fluke right of centre
    box = auto_box(Image.fromarray(sea))
    assert box is not None
    x0, y0, x1, y1 = box
    assert 160 <= x0 <= 185 and 275 <= x1 <= 300 and 35 <= y0 <= 52 and 98 <= y1 <= 115, box
    assert auto_box(Image.fromarray(np.full((50, 80, 3), 128, np.uint8))) is None  # nothing stands out


def test_submission_uses_train_test_duplicates_only_when_asked(dup_data, tmp_path):
    from pipeline.data.cache import ImageCache
    from pipeline.stages.submit import answer_duplicates

    work = tmp_path / "work"
    assert main(["preprocess", "--data", str(dup_data), "--work", str(work), "--set",
                 "duplicates.merge_ids=true"]) == 0
    labels = [["new_whale", "w_1", "w_2", "w_4", "w_5"], ["w_1", "new_whale", "w_2", "w_4", "w_5"]]
    out = answer_duplicates(ImageCache.open(work), ["t.jpg", "u.jpg"], labels)
    # t.jpg is c.jpg's duplicate (w_3): w_3 first, the rest shifted; u.jpg has no duplicate.
    assert out == [["w_3", "new_whale", "w_1", "w_2", "w_4"], labels[1]]


def test_padding_box_cuts_flat_margins_and_keep_aspect_letterboxes(tmp_path):
    """A fluke photo letterboxed on white (the competition's 200 x 200 files): the white bands are cut,
    and keep_aspect fits what is left into the frame without stretching it."""
    import numpy as np
    from PIL import Image

    from pipeline.data.crop import padding_box
    from pipeline.data.images import decode_photo

    rng = np.random.default_rng(0)
    photo = np.full((200, 200, 3), 255, dtype=np.uint8)
    photo[60:140] = rng.integers(0, 120, size=(80, 200, 3))  # the subject: 200 x 80 px of texture
    Image.fromarray(photo).save(tmp_path / "f.png")
    assert padding_box(Image.fromarray(photo)) == (0, 60, 200, 140)
    assert padding_box(Image.new("RGB", (50, 50), (255, 255, 255))) is None  # a flat photo stays whole
    decoded = decode_photo(tmp_path / "f.png", (64, 128), trim_padding=True, keep_aspect=True)
    assert decoded.box == (0.0, 60.0, 200.0, 140.0)
    # 200 x 80 scaled into 128 x 64: 128 x 51, centred; the bands above and below are one flat colour.
    image = decoded.image.astype(int)
    assert (image[:6].std(axis=(0, 1)) < 1).all() and (image[-6:].std(axis=(0, 1)) < 1).all()
    assert image[20:44].std() > 10
    stretched = decode_photo(tmp_path / "f.png", (64, 128), trim_padding=True).image.astype(int)
    assert stretched[:6].std() > 10  # stretched, the subject fills the frame
