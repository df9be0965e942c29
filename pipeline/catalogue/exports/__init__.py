"""Exports of a catalogue, derived from it and never its source of truth; one module per format,
registered by name (a new format is one module here plus its import below):

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

from pathlib import Path

from pipeline.registry import Registry

FORMATS = Registry("export format", "--format")


def export(store, fmt: str, out) -> Path:
    return FORMATS.get(fmt)(store, Path(out))


# The formats register themselves on import.
from pipeline.catalogue.exports import dwc, kaggle, wildbook  # noqa: E402,F401
