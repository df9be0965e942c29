"""Exports of a catalogue, derived from it and never its source of truth:

    kaggle    OUT/train.csv (Image,Id, then date, location, encounter, photographer: preprocess reads
              Image,Id, `catalogue init --from OUT` keeps the rest) + OUT/train/ with every confirmed
              photo (and unidentified ones as new_whale), OUT/test/ + sample_submission.csv with the
              photos still to decide (or, when none are, one confirmed photo per individual under
              another name so the layout stays valid): `make all DATA=OUT` retrains on the grown catalogue;
    wildbook  Wildbook's bulk-import standard format (one row per confirmed photo);
    dwc       Darwin Core occurrences (one row per confirmed photo).

Dates carry the time when it is known (the camera's, or typed as 2024-06-01T10:32): Darwin Core's
eventDate in ISO 8601, Wildbook's Encounter.hour and .minutes. A spreadsheet's other columns (notes)
go to occurrenceRemarks.

Photos are written under their content hash, so an export never renames two photos alike."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pandas as pd

from pipeline import columns as C
from pipeline.catalogue.store import Store
from pipeline.errors import PipelineError
from pipeline.io.atomic import write_csv

FORMATS = ("kaggle", "wildbook", "dwc")
KAGGLE_EXTRA = ("date", "location", "encounter", "photographer")  # train.csv's columns after Image,Id
_LAT_LON = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*[,; ]\s*(-?\d+(?:\.\d+)?)\s*$")


def lat_lon(location: str | None) -> tuple[float | None, float | None]:
    """'lat,lon' (decimal degrees) -> (lat, lon); any other text is a place name -> (None, None)."""
    match = _LAT_LON.match(location or "")
    if not match:
        return None, None
    lat, lon = float(match.group(1)), float(match.group(2))
    return (lat, lon) if -90 <= lat <= 90 and -180 <= lon <= 180 else (None, None)


def _photos(store: Store, statuses) -> pd.DataFrame:
    marks = ",".join("?" * len(statuses))
    frame = pd.read_sql_query(f"SELECT * FROM photos WHERE status IN ({marks}) ORDER BY arrival", store.db,
                              params=list(statuses))
    return frame.astype(object).where(frame.notna(), None)  # SQL NULL stays None, never NaN


def _exported_name(row) -> str:
    return f"{row['hash'][:16]}{Path(row['file']).suffix}"


def _identified_by(store: Store) -> dict:
    """photo -> (reviewer, time) of the decision in force that confirmed it."""
    rows = store.db.execute("SELECT photo, reviewer, at FROM decisions WHERE kind IN ('match', 'new') AND "
                            "undone_by IS NULL ORDER BY id").fetchall()
    return {r["photo"]: (r["reviewer"], r["at"]) for r in rows}


def export(store: Store, fmt: str, out) -> Path:
    if fmt not in FORMATS:
        raise PipelineError(f"unknown export format {fmt!r}; use {', '.join(FORMATS)}", "--format")
    out = Path(out)
    return {"kaggle": export_kaggle, "wildbook": export_wildbook, "dwc": export_dwc}[fmt](store, out)


def export_kaggle(store: Store, out: Path) -> Path:
    if out.exists() and any(out.iterdir()):
        raise PipelineError("the export folder is not empty; choose a new one", out)
    train = _photos(store, ("confirmed", "unidentified"))
    test = _photos(store, ("pending", "unsure"))
    stand_ins = test.empty
    if stand_ins:  # Kaggle's layout needs test photos: a copy of one photo per individual stands in
        test = train[train["status"] == "confirmed"].drop_duplicates("individual_id")
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for sub in ("train", "test"):
        (tmp / sub).mkdir(parents=True)
    rows = []
    for _, r in train.iterrows():
        name = _exported_name(r)
        shutil.copyfile(store.folder / r["file"], tmp / "train" / name)
        rows.append((name, r["individual_id"] if r["status"] == "confirmed" else C.NEW_WHALE,
                     *(r[k] or "" for k in KAGGLE_EXTRA)))
    write_csv(tmp / "train.csv", pd.DataFrame(rows, columns=[C.IMAGE, C.ID, *KAGGLE_EXTRA]))
    names = []
    for _, r in test.iterrows():
        name = ("copy_" if stand_ins else "") + _exported_name(r)
        shutil.copyfile(store.folder / r["file"], tmp / "test" / name)
        names.append(name)
    write_csv(tmp / "sample_submission.csv", pd.DataFrame({C.IMAGE: names, C.ID: "new_whale"}))
    if out.exists():
        out.rmdir()
    tmp.rename(out)
    return out


def _species(store: Store) -> dict:
    return store.setting("species", {"genus": "Megaptera", "species": "novaeangliae"})


def _has_time(text: str | None) -> bool:
    return bool(text) and bool(re.search(r"\d[T ]\d{1,2}:\d{2}", text))


def _event_date(date, text: str | None) -> str:
    """ISO 8601: the date, and the time when it was given (never a midnight that nobody wrote)."""
    if pd.isna(date):
        return ""
    return date.isoformat(timespec="seconds") if _has_time(text) else date.date().isoformat()


def _remarks(notes: str | None) -> str:
    values = json.loads(notes) if notes else {}
    return "; ".join(f"{k}: {v}" for k, v in values.items())


def _confirmed_rows(store: Store):
    photos = _photos(store, ("confirmed",))
    who = _identified_by(store)
    for _, r in photos.iterrows():
        date = pd.to_datetime(r["date"], errors="coerce") if r["date"] else pd.NaT
        if not pd.isna(date) and date.tzinfo is not None:
            date = date.tz_localize(None)  # the local time as written
        lat, lon = lat_lon(r["location"])
        reviewer, at = who.get(r["hash"], ("import", r["added_at"]))
        yield r, date, lat, lon, reviewer, at


def export_wildbook(store: Store, out: Path) -> Path:
    species = _species(store)
    rows = []
    for r, date, lat, lon, _, _ in _confirmed_rows(store):
        rows.append({
            "Encounter.mediaAsset0": str((store.folder / r["file"]).resolve()),
            "MarkedIndividual.individualID": r["individual_id"],
            "Encounter.year": "" if pd.isna(date) else date.year,
            "Encounter.month": "" if pd.isna(date) else date.month,
            "Encounter.day": "" if pd.isna(date) else date.day,
            "Encounter.hour": date.hour if _has_time(r["date"]) and not pd.isna(date) else "",
            "Encounter.minutes": f"{date.minute:02d}" if _has_time(r["date"]) and not pd.isna(date) else "",
            "Encounter.decimalLatitude": "" if lat is None else lat,
            "Encounter.decimalLongitude": "" if lon is None else lon,
            "Encounter.verbatimLocality": r["location"] if lat is None and r["location"] else "",
            "Encounter.genus": species["genus"], "Encounter.specificEpithet": species["species"],
            "Encounter.photographer0.fullName": r["photographer"] or "",
            "Encounter.occurrenceID": r["encounter"] or "",
            "Encounter.occurrenceRemarks": _remarks(r["notes"]),
        })
    write_csv(out, pd.DataFrame(rows))
    return out


def export_dwc(store: Store, out: Path) -> Path:
    species = _species(store)
    rows = []
    for r, date, lat, lon, reviewer, at in _confirmed_rows(store):
        rows.append({
            "occurrenceID": f"urn:catalogue:photo:{r['hash']}", "organismID": r["individual_id"],
            "eventDate": _event_date(date, r["date"]),
            "decimalLatitude": "" if lat is None else lat, "decimalLongitude": "" if lon is None else lon,
            "verbatimLocality": r["location"] if lat is None and r["location"] else "",
            "scientificName": f"{species['genus']} {species['species']}",
            "basisOfRecord": "MachineObservation", "associatedMedia": str((store.folder / r["file"]).resolve()),
            "identifiedBy": reviewer, "dateIdentified": at, "recordedBy": r["photographer"] or "",
            "eventID": r["encounter"] or "",
            "occurrenceRemarks": _remarks(r["notes"]),
        })
    write_csv(out, pd.DataFrame(rows))
    return out
