"""Encounters: the photos of one sighting, matched together and decided together (as Wildbook and
Happywhale review them).

A photo's encounter is the one given (--encounter, a spreadsheet's column), else the camera's: photos
of one camera (make, model and serial from EXIF) whose times follow each other by at most the gap
(catalogue setting `encounter_gap_minutes`, default 10) form one encounter, and a photo within the gap
of a stored photo of that camera joins that photo's encounter. A photo without a camera or a time is
an encounter of its own.

An encounter's ranking: each candidate's best score over the encounter's photos (and the photo that
scored it); P(new individual) is the smallest of the photos' (P falls as the best score rises, so this
is P of the encounter's best score); the suggestion is `new` when the best score is under the policy's
threshold. From each photo's stored five candidates the encounter's five are exact: a candidate whose
best score is among the encounter's five is among the five of the photo that gives it that score."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Callable

from pipeline.catalogue.exif import camera_tag

DEFAULT_GAP_MINUTES = 10.0
SHOWN = 5


@dataclass(frozen=True)
class Sighted:
    """What planning needs of one photo."""
    camera: str | None
    taken: datetime | None
    given: str | None  # the encounter the user gave, if any


def encounter_id(camera: str, first: datetime) -> str:
    return f"E{first:%Y%m%d-%H%M%S}-{camera_tag(camera)}"


def plan(photos: list[Sighted], gap_minutes: float,
         stored: Callable[[str, datetime, datetime], str | None] = lambda camera, start, end: None) \
        -> list[tuple[str | None, bool]]:
    """Each photo's (encounter, whether it came from the time gap). `stored(camera, start, end)` names an
    encounter of a stored photo of that camera taken within [start, end], if there is one."""
    gap = timedelta(minutes=float(gap_minutes))
    out: list[tuple[str | None, bool]] = [(p.given, False) if p.given else (None, False) for p in photos]
    by_camera: dict[str, list[int]] = {}
    for i, p in enumerate(photos):
        if not p.given and p.camera and p.taken:
            by_camera.setdefault(p.camera, []).append(i)
    for camera, members in by_camera.items():
        members.sort(key=lambda i: photos[i].taken)
        runs = [[members[0]]]
        for i in members[1:]:
            if photos[i].taken - photos[runs[-1][-1]].taken <= gap:
                runs[-1].append(i)
            else:
                runs.append([i])
        for run in runs:
            first, last = photos[run[0]].taken, photos[run[-1]].taken
            name = stored(camera, first - gap, last + gap) or encounter_id(camera, first)
            for i in run:
                out[i] = (name, True)
    return out


def combine(items: list[dict]) -> dict:
    """One ranking for an encounter from its photos' rankings (each a dict with hash, candidates [{id,
    score, photos}], p_new, suggested and threshold): candidates best first, each with `query`, the
    encounter's photo that scored it best."""
    best: dict[str, dict] = {}
    for item in items:
        for c in item.get("candidates") or []:
            if c["id"] not in best or c["score"] > best[c["id"]]["score"]:
                best[c["id"]] = {**c, "query": item["hash"]}
    candidates = sorted(best.values(), key=lambda c: -c["score"])[:SHOWN]
    p_values = [i["p_new"] for i in items if i.get("p_new") is not None]
    thresholds = [i["threshold"] for i in items if i.get("threshold") is not None]
    if not candidates:
        suggested = "new"
    elif thresholds:
        suggested = "new" if candidates[0]["score"] < thresholds[0] else candidates[0]["id"]
    else:
        suggested = "new" if all(i.get("suggested") == "new" for i in items) else candidates[0]["id"]
    return {"candidates": candidates, "p_new": min(p_values) if p_values else None, "suggested": suggested}
