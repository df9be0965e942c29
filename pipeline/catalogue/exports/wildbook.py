"""Wildbook's bulk-import standard format: one row per confirmed photo (Encounter.hour and .minutes
when the time is known)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipeline.catalogue.exports import FORMATS
from pipeline.catalogue.exports.common import confirmed_rows, has_time, remarks, species
from pipeline.catalogue.store import Store
from pipeline.io.atomic import write_csv


@FORMATS.register("wildbook")
def export(store: Store, out: Path) -> Path:
    kind = species(store)
    rows = []
    for r, date, lat, lon, _, _ in confirmed_rows(store):
        rows.append({
            "Encounter.mediaAsset0": str((store.folder / r["file"]).resolve()),
            "MarkedIndividual.individualID": r["individual_id"],
            "Encounter.year": "" if pd.isna(date) else date.year,
            "Encounter.month": "" if pd.isna(date) else date.month,
            "Encounter.day": "" if pd.isna(date) else date.day,
            "Encounter.hour": date.hour if has_time(r["date"]) and not pd.isna(date) else "",
            "Encounter.minutes": f"{date.minute:02d}" if has_time(r["date"]) and not pd.isna(date) else "",
            "Encounter.decimalLatitude": "" if lat is None else lat,
            "Encounter.decimalLongitude": "" if lon is None else lon,
            "Encounter.verbatimLocality": r["location"] if lat is None and r["location"] else "",
            "Encounter.genus": kind["genus"], "Encounter.specificEpithet": kind["species"],
            "Encounter.photographer0.fullName": r["photographer"] or "",
            "Encounter.occurrenceID": r["encounter"] or "",
            "Encounter.occurrenceRemarks": remarks(r["notes"]),
        })
    write_csv(out, pd.DataFrame(rows))
    return out
