"""The learned fluke detector: bad box rows are refused by file and row, the GIoU loss and the mirror
augmentation match hand values, and `whale boxes train` -> preprocess.boxes_model crops every photo."""
import json

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline import columns as C
from pipeline.cli import main


def boxes_csv(path, rows):
    pd.DataFrame(rows, columns=[C.IMAGE, "x0", "y0", "x1", "y1"]).to_csv(path, index=False)
    return path


@pytest.mark.parametrize("case, message", [
    ("x0 >= x1", "row 3: box of '{name}' is empty or negative"),
    ("outside", "row 3: box of '{name}' (1,1,5000,20) lies outside the"),
    ("unknown", "row 3: box of 'nope.jpg': no such photo"),
])
def test_bad_box_rows_are_refused_by_file_and_row(tiny_synth, tmp_path, capsys, case, message):
    truth = pd.read_csv(tiny_synth / "boxes.csv")
    rows = truth.head(3).values.tolist()
    name = rows[1][0]
    rows[1] = {"x0 >= x1": [name, 50, 1, 40, 20], "outside": [name, 1, 1, 5000, 20],
               "unknown": ["nope.jpg", 1, 1, 5, 5]}[case]
    path = boxes_csv(tmp_path / "boxes.csv", rows)
    work = tmp_path / "w"
    assert main(["boxes", "train", "--data", str(tiny_synth), "--work", str(work), "--boxes", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}, {message.format(name=name)}" in err, err
    assert not (work / "boxes").exists()


def test_giou_loss_and_mirror_augmentation_by_hand():
    from pipeline.detection.fit import _augment
    from pipeline.detection.model import box_loss

    pred = torch.tensor([[0.0, 0.0, 0.5, 0.5]])
    target = torch.tensor([[0.25, 0.25, 0.75, 0.75]])
    inter, union, hull = 0.0625, 0.25 + 0.25 - 0.0625, 0.75 * 0.75
    giou = inter / union - (hull - union) / hull
    l1 = 0.25
    assert float(box_loss(pred, target)) == pytest.approx(l1 + 1 - giou, rel=1e-5)
    images = torch.arange(2 * 3 * 2 * 4, dtype=torch.uint8).view(2, 3, 2, 4)
    targets = torch.tensor([[0.1, 0.2, 0.4, 0.9], [0.1, 0.2, 0.4, 0.9]])
    generator = torch.Generator().manual_seed(0)
    flip = torch.rand(2, generator=torch.Generator().manual_seed(0)) < 0.5
    out_images, out_targets = _augment(images, targets, generator)
    for i in range(2):
        if flip[i]:  # the box mirrors with the photo
            assert torch.allclose(out_targets[i], torch.tensor([0.6, 0.2, 0.9, 0.9]))
        else:
            assert torch.allclose(out_targets[i], targets[i])


def test_boxes_train_then_preprocess_crops_with_the_model(tiny_synth, tmp_path):
    truth = pd.read_csv(tiny_synth / "boxes.csv")
    train = set(pd.read_csv(tiny_synth / "train.csv")[C.IMAGE])
    boxed = truth[truth[C.IMAGE].isin(train)].sample(frac=0.3, random_state=0)
    path = boxes_csv(tmp_path / "boxes.csv", boxed.values.tolist())
    work = tmp_path / "w"
    sets = ["--set", "boxes.epochs=8", "--set", "preprocess.image_size=[32,64]"]
    assert main(["boxes", "train", "--data", str(tiny_synth), "--work", str(work), "--boxes", str(path), *sets]) == 0
    report = json.loads((work / "boxes" / "report.json").read_text())
    assert report["boxed"] == len(boxed) and 0 <= report["held_out_iou"] <= 1
    predicted = pd.read_csv(work / "boxes" / "predicted.csv")
    assert set(predicted[C.IMAGE]) == set(truth[C.IMAGE]) - set(boxed[C.IMAGE])  # every other photo
    assert (predicted["x0"] <= predicted["x1"]).all() and (predicted["y0"] <= predicted["y1"]).all()
    model = str(work / "boxes" / "model.pt")
    assert main(["preprocess", "--data", str(tiny_synth), "--work", str(work), *sets,
                 "--set", f"preprocess.boxes_model={model}", "--set", f"preprocess.boxes={path}"]) == 0
    manifest = pd.read_parquet(work / "cache" / "manifest.parquet")
    assert (manifest[C.CROP] != "").all()  # boxed by hand or by the model
    crops = manifest.set_index(C.IMAGE)[C.CROP]
    hand = boxed.set_index(C.IMAGE).iloc[0]
    assert crops[hand.name] == ",".join(f"{v:.0f}" for v in hand[["x0", "y0", "x1", "y1"]])  # manual boxes win


def test_a_foreign_box_model_file_is_refused(tmp_path):
    from pipeline.detection.fit import load_box_model
    from pipeline.errors import PipelineError

    bad = tmp_path / "model.pt"
    torch.save({"something": np.zeros(3)}, bad)
    with pytest.raises(PipelineError, match="not a (loadable checkpoint|box model of this pipeline)"):
        load_box_model(bad)
