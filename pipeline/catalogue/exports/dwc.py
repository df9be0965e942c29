"""Darwin Core occurrences: one row per confirmed photo; eventDate in ISO 8601 with the time when it is
known; a spreadsheet's other columns (notes) in occurrenceRemarks."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipeline.catalogue.exports import FORMATS
from pipeline.catalogue.exports.common import confirmed_rows, event_date, remarks, species
from pipeline.catalogue.store import Store
from pipeline.io.atomic import write_csv


@FORMATS.register("dwc")
def export(store: Store, out: Path) -> Path:
    kind = species(store)
    rows = []
    for r, date, lat, lon, reviewer, at in confirmed_rows(store):
        rows.append({
            "occurrenceID": f"urn:catalogue:photo:{r['hash']}", "organismID": r["individual_id"],
            "eventDate": event_date(date, r["date"]),
            "decimalLatitude": "" if lat is None else lat, "decimalLongitude": "" if lon is None else lon,
            "verbatimLocality": r["location"] if lat is None and r["location"] else "",
            "scientificName": f"{kind['genus']} {kind['species']}",
            "basisOfRecord": "MachineObservation", "associatedMedia": str((store.folder / r["file"]).resolve()),
            "identifiedBy": reviewer, "dateIdentified": at, "recordedBy": r["photographer"] or "",
            "eventID": r["encounter"] or "",
            "occurrenceRemarks": remarks(r["notes"]),
        })
    write_csv(out, pd.DataFrame(rows))
    return out
