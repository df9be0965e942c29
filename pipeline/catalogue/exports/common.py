"""What the export formats share: the catalogue's photos by status, each photo's exported name, who
confirmed it and when, positions as written, dates, species and remarks."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd

from pipeline.catalogue.store import Store

_LAT_LON = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*[,; ]\s*(-?\d+(?:\.\d+)?)\s*$")


def lat_lon(location: str | None) -> tuple[float | None, float | None]:
    """'lat,lon' (decimal degrees) -> (lat, lon); any other text is a place name -> (None, None)."""
    match = _LAT_LON.match(location or "")
    if not match:
        return None, None
    lat, lon = float(match.group(1)), float(match.group(2))
    return (lat, lon) if -90 <= lat <= 90 and -180 <= lon <= 180 else (None, None)


def photos(store: Store, statuses) -> pd.DataFrame:
    marks = ",".join("?" * len(statuses))
    frame = pd.read_sql_query(f"SELECT * FROM photos WHERE status IN ({marks}) ORDER BY arrival", store.db,
                              params=list(statuses))
    return frame.astype(object).where(frame.notna(), None)  # SQL NULL stays None, never NaN


def exported_name(row) -> str:
    return f"{row['hash'][:16]}{Path(row['file']).suffix}"


def identified_by(store: Store) -> dict:
    """photo -> (reviewer, time) of the decision in force that confirmed it."""
    rows = store.db.execute("SELECT photo, reviewer, at FROM decisions WHERE kind IN ('match', 'new') AND "
                            "undone_by IS NULL ORDER BY id").fetchall()
    return {r["photo"]: (r["reviewer"], r["at"]) for r in rows}


def species(store: Store) -> dict:
    return store.setting("species", {"genus": "Megaptera", "species": "novaeangliae"})


def has_time(text: str | None) -> bool:
    return bool(text) and bool(re.search(r"\d[T ]\d{1,2}:\d{2}", text))


def event_date(date, text: str | None) -> str:
    """ISO 8601: the date, and the time when it was given (never a midnight that nobody wrote)."""
    if pd.isna(date):
        return ""
    return date.isoformat(timespec="seconds") if has_time(text) else date.date().isoformat()


def remarks(notes: str | None) -> str:
    values = json.loads(notes) if notes else {}
    return "; ".join(f"{k}: {v}" for k, v in values.items())


def confirmed_rows(store: Store):
    photos_ = photos(store, ("confirmed",))
    who = identified_by(store)
    for _, r in photos_.iterrows():
        date = pd.to_datetime(r["date"], errors="coerce") if r["date"] else pd.NaT
        if not pd.isna(date) and date.tzinfo is not None:
            date = date.tz_localize(None)  # the local time as written
        lat, lon = lat_lon(r["location"])
        reviewer, at = who.get(r["hash"], ("import", r["added_at"]))
        yield r, date, lat, lon, reviewer, at
