"""The catalogue a lab already has, read into one list of photos with what is known of each, whatever its
form (`whale catalogue init --from PATH`):

    a Kaggle layout      train.csv (Image, Id and any other columns) + train/
    a folder per         PATH/HW-0042/*.jpg: the folder's name is the individual's id; photos in a folder
      individual         named unidentified, unknown, unmatched, new_whale or no_id (any case) have none;
                         sub-folders are walked (PATH/HW-0042/2019/...), and a photo's id is always its top
                         folder's name: PATH/2019/HW-0042/... would file every photo under "2019", so top
                         folders holding only sub-folders are named in a warning
    a spreadsheet (CSV)  one row per photo: an image column (a path relative to the spreadsheet's folder,
                         or to --photos DIR), an id column, and any others

Columns are recognised by name, in any case and with or without spaces, dots, dashes or underscores
(COLUMNS below); --image-column / --id-column name them when the names differ. Date, time, location
(or latitude and longitude), encounter and photographer are kept as the photo's own fields, every other
column is kept as notes. An empty id, new_whale, unknown or unidentified means no id.

A problem with the whole source (not readable, no image or id column) is an error naming the file; a
problem with one photo (a row naming a file that is not there, an id with white space, a file that is
not a photo) passes that photo over, named by its row or path, and the others are still imported."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from pipeline import columns as C
from pipeline.catalogue.exports.common import lat_lon
from pipeline.catalogue.intake import PassedOver, gather, hidden_folder, skip_reason
from pipeline.errors import PipelineError

UNIDENTIFIED_FOLDERS = ("unidentified", "unknown", "unmatched", "new_whale", "no_id")
NO_ID = {"", C.NEW_WHALE, "unknown", "unidentified", "unmatched", "no_id"}
COLUMNS = {  # field -> accepted column names, normalised (lower case, no spaces, dots, dashes, underscores)
    "image": ("image", "file", "filename", "photo", "photofile", "picture", "path", "imagefile", "mediaasset",
              "encountermediaasset0", "associatedmedia"),
    "id": ("id", "individual", "individualid", "whale", "whaleid", "animal", "animalid", "catalogueid",
           "catalogid", "markedindividual", "markedindividualindividualid", "organismid"),
    "date": ("date", "eventdate", "datetaken", "datetime", "encounterdate", "sightingdate"),
    "time": ("time", "eventtime", "timetaken"),
    "location": ("location", "place", "locality", "site", "area", "verbatimlocality", "encounterverbatimlocality"),
    "latitude": ("lat", "latitude", "decimallatitude", "encounterdecimallatitude"),
    "longitude": ("lon", "long", "lng", "longitude", "decimallongitude", "encounterdecimallongitude"),
    "encounter": ("encounter", "encounterid", "sighting", "sightingid", "occurrence", "occurrenceid", "eventid",
                  "encounteroccurrenceid"),
    "photographer": ("photographer", "observer", "recordedby", "photographedby", "author",
                     "encounterphotographer0fullname"),
}


@dataclass
class Record:
    path: Path
    individual: str | None
    sheet: Path | None  # the spreadsheet and row that named it; None when the file was found in a folder
    row: int | None
    name: str  # the photo's name as the lab knows it (Kaggle's Image, the file's name)
    date: str | None = None
    location: str | None = None
    encounter: str | None = None
    photographer: str | None = None
    notes: dict = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"{self.sheet.name}, row {self.row}" if self.sheet else str(self.path)

    def refused(self, reason: str) -> PassedOver:
        if self.sheet:
            return PassedOver(self.sheet, f"photo {self.name!r}: {reason}", refused=True, row=self.row)
        return PassedOver(self.path, reason, refused=True)


@dataclass
class Source:
    kind: str  # kaggle | folders | sheet
    root: Path
    records: list[Record]
    passed: list[PassedOver]
    warnings: list[str] = field(default_factory=list)  # what the reader did that may not be what was meant


def read_source(path, photos: str | Path | None = None, image_column: str | None = None,
                id_column: str | None = None) -> Source:
    path = Path(path)
    if path.is_file() and path.suffix.lower() in (".csv", ".txt", ".tsv"):
        return read_sheet(path, Path(photos) if photos else path.parent, image_column, id_column)
    if path.is_dir() and (path / "train.csv").is_file() and (path / "train").is_dir():
        return read_kaggle(path)
    if path.is_dir():
        return read_folders(path)
    raise PipelineError("expected a Kaggle layout (train.csv + train/), a folder with a folder per individual, "
                        "or a CSV spreadsheet (one row per photo)", path)


def _normal(name: str) -> str:
    return re.sub(r"[\s._\-]+", "", str(name).strip().lower())


def _columns(header: list[str], sheet: Path, image_column: str | None, id_column: str | None) -> dict[str, str]:
    """field -> the sheet's column that holds it."""
    found: dict[str, str] = {}
    for key, given in (("image", image_column), ("id", id_column)):
        if given is not None:
            if given not in header:
                raise PipelineError(f"no column {given!r} (the columns are {', '.join(header)})", sheet, 1)
            found[key] = given
    for key, names in COLUMNS.items():
        if key in found:
            continue
        matches = [c for c in header if _normal(c) in names and c not in found.values()]
        if len(matches) > 1:
            raise PipelineError(f"columns {', '.join(matches)} could each be the {key}: name one with "
                                f"--{key}-column" if key in ("image", "id") else
                                f"columns {', '.join(matches)} could each be the {key}: rename all but one", sheet, 1)
        if matches:
            found[key] = matches[0]
    for key in ("image", "id"):
        if key not in found:
            raise PipelineError(f"no {key} column (the columns are {', '.join(header)}); accepted names: "
                                f"{', '.join(COLUMNS[key])}, or name it with --{key}-column", sheet, 1)
    return found


def _read_table(sheet: Path) -> pd.DataFrame:
    try:
        table = pd.read_csv(sheet, dtype=str, keep_default_na=False, sep=None, engine="python",
                            encoding="utf-8-sig")
    except pd.errors.EmptyDataError:
        raise PipelineError("the spreadsheet is empty", sheet, 1) from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError) as e:
        raise PipelineError(f"not a readable CSV: {e}", sheet) from None
    if table.empty:
        raise PipelineError("no rows after the header", sheet, 2)
    return table


def _records_from_table(table: pd.DataFrame, sheet: Path, folder: Path, columns: dict[str, str]) \
        -> tuple[list[Record], list[PassedOver]]:
    records, passed = [], []
    used = set(columns.values())
    first_row: dict[Path, int] = {}
    for i, row in enumerate(table.to_dict(orient="records")):
        number = i + 2  # the header is row 1
        value = {k: str(row[c]).strip() for k, c in columns.items()}
        image = value["image"]
        if not image:
            passed.append(PassedOver(sheet, f"empty {columns['image']}", refused=True, row=number))
            continue
        path = Path(image) if Path(image).is_absolute() else folder / image
        if not path.is_file():
            passed.append(PassedOver(sheet, f"photo {image!r} not found in {folder}", refused=True, row=number))
            continue
        if path.resolve() in first_row:
            passed.append(PassedOver(sheet, f"photo {image!r} is listed already at row {first_row[path.resolve()]}",
                                     refused=True, row=number))
            continue
        first_row[path.resolve()] = number
        individual = value["id"]
        if any(ch.isspace() for ch in individual):
            passed.append(PassedOver(sheet, f"id {individual!r} contains white space (ids are written "
                                            "space-separated in Kaggle's layout)", refused=True, row=number))
            continue
        date = value.get("date") or None
        if date and value.get("time"):
            date = f"{date}T{value['time']}"
        location = value.get("location") or None
        notes = {c: str(row[c]) for c in table.columns if c not in used and str(row[c]).strip()}
        if value.get("latitude") and value.get("longitude"):
            lat, lon = lat_lon(f"{value['latitude']},{value['longitude']}")
            if lat is None:
                passed.append(PassedOver(sheet, f"latitude {value['latitude']!r}, longitude {value['longitude']!r} "
                                                "is not a position in decimal degrees", refused=True, row=number))
                continue
            if location:
                notes[columns["location"]] = location  # the place's name is kept beside its position
            location = f"{lat},{lon}"
        records.append(Record(path, None if individual.lower() in NO_ID else individual, sheet, number, path.name, date,
                              location, value.get("encounter") or None, value.get("photographer") or None, notes))
    return records, passed


def read_sheet(sheet: Path, folder: Path, image_column: str | None = None, id_column: str | None = None) -> Source:
    table = _read_table(sheet)
    columns = _columns([str(c) for c in table.columns], sheet, image_column, id_column)
    records, passed = _records_from_table(table, sheet, folder, columns)
    return Source("sheet", sheet.parent, records, passed)


def read_kaggle(root: Path) -> Source:
    """A Kaggle layout, checked as preprocess checks it (an error names the row); train.csv's columns
    beyond Image,Id are read as a spreadsheet's."""
    from pipeline.io.layout import read_labels_csv, read_layout

    read_layout(root)
    table = read_labels_csv(root / "train.csv")
    header = [str(c) for c in table.columns]
    columns = _columns(header, root / "train.csv", C.IMAGE, C.ID)
    records, passed = _records_from_table(table, root / "train.csv", root / "train", columns)
    if passed:  # read_layout has checked every row already; nothing here may be passed over silently
        raise PipelineError(passed[0].reason, passed[0].path, passed[0].row)
    return Source("kaggle", root, records, passed)


def read_folders(root: Path) -> Source:
    records: list[Record] = []
    passed: list[PassedOver] = []
    nested: list[tuple[Path, Path]] = []  # (top folder without a photo of its own, a sub-folder of it)
    for child in sorted(root.iterdir(), key=lambda p: p.name):
        if child.is_file():
            passed.append(PassedOver(child, skip_reason(child) or "a photo not in an individual's folder (put "
                                            f"photos without an id in {UNIDENTIFIED_FOLDERS[0]}/)"))
            continue
        if hidden_folder(child):
            passed.append(PassedOver(child, "hidden or system folder"))
            continue
        photos, over = gather([child])
        passed.extend(over)
        unidentified = child.name.lower() in UNIDENTIFIED_FOLDERS
        if not unidentified and any(ch.isspace() for ch in child.name):
            passed.extend(PassedOver(p, f"the folder's name {child.name!r} contains white space: not usable as an "
                                        "id (ids are written space-separated in Kaggle's layout)", refused=True)
                          for p in photos)
            continue
        records.extend(Record(p, None if unidentified else child.name, None, None, p.name) for p in photos)
        if photos and not unidentified and all(p.parent != child for p in photos):
            nested.append((child, sorted({p.parent for p in photos})[0]))
    if not records:
        raise PipelineError(f"no photo in a folder per individual here (expected {root}/ID/photo.jpg, and "
                            f"{root}/{UNIDENTIFIED_FOLDERS[0]}/ for photos without an id)", root)
    return Source("folders", root, records, passed, nested_warning(root, nested))


def nested_warning(root: Path, nested: list[tuple[Path, Path]]) -> list[str]:
    """One warning naming the top folders whose photos are all in sub-folders: their photos are filed
    under the top folder's name, which is wrong when the top folders are years or surveys."""
    if not nested:
        return []
    names = ", ".join(repr(top.name) for top, _ in nested[:5]) + (f" and {len(nested) - 5} more" if len(nested) > 5
                                                                   else "")
    top, example = nested[0]
    return [f"{len(nested)} top folder(s) of {root} hold photos only in sub-folders ({names}): every photo under "
            f"a top folder gets that folder's name as its id, so those under {example.relative_to(root)} are filed "
            f"as {top.name!r}. If the top folders are years or surveys with the individuals' folders inside, "
            f"lay the photos out as {root}/ID/... or list them in a spreadsheet with an id column"]
