"""Kaggle's layout, so that `make all DATA=OUT` retrains on the grown catalogue: OUT/train.csv
(Image,Id, then date, location, encounter, photographer: preprocess reads Image,Id, `catalogue init
--from OUT` keeps the rest) + OUT/train/ with every confirmed photo (and unidentified ones as
new_whale), OUT/test/ + sample_submission.csv with the photos still to decide (or, when none are, one
confirmed photo per individual under another name so the layout stays valid)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd

from pipeline import columns as C
from pipeline.catalogue.exports import FORMATS
from pipeline.catalogue.exports.common import exported_name, photos
from pipeline.catalogue.store import Store
from pipeline.errors import PipelineError
from pipeline.io.atomic import write_csv

KAGGLE_EXTRA = ("date", "location", "encounter", "photographer")  # train.csv's columns after Image,Id


@FORMATS.register("kaggle")
def export(store: Store, out: Path) -> Path:
    if out.exists() and any(out.iterdir()):
        raise PipelineError("the export folder is not empty; choose a new one", out)
    train = photos(store, ("confirmed", "unidentified"))
    test = photos(store, ("pending", "unsure"))
    stand_ins = test.empty
    if stand_ins:  # Kaggle's layout needs test photos: a copy of one photo per individual stands in
        test = train[train["status"] == "confirmed"].drop_duplicates("individual_id")
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for sub in ("train", "test"):
        (tmp / sub).mkdir(parents=True)
    rows = []
    for _, r in train.iterrows():
        name = exported_name(r)
        shutil.copyfile(store.folder / r["file"], tmp / "train" / name)
        rows.append((name, r["individual_id"] if r["status"] == "confirmed" else C.NEW_WHALE,
                     *(r[k] or "" for k in KAGGLE_EXTRA)))
    write_csv(tmp / "train.csv", pd.DataFrame(rows, columns=[C.IMAGE, C.ID, *KAGGLE_EXTRA]))
    names = []
    for _, r in test.iterrows():
        name = ("copy_" if stand_ins else "") + exported_name(r)
        shutil.copyfile(store.folder / r["file"], tmp / "test" / name)
        names.append(name)
    write_csv(tmp / "sample_submission.csv", pd.DataFrame({C.IMAGE: names, C.ID: "new_whale"}))
    if out.exists():
        out.rmdir()
    tmp.rename(out)
    return out
