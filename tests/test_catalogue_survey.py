"""A lab's material in the catalogue: a survey's folders as they come off the cards (sidecars, RAW,
system files, a photo cut short), what the camera wrote (date, time, GPS) carried to the page and every
export, and encounters queued, ranked and decided as one item."""
import json

import pandas as pd
from PIL import Image

from pipeline import columns as C
from pipeline.cli import main
from tests.conftest import catalogue_db as db, exif_photo


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def camera_copy(source, out, taken, gps=None, serial="0123", brighter=None):
    """A photo re-saved as a camera writes it: the same animal (optionally brighter: other bytes) with
    DateTimeOriginal, GPS, make, model and serial."""
    from PIL import ImageEnhance

    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = "Canon", "Canon EOS 7D"
    exif.get_ifd(0x8769)[0x9003] = taken
    exif.get_ifd(0x8769)[0xA431] = serial
    if gps:
        info = exif.get_ifd(0x8825)
        info[1], info[2] = "N", (float(int(gps[0])), round((gps[0] % 1) * 60, 4), 0.0)
        info[3], info[4] = "W", (float(int(-gps[1])), round((-gps[1] % 1) * 60, 4), 0.0)
    out.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(source) as img:
        img = img.convert("RGB")
        if brighter:
            img = ImageEnhance.Brightness(img).enhance(brighter)
        img.save(out, exif=exif, quality=92)
    return out


def survey_card(root, data):
    """card/100CANON/: three photos of camera 0123 at 10:00, 10:03 and 10:30 (a 10-minute gap makes two
    encounters), one of camera 0999 at 10:01, one without EXIF, one cut short, a RAW beside its JPEG,
    an .xmp sidecar, .DS_Store and Thumbs.db."""
    test = sorted((data / "test").iterdir())
    card = root / "card" / "100CANON"
    camera_copy(test[0], card / "IMG_0001.JPG", "2024:06:01 10:00:00", (64.1, -21.95))
    camera_copy(test[1], card / "IMG_0002.JPG", "2024:06:01 10:03:00", (64.1, -21.95))
    camera_copy(test[2], card / "IMG_0003.JPG", "2024:06:01 10:30:00")
    camera_copy(test[3], card / "IMG_0004.JPG", "2024:06:01 10:01:00", serial="0999")
    with Image.open(test[4]) as img:
        img.convert("RGB").save(card / "IMG_0005.JPG")
    whole = camera_copy(test[5], root / "whole.jpg", "2024:06:01 10:02:00")
    (card / "IMG_0006.JPG").write_bytes(whole.read_bytes()[:whole.stat().st_size // 2])
    for name in ("IMG_0001.CR2", "IMG_0001.xmp", ".DS_Store", "Thumbs.db"):
        (card / name).write_bytes(b"\0" * 64)
    return root / "card"


def test_add_a_survey_folder_every_photo_in_every_other_file_named(catalogue, trained_tiny, tmp_path, capsys):
    data, _ = trained_tiny
    card = survey_card(tmp_path, data)
    code, out, err = run(capsys, "catalogue", "add", "--catalogue", catalogue, card)
    assert code == 2, err  # one photo refused: the status says so
    assert out.count("queued ") == 5, out
    photos = card / "100CANON"
    for name, reason in (("IMG_0001.CR2", "skipped {}: RAW file; the photo beside it, IMG_0001.JPG, is tried"),
                         ("IMG_0001.xmp", "skipped {}: sidecar file (.xmp)"), (".DS_Store", "skipped {}: system file"),
                         ("Thumbs.db", "skipped {}: system file"),
                         ("IMG_0006.JPG", "refused {}: cannot decode image")):
        assert reason.format(photos / name) in out, (name, out)
    assert "5 photo(s) queued, 4 file(s) skipped, 1 refused" in out
    assert "IMG_0006.JPG" in err and "cannot decode image" in err
    # The refused photo stored nothing; the catalogue is consistent.
    assert run(capsys, "catalogue", "check", "--catalogue", catalogue)[0] == 0
    with db(catalogue) as con:
        rows = {r["original_name"]: dict(r) for r in con.execute("SELECT * FROM photos WHERE source = 'add'")}
    assert sorted(rows) == [f"IMG_000{i}.JPG" for i in range(1, 6)]
    first = rows["IMG_0001.JPG"]
    assert first["date"] == "2024-06-01T10:00:00" and first["location"] == "64.100000,-21.950000"
    assert first["camera"] == "Canon EOS 7D #0123"
    origin = json.loads(first["origin"])
    assert origin["date"] == origin["location"] == "camera" and origin["encounter"] == "time gap"
    encounter = {n: r["encounter"] for n, r in rows.items()}
    assert encounter["IMG_0001.JPG"] == encounter["IMG_0002.JPG"] == "E20240601-100000-" + first["encounter"][-4:]
    assert encounter["IMG_0003.JPG"] not in (None, encounter["IMG_0001.JPG"])  # 27 minutes later
    assert encounter["IMG_0004.JPG"] not in (None, encounter["IMG_0001.JPG"])  # another camera
    assert encounter["IMG_0005.JPG"] is None and rows["IMG_0005.JPG"]["date"] is None  # no EXIF, nothing given
    # A later batch: a photo 4 minutes after IMG_0003 joins its stored encounter; given values win.
    test = sorted((data / "test").iterdir())
    later = tmp_path / "day2"
    camera_copy(test[6], later / "IMG_0007.JPG", "2024:06:01 10:34:00", (64.2, -22.0))
    camera_copy(test[7], later / "IMG_0008.JPG", "2024:06:01 18:00:00", (64.2, -22.0))
    (later / "IMG_0007.xmp").write_text("<x/>")
    code, out, err = run(capsys, "catalogue", "add", "--catalogue", catalogue, later / "IMG_0007.JPG",
                         later / "IMG_0007.xmp")
    assert code == 0, err  # a skipped sidecar is no refusal
    code, out, err = run(capsys, "catalogue", "add", "--catalogue", catalogue, later / "IMG_0008.JPG", "--date",
                         "2024-06-02", "--location", "Husavik")
    assert code == 0, err
    with db(catalogue) as con:
        seventh, eighth = (dict(con.execute("SELECT * FROM photos WHERE original_name = ?", (n,)).fetchone())
                           for n in ("IMG_0007.JPG", "IMG_0008.JPG"))
    assert seventh["encounter"] == encounter["IMG_0003.JPG"]
    assert (eighth["date"], eighth["location"]) == ("2024-06-02", "Husavik")
    origin = json.loads(eighth["origin"])
    assert "date" not in origin and origin["camera_date"] == "2024-06-01T18:00:00"


def test_the_cameras_time_and_position_reach_every_export(catalogue, trained_tiny, tmp_path, capsys):
    from pipeline.catalogue.catalogue import Catalogue

    data, _ = trained_tiny
    solution = pd.read_csv(data / "solution.csv")
    known = solution[solution[C.ID] != C.NEW_WHALE].iloc[0]
    photo = camera_copy(data / "test" / known[C.IMAGE], tmp_path / "IMG_0100.JPG", "2024:06:01 10:32:05",
                        (64.1, -21.95))
    cat = Catalogue.open(catalogue)
    added = cat.add([photo])[0]
    cat.decide(added.hash, "match", "ann", known[C.ID])
    for fmt in ("dwc", "wildbook"):
        assert run(capsys, "catalogue", "export", "--catalogue", catalogue, "--format", fmt, "--out",
                   tmp_path / f"{fmt}.csv")[0] == 0
    dwc = pd.read_csv(tmp_path / "dwc.csv", dtype=str, keep_default_na=False)
    row = dwc[dwc["identifiedBy"] == "ann"].iloc[0]
    assert row["eventDate"] == "2024-06-01T10:32:05" and float(row["decimalLatitude"]) == 64.1
    assert float(row["decimalLongitude"]) == -21.95 and row["eventID"].startswith("E20240601-103205-")
    assert (dwc[dwc["identifiedBy"] == "import"]["eventDate"] == "").all()  # nobody wrote a date for those
    wildbook = pd.read_csv(tmp_path / "wildbook.csv", dtype=str, keep_default_na=False)
    mine = wildbook[wildbook["Encounter.decimalLatitude"] != ""].iloc[0]
    assert (mine["Encounter.year"], mine["Encounter.month"], mine["Encounter.day"]) == ("2024", "6", "1")
    assert (mine["Encounter.hour"], mine["Encounter.minutes"]) == ("10", "32")
    assert float(mine["Encounter.decimalLongitude"]) == -21.95
    assert run(capsys, "catalogue", "export", "--catalogue", catalogue, "--format", "kaggle", "--out",
               tmp_path / "kaggle")[0] == 0
    train = pd.read_csv(tmp_path / "kaggle" / "train.csv", dtype=str, keep_default_na=False)
    assert list(train.columns[:2]) == [C.IMAGE, C.ID] and "date" in train.columns and "location" in train.columns
    assert (train["date"] == "2024-06-01T10:32:05").sum() == 1


def test_an_encounter_is_one_item_ranked_over_its_photos_and_decided_and_undone_together(catalogue, trained_tiny,
                                                                                          tmp_path, capsys):
    data, _ = trained_tiny
    solution = pd.read_csv(data / "solution.csv")
    known = solution[solution[C.ID] != C.NEW_WHALE].iloc[0]
    source = data / "test" / known[C.IMAGE]
    sighting = tmp_path / "sighting"
    camera_copy(source, sighting / "A.JPG", "2024:06:01 10:00:00")
    camera_copy(source, sighting / "B.JPG", "2024:06:01 10:00:20", brighter=1.25)
    camera_copy(source, sighting / "C.JPG", "2024:06:01 10:01:00", brighter=0.75)
    exif_photo(tmp_path / "alone.jpg", "2024:06:01 12:00:00", seed=5)
    cat = ["--catalogue", catalogue]
    assert run(capsys, "catalogue", "add", *cat, sighting, tmp_path / "alone.jpg")[0] == 0
    photos = json.loads(run(capsys, "catalogue", "queue", *cat, "--json")[1])
    items = json.loads(run(capsys, "catalogue", "queue", *cat, "--json", "--encounters")[1])
    assert len(photos) == 4 and len(items) == 2
    item = items[0]
    assert item["kind"] == "encounter" and [p["name"] for p in item["photos"]] == ["A.JPG", "B.JPG", "C.JPG"]
    # Each candidate's score is its best over the encounter's photos, with the photo that scored it.
    best = {}
    for p in photos[:3]:
        for c in p["candidates"]:
            if c["score"] > best.get(c["id"], (-1e9, None))[0]:
                best[c["id"]] = (c["score"], p["hash"])
    expected = sorted(best.items(), key=lambda kv: -kv[1][0])[:5]
    assert [(c["id"], c["score"], c["query"]) for c in item["candidates"]] == \
           [(w, score, query) for w, (score, query) in expected]
    assert item["p_new"] == min(p["p_new"] for p in photos[:3])
    assert items[1]["kind"] == "photo" and items[1]["name"] == "alone.jpg"
    # One decision for the encounter: a decision row per photo, one group; undo takes all three back.
    code, out, err = run(capsys, "catalogue", "decide", *cat, "--encounter", item["encounter"], "--match",
                         known[C.ID], "--reviewer", "ann")
    assert code == 0 and "3 photo(s): match" in out, err
    with db(catalogue) as con:
        decided = [dict(r) for r in con.execute("SELECT * FROM decisions WHERE kind = 'match'")]
        statuses = {r[0] for r in con.execute("SELECT status || ' ' || individual_id FROM photos WHERE encounter = ?",
                                              (item["encounter"],))}
    assert len(decided) == 3 and statuses == {f"confirmed {known[C.ID]}"}
    assert len({json.loads(d["details"])["group"] for d in decided}) == 1 and all(d["candidates"] for d in decided)
    code, out, err = run(capsys, "catalogue", "decide", *cat, "--encounter", item["encounter"], "--junk",
                         "--reviewer", "bob")
    assert code == 2 and f"every photo of encounter {item['encounter']!r} is decided already (3 {known[C.ID]})" in err
    code, out, err = run(capsys, "catalogue", "undo", *cat, "--reviewer", "ann")
    assert code == 0 and "with 2 more of its encounter" in out
    with db(catalogue) as con:
        assert {r[0] for r in con.execute("SELECT status FROM photos WHERE encounter = ?",
                                          (item["encounter"],))} == {"pending"}
        assert con.execute("SELECT COUNT(*) FROM decisions WHERE kind = 'undo'").fetchone()[0] == 3
        assert con.execute("SELECT COUNT(*) FROM decisions WHERE undone_by IS NULL AND kind = 'match'").fetchone()[0] == 0
    # A new individual for the encounter: one id for all three photos.
    code, out, err = run(capsys, "catalogue", "decide", *cat, "--encounter", item["encounter"], "--new",
                         "HW-0042", "--reviewer", "ann")
    assert code == 0, err
    with db(catalogue) as con:
        assert [r[0] for r in con.execute("SELECT individual_id FROM photos WHERE encounter = ?",
                                          (item["encounter"],))] == ["HW-0042"] * 3


def test_decide_encounter_decides_the_photos_the_page_shows_as_its_item(catalogue, trained_tiny, tmp_path, capsys):
    """A photo of the encounter decided unsure is an item of its own on the page (and in queue --encounters):
    `decide --encounter` decides the pending photos the page groups, and leaves the unsure one for its own
    decision, which it takes once nothing of the encounter is pending. An encounter decided whole and one
    that does not exist are refused, each saying which."""
    from pipeline.catalogue.catalogue import Catalogue

    data, _ = trained_tiny
    solution = pd.read_csv(data / "solution.csv")
    known = solution[solution[C.ID] != C.NEW_WHALE].iloc[0]
    source = data / "test" / known[C.IMAGE]
    sighting = tmp_path / "sighting"
    camera_copy(source, sighting / "A.JPG", "2024:06:01 10:00:00")
    camera_copy(source, sighting / "B.JPG", "2024:06:01 10:00:20", brighter=1.25)
    camera_copy(source, sighting / "C.JPG", "2024:06:01 10:01:00", brighter=0.75)
    cat = ["--catalogue", catalogue]
    assert run(capsys, "catalogue", "add", *cat, sighting)[0] == 0
    assert run(capsys, "catalogue", "decide", *cat, "B.JPG", "--unsure", "--reviewer", "ann")[0] == 0
    page = Catalogue.open(catalogue).queue(include_unsure=True, by_encounter=True)  # what the page lists
    encounter = page[0]["encounter"]
    shown = {item["status"]: sorted(p["name"] for p in item["photos"]) for item in page
             if item["encounter"] == encounter}
    assert shown == {"pending": ["A.JPG", "C.JPG"], "unsure": ["B.JPG"]}
    code, out, err = run(capsys, "catalogue", "decide", *cat, "--encounter", encounter, "--match", known[C.ID],
                         "--reviewer", "bob")
    assert code == 0 and "2 photo(s): match" in out and "its 1 unsure photo(s) left for their own decision" in out, err
    with db(catalogue) as con:
        status = dict(con.execute("SELECT original_name, status FROM photos WHERE encounter = ?", (encounter,)))
    assert status == {"A.JPG": "confirmed", "B.JPG": "unsure", "C.JPG": "confirmed"}
    # Nothing pending any more: the encounter's item is its unsure photo, as on the page's Unsure list.
    code, out, err = run(capsys, "catalogue", "decide", *cat, "--encounter", encounter, "--junk", "--reviewer", "bob")
    assert code == 0 and "1 photo(s): junk" in out and "left" not in out, err
    code, out, err = run(capsys, "catalogue", "decide", *cat, "--encounter", encounter, "--junk", "--reviewer", "bob")
    assert code == 2 and f"every photo of encounter {encounter!r} is decided already" in err
    assert f"2 {known[C.ID]}" in err and "1 junk" in err
    code, out, err = run(capsys, "catalogue", "decide", *cat, "--encounter", "E-no-such", "--junk", "--reviewer", "bob")
    assert code == 2 and "no encounter 'E-no-such' in the catalogue" in err


def test_a_refused_photo_neither_links_nor_names_an_encounter(catalogue, trained_tiny, tmp_path, capsys):
    """Photos cut short at 09:58 and 10:05 would chain 10:00 and 10:10 into one encounter named after
    09:58 (a 6-minute gap): refused, they take no part; the same holds for init."""
    data, work = trained_tiny
    test = sorted((data / "test").iterdir())
    card = tmp_path / "card"
    camera_copy(test[0], card / "A.JPG", "2024:06:01 10:00:00")
    camera_copy(test[1], card / "C.JPG", "2024:06:01 10:10:00")
    for name, taken, photo in (("B.JPG", "09:58:00", test[2]), ("T.JPG", "10:05:00", test[3])):
        whole = camera_copy(photo, tmp_path / name, f"2024:06:01 {taken}")
        (card / name).write_bytes(whole.read_bytes()[:whole.stat().st_size // 2])
    camera_copy(test[0], card / "copy" / "A2.JPG", "2024:06:01 10:00:00")  # the same bytes as A.JPG
    code, out, err = run(capsys, "catalogue", "add", "--catalogue", catalogue, card, "--encounter-gap", 6)
    assert code == 2 and out.count("cannot decode image") == 2, out
    assert f"refused {card / 'copy' / 'A2.JPG'}: the same photo as {card / 'A.JPG'}, earlier in this batch" in out
    with db(catalogue) as con:
        encounter = dict(con.execute("SELECT original_name, encounter FROM photos WHERE source = 'add'"))
    assert sorted(encounter) == ["A.JPG", "C.JPG"]
    assert encounter["A.JPG"] != encounter["C.JPG"]
    assert encounter["A.JPG"].startswith("E20240601-100000-") and encounter["C.JPG"].startswith("E20240601-101000-")
    # init: a spreadsheet of the same photos.
    sheet = card / "sheet.csv"
    sheet.write_text("image,id\nA.JPG,w_a\nB.JPG,w_a\nT.JPG,w_a\nC.JPG,w_c\n")
    code, out, err = run(capsys, "catalogue", "init", "--catalogue", tmp_path / "cat2", "--from", sheet, "--work", work,
                         "--encounter-gap", 6)
    assert code == 2 and out.count("cannot decode image") == 2, out
    with db(tmp_path / "cat2") as con:
        encounter = dict(con.execute("SELECT original_name, encounter FROM photos"))
    assert sorted(encounter) == ["A.JPG", "C.JPG"] and encounter["A.JPG"] != encounter["C.JPG"]
    assert encounter["A.JPG"].startswith("E20240601-100000-")


def individual_folders(root, data, limit=12):
    """The tiny set's train photos as a lab keeps them: HW-<id>/<photo> per individual, Unknown/ for
    new_whale, with what a shared drive gathers (.DS_Store, a note and a photo at the top, a photo cut
    short, a folder whose name has a space)."""
    train = pd.read_csv(data / "train.csv")
    chosen = train[train[C.ID] != C.NEW_WHALE][C.ID].drop_duplicates().iloc[:limit]
    rows = train[train[C.ID].isin(chosen) | (train[C.ID] == C.NEW_WHALE)]
    for image, whale in zip(rows[C.IMAGE], rows[C.ID]):
        folder = root / ("Unknown" if whale == C.NEW_WHALE else f"HW-{whale}") / "2019"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / image).write_bytes((data / "train" / image).read_bytes())
    (root / ".DS_Store").write_bytes(b"\0")
    (root / "README.txt").write_text("our catalogue")
    first = root / f"HW-{chosen.iloc[0]}" / "2019"
    whole = sorted(first.iterdir())[0].read_bytes()
    (root / "stray.jpg").write_bytes(whole)
    (first / "cut.jpg").write_bytes(whole[:len(whole) // 3])
    (root / "HW 77").mkdir()
    (root / "HW 77" / "x.jpg").write_bytes(whole)
    return rows


def test_init_from_a_folder_per_individual(trained_tiny, tmp_path, capsys):
    from pipeline.catalogue.store import Store

    data, work = trained_tiny
    rows = individual_folders(tmp_path / "lab", data)
    folder = tmp_path / "cat"
    code, out, err = run(capsys, "catalogue", "init", "--catalogue", folder, "--from", tmp_path / "lab", "--work", work)
    assert code == 2, err  # two photos refused; the others are in
    assert f"skipped {tmp_path / 'lab' / 'README.txt'}: .txt is not a photo type" in out
    assert f"skipped {tmp_path / 'lab' / '.DS_Store'}: system file" in out
    assert f"skipped {tmp_path / 'lab' / 'stray.jpg'}: a photo not in an individual's folder" in out
    assert "cut.jpg: cannot decode image" in out
    assert f"refused {tmp_path / 'lab' / 'HW 77' / 'x.jpg'}: the folder's name 'HW 77' contains white space" in out
    # Every HW-<id>/ holds only 2019/: the ids are still the HW folders' names, and a warning says so.
    warning = next(line for line in out.splitlines() if line.startswith("warning: "))
    nested = sorted(f"HW-{w}" for w in rows.loc[rows[C.ID] != C.NEW_WHALE, C.ID].unique())
    assert f"{len(nested)} top folder(s)" in warning and f"{nested[0]!r}" in warning
    assert f"{nested[0]}/2019" in warning and "gets that folder's name as its id" in warning
    store = Store.open(folder)
    assert store.check() == {"integrity": "ok", "files_not_listed": [], "rows_without_file": []}
    statuses = dict(store.db.execute("SELECT status, COUNT(*) FROM photos GROUP BY status").fetchall())
    known = rows[rows[C.ID] != C.NEW_WHALE]
    assert statuses == {"confirmed": len(known), "unidentified": len(rows) - len(known)}
    ids = {r[0] for r in store.db.execute("SELECT id FROM individuals")}
    assert ids == {f"HW-{w}" for w in known[C.ID]}
    folds = store.db.execute("SELECT COUNT(DISTINCT model || fold) FROM embeddings").fetchone()[0]
    assert folds >= 3 and store.db.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0] == folds * len(rows)
    store.close()
    # Matching works on it: a photo of a catalogued individual finds it among the five.
    from pipeline.catalogue.catalogue import Catalogue

    solution = pd.read_csv(data / "solution.csv")
    test = solution[solution[C.ID].isin(known[C.ID])]
    ranked = Catalogue.open(folder).add([data / "test" / n for n in test[C.IMAGE]])
    found = [f"HW-{w}" in [c["id"] for c in a.ranking.candidates] for a, w in zip(ranked, test[C.ID])]
    assert len(found) and sum(found) / len(found) > 0.3, found


def test_init_from_a_spreadsheet_keeps_its_columns(trained_tiny, tmp_path, capsys):
    from pipeline.catalogue.store import Store

    data, work = trained_tiny
    train = pd.read_csv(data / "train.csv").iloc[:20]
    photos = tmp_path / "lab" / "photos"
    photos.mkdir(parents=True)
    lines = ["File name;Whale ID;Date;Time;Lat;Lon;Sighting;Observer;Behaviour"]
    for k, (image, whale) in enumerate(zip(train[C.IMAGE], train[C.ID])):
        (photos / image).write_bytes((data / "train" / image).read_bytes())
        whale = "" if whale == C.NEW_WHALE else whale
        lines.append(f"photos/{image};{whale};2019-07-0{1 + k % 3};09:1{k % 10};-20.5;{57 + k / 100:.2f};S{k // 4};"
                     f"J. Doe;{'breach' if k == 0 else ''}")
    lines.append("photos/missing.jpg;w_1;;;;;;;")
    lines.append(f"photos/{train[C.IMAGE].iloc[0]};w_2;;;;;;;")
    spare = pd.read_csv(data / "train.csv")[C.IMAGE].iloc[20]
    (photos / spare).write_bytes((data / "train" / spare).read_bytes())
    lines.append(f"photos/{spare};w 3;;;;;;;")
    sheet = tmp_path / "lab" / "catalogue.csv"
    sheet.write_text("\n".join(lines) + "\n")
    folder = tmp_path / "cat"
    code, out, err = run(capsys, "catalogue", "init", "--catalogue", folder, "--from", sheet, "--work", work)
    assert code == 2, err
    assert "catalogue.csv, row 22: photo 'photos/missing.jpg' not found" in out
    assert "catalogue.csv, row 23: photo 'photos/" in out and "is listed already at row 2" in out
    assert "catalogue.csv, row 24: id 'w 3' contains white space" in out
    store = Store.open(folder)
    rows = {r["original_name"]: dict(r) for r in store.db.execute("SELECT * FROM photos")}
    assert len(rows) == len(train)
    first = rows[train[C.IMAGE].iloc[0]]
    assert first["date"] == "2019-07-01T09:10" and first["location"] == "-20.5,57.0"
    assert first["encounter"] == "S0" and first["photographer"] == "J. Doe"
    assert json.loads(first["notes"]) == {"Behaviour": "breach"}
    unknown = train[train[C.ID] == C.NEW_WHALE][C.IMAGE]
    assert all(rows[n]["status"] == "unidentified" for n in unknown)
    assert store.check()["integrity"] == "ok"


def test_a_spreadsheet_without_an_id_column_is_refused_naming_it_and_nothing_is_made(trained_tiny, tmp_path, capsys):
    data, work = trained_tiny
    sheet = tmp_path / "sheet.csv"
    sheet.write_text("photo,when\na.jpg,2019-01-01\n")
    code, out, err = run(capsys, "catalogue", "init", "--catalogue", tmp_path / "cat", "--from", sheet, "--work", work)
    assert code == 2 and "sheet.csv, row 1: no id column (the columns are photo, when)" in err
    assert "--id-column" in err and not (tmp_path / "cat").exists()


def test_kill_9_during_an_import_leaves_an_empty_consistent_catalogue(trained_tiny, tmp_path):
    import os
    import subprocess
    import sys

    from pipeline.catalogue.store import Store
    from tests.conftest import REPO

    data, work = trained_tiny
    individual_folders(tmp_path / "lab", data, limit=4)
    folder = tmp_path / "cat"
    argv = [sys.executable, "-m", "pipeline", "catalogue", "init", "--catalogue", str(folder), "--from",
            str(tmp_path / "lab"), "--work", str(work)]
    env = {**os.environ, "WHALE_CATALOGUE_CRASH_AT": "import_rows_written", "PYTHONPATH": str(REPO)}
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == -9, done.stderr[-2000:]
    store = Store.open(folder)
    assert store.check() == {"integrity": "ok", "files_not_listed": [], "rows_without_file": []}
    assert store.db.execute("SELECT COUNT(*) FROM photos").fetchone()[0] == 0
    store.close()
    env.pop("WHALE_CATALOGUE_CRASH_AT")
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "refused" in done.stdout  # the import runs again; the same two refusals
    assert Store.open(folder).db.execute("SELECT COUNT(*) FROM photos").fetchone()[0] > 0


def test_evaluate_reports_photo_level_against_encounter_level_ranking(catalogue, capsys):
    """The imported photos of each individual, two by two, become encounters: evaluate replays each pair
    together and reports both rankings over the same replay."""
    with db(catalogue) as con:
        rows = con.execute("SELECT hash, individual_id FROM photos WHERE status = 'confirmed' ORDER BY arrival")
        by_whale = {}
        for digest, whale in rows:
            by_whale.setdefault(whale, []).append(digest)
        pairs = [photos[k:k + 2] for photos in by_whale.values() for k in range(0, len(photos) - 1, 2)]
        con.executemany("UPDATE photos SET encounter = ? WHERE hash = ?",
                        [(f"E{n}", h) for n, pair in enumerate(pairs) for h in pair])
        con.commit()
    code, out, err = run(capsys, "catalogue", "evaluate", "--catalogue", catalogue, "--json")
    assert code == 0, err
    report = json.loads(out)
    encounters = report["encounter_level"]
    # Every pair is an encounter query but the one replayed first, if a pair comes first (nothing to search yet).
    assert len(pairs) - 1 <= encounters["of_several_photos"] <= len(pairs) and len(pairs) > 3
    assert encounters["of_several_individuals"] == 0
    assert encounters["queries"] < report["queries"]  # a pair is one encounter query, two photo queries
    for level in (report, encounters):
        assert 0 <= level["rank1"] <= level["rank5"] <= level["rank10"] <= 1
    assert encounters["rank5"] > 0.3
    code, out, err = run(capsys, "catalogue", "evaluate", "--catalogue", catalogue)
    assert "photo-level      rank-1" in out and "encounter-level  rank-1" in out, out


def test_init_from_a_kaggle_layout_keeps_train_csvs_other_columns(trained_tiny, tmp_path, capsys):
    """The work folder's own Kaggle layout with date, place and a remark added to train.csv: the vectors
    still come from the work folder, and the columns are kept per photo."""
    import shutil

    from pipeline.catalogue.store import Store

    data, work = trained_tiny
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    train = pd.read_csv(copy / "train.csv")
    train.insert(1, "Date", "2019-07-01")
    train["Place"] = "Hervey Bay"
    train["Remark"] = ["scarred" if k == 0 else "" for k in range(len(train))]
    train.to_csv(copy / "train.csv", index=False)
    code, out, err = run(capsys, "catalogue", "init", "--catalogue", tmp_path / "cat", "--from", copy, "--work", work)
    assert code == 0, err
    store = Store.open(tmp_path / "cat")
    first = dict(store.db.execute("SELECT * FROM photos WHERE original_name = ?", (train[C.IMAGE].iloc[0],)).fetchone())
    assert (first["date"], first["location"], json.loads(first["notes"])) == ("2019-07-01", "Hervey Bay",
                                                                              {"Remark": "scarred"})
    assert store.db.execute("SELECT COUNT(*) FROM photos").fetchone()[0] == train[C.IMAGE].nunique()


def test_kill_9_during_an_encounter_decision_changes_none_of_its_photos(catalogue, trained_tiny, tmp_path, capsys):
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    sighting = [exif_photo(tmp_path / f"IMG_{k}.JPG", f"2024:06:01 10:0{k}:00", seed=k) for k in range(3)]
    assert run(capsys, "catalogue", "add", "--catalogue", catalogue, *sighting)[0] == 0
    with db(catalogue) as con:
        encounter = con.execute("SELECT encounter FROM photos WHERE source = 'add'").fetchone()[0]
    env = {**os.environ, "WHALE_CATALOGUE_CRASH_AT": "decision_half_written", "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "pipeline", "catalogue", "decide", "--catalogue", str(catalogue),
                           "--encounter", encounter, "--new", "--reviewer", "ann"], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == -9, done.stderr[-2000:]
    with db(catalogue) as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert [r[0] for r in con.execute("SELECT status FROM photos WHERE encounter = ?", (encounter,))] == \
               ["pending"] * 3
        assert not con.execute("SELECT 1 FROM decisions WHERE kind = 'new'").fetchone()


def test_init_from_another_kaggle_layout_embeds_its_photos_never_the_work_folders_by_name(catalogue, trained_tiny,
                                                                                          tmp_path, capsys):
    """The catalogue's own Kaggle export (its photos under new names) and a layout whose names are the work
    folder's but two photos are swapped: each photo's vectors are its own (as the work folder's for the same
    bytes), never the work folder's rows looked up by name."""
    import shutil

    import numpy as np

    from pipeline.catalogue.store import Store

    data, work = trained_tiny
    code, out, err = run(capsys, "catalogue", "export", "--catalogue", catalogue, "--format", "kaggle", "--out",
                         tmp_path / "export")
    assert code == 0, err
    swapped = tmp_path / "swapped"
    shutil.copytree(data, swapped)
    names = pd.read_csv(data / "train.csv")[C.IMAGE].tolist()
    sizes = {n: Image.open(data / "train" / n).size for n in names}
    a = names[0]
    b = next(n for n in names if sizes[n] != sizes[a])
    shutil.copyfile(data / "train" / a, swapped / "train" / b)
    shutil.copyfile(data / "train" / b, swapped / "train" / a)
    original = Store.open(catalogue)

    def vectors(store):
        rows = store.db.execute("SELECT hash, vector FROM embeddings WHERE fold = 0").fetchall()
        return {h: np.frombuffer(v, dtype=np.float32) for h, v in rows}

    expected = vectors(original)
    for source in (tmp_path / "export", swapped):
        folder = tmp_path / f"from-{source.name}"
        code, out, err = run(capsys, "catalogue", "init", "--catalogue", folder, "--from", source, "--work", work)
        assert code == 0, err
        got = vectors(Store.open(folder))
        assert set(got) <= set(expected) and len(got) > 0
        far = [h for h in got if not np.allclose(got[h], expected[h], atol=2e-3)]
        assert not far, f"{len(far)} of {len(got)} photos' vectors are not their own"


def test_init_names_a_photo_it_cannot_read_and_imports_the_others(trained_tiny, tmp_path, capsys, monkeypatch):
    """A photo that cannot be read (no permission, a failing disk) is refused by name, never a traceback
    that stops the import."""
    from pathlib import Path

    from pipeline.catalogue.store import Store

    data, work = trained_tiny
    rows = individual_folders(tmp_path / "lab", data, limit=3)
    bad = sorted(p for p in (tmp_path / "lab").glob("HW-*/2019/*.jpg") if p.name != "cut.jpg")[-1]
    read_bytes = Path.read_bytes

    def failing(self):
        if self == bad:
            raise PermissionError(13, "Permission denied", str(self))
        return read_bytes(self)

    monkeypatch.setattr(Path, "read_bytes", failing)
    code, out, err = run(capsys, "catalogue", "init", "--catalogue", tmp_path / "cat", "--from", tmp_path / "lab",
                         "--work", work)
    assert code == 2, err
    assert f"refused {bad}: cannot read it: Permission denied" in out
    store = Store.open(tmp_path / "cat")
    names = {r[0] for r in store.db.execute("SELECT original_name FROM photos")}
    assert bad.name not in names and len(names) >= len(rows) - 1
    assert store.check() == {"integrity": "ok", "files_not_listed": [], "rows_without_file": []}


def test_a_photo_added_meanwhile_by_another_is_refused_by_name_and_the_batch_goes_on(catalogue, trained_tiny,
                                                                                      monkeypatch):
    """Two adds of one photo at once (the page and the command line): the one that commits second refuses
    it, naming the stored photo, instead of failing on the database's key and stopping its batch."""
    from pipeline.catalogue.catalogue import Catalogue

    data, work = trained_tiny
    names = pd.read_csv(data / "sample_submission.csv")[C.IMAGE].iloc[:2]
    photos = [data / "test" / n for n in names]
    cat, other = Catalogue.open(catalogue), Catalogue.open(catalogue)
    rank, raced = cat.matcher.rank, []

    def racing(*args, **kwargs):  # between this add's check and its write, the other stores the photo
        if not raced:
            raced.append(other.add([photos[0]])[0])
        return rank(*args, **kwargs)

    monkeypatch.setattr(cat.matcher, "rank", racing)
    first, second = cat.add(photos)
    assert raced[0].ranking is not None
    assert first.refused and first.refused.startswith(f"already in the catalogue as {names.iloc[0]}")
    assert second.ranking is not None and second.refused is None
    count = cat.store.db.execute("SELECT COUNT(*) FROM photos WHERE source = 'add'").fetchone()[0]
    assert count == 2 and cat.store.check()["files_not_listed"] == []
