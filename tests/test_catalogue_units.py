"""The catalogue's import machinery without a trained model: schema migration, what the camera wrote
(EXIF), walking a survey's folders, reading a lab's existing catalogue, planning encounters."""
import os
import sqlite3
import subprocess
import sys

import pytest

from tests.conftest import REPO


def old_catalogue(folder):
    """A catalogue database as the first version made it (schema version 0), with one photo."""
    from pipeline.catalogue.store import DB_NAME, SCHEMA

    folder.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(folder / DB_NAME)
    con.executescript(SCHEMA)
    con.execute("INSERT INTO photos (hash, file, original_name, date, added_at, source, arrival, status) VALUES "
                "('ab', 'photos/ab/ab.jpg', 'a.jpg', '2024-06-01', 'now', 'add', 0, 'pending')")
    con.commit()
    con.close()
    (folder / "photos" / "ab").mkdir(parents=True)
    (folder / "photos" / "ab" / "ab.jpg").write_bytes(b"x")


def test_an_old_catalogue_is_migrated_when_opened(tmp_path):
    from pipeline.catalogue.store import SCHEMA_VERSION, Store

    old_catalogue(tmp_path / "cat")
    store = Store.open(tmp_path / "cat")
    columns = {r[1] for r in store.db.execute("PRAGMA table_info(photos)")}
    assert {"camera", "notes", "origin"} <= columns
    assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION >= 1
    assert tuple(store.db.execute("SELECT original_name, date FROM photos").fetchone()) == ("a.jpg", "2024-06-01")
    assert store.check() == {"integrity": "ok", "files_not_listed": [], "rows_without_file": []}
    store.close()
    Store.open(tmp_path / "cat").close()  # opening again migrates nothing twice


def test_kill_9_during_a_migration_leaves_the_old_schema_and_the_next_open_migrates(tmp_path):
    from pipeline.catalogue.store import SCHEMA_VERSION, Store

    old_catalogue(tmp_path / "cat")
    env = {**os.environ, "WHALE_CATALOGUE_CRASH_AT": "migration_1", "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", "import sys; from pipeline.catalogue.store import Store; "
                           "Store.open(sys.argv[1])", str(tmp_path / "cat")], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == -9, done.stderr[-2000:]
    con = sqlite3.connect(tmp_path / "cat" / "catalogue.db")
    assert con.execute("PRAGMA user_version").fetchone()[0] == 0
    assert "camera" not in {r[1] for r in con.execute("PRAGMA table_info(photos)")}
    con.close()
    store = Store.open(tmp_path / "cat")
    assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert store.check()["integrity"] == "ok"


def test_opening_deletes_only_its_own_orphans_never_a_users_file(tmp_path):
    """Store.open removes what a dead add left (files named as write_file names them), and nothing else
    that lies under photos/: a lab whose own photos are in FOLDER/photos/ keeps every one."""
    from pipeline.catalogue.store import Store

    folder = tmp_path / "lab"
    theirs = [folder / "photos" / "HW-0042" / "a.jpg", folder / "photos" / "b.jpg", folder / "photos" / "ab" / "c.jpg",
              folder / "photos" / "cd" / ("ab" * 32 + ".jpg")]  # a hash's name in the wrong folder
    ours = [folder / "photos" / "ab" / ("ab" * 32 + ".jpg"), folder / "photos" / "ab" / (".ab" + "0" * 62 + ".0123abcd.tmp")]
    for path in theirs + ours:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    store = Store.open(folder, create=True)
    assert sorted(store.remove_orphans()) == [] and all(p.is_file() for p in theirs)
    assert not any(p.exists() for p in ours)
    assert store.check()["files_not_listed"] == sorted(str(p.relative_to(folder)) for p in theirs)


def test_init_refuses_a_folder_that_is_not_a_catalogues_and_deletes_nothing(tmp_path):
    """`catalogue init --catalogue LAB --from LAB/photos`: refused, naming the folder and what is in it,
    before anything is made; the lab's photos are all still there."""
    from pipeline.catalogue.catalogue import Catalogue
    from pipeline.errors import PipelineError

    lab = tmp_path / "lab"
    photo = lab / "photos" / "HW-0042" / "a.jpg"
    photo.parent.mkdir(parents=True)
    photo.write_bytes(b"x")
    (lab / "notes.txt").write_text("our catalogue")
    with pytest.raises(PipelineError, match="not a catalogue's .*notes.txt.*new or empty folder") as e:
        Catalogue.init(lab, lab / "photos", tmp_path / "work")
    assert str(lab) in str(e.value)
    (lab / "notes.txt").unlink()
    with pytest.raises(PipelineError, match="photos/HW-0042/a.jpg"):
        Catalogue.init(lab, lab / "photos", tmp_path / "work")
    assert photo.read_bytes() == b"x" and sorted(p.name for p in lab.iterdir()) == ["photos"]


def test_a_newer_catalogue_is_refused(tmp_path):
    from pipeline.catalogue.store import SCHEMA_VERSION, Store
    from pipeline.errors import PipelineError

    old_catalogue(tmp_path / "cat")
    con = sqlite3.connect(tmp_path / "cat" / "catalogue.db")
    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    con.commit()
    con.close()
    with pytest.raises(PipelineError, match="catalogue.db: .*newer than this program"):
        Store.open(tmp_path / "cat")


def test_what_the_camera_wrote_is_read_from_the_header(tmp_path):
    from datetime import datetime

    from pipeline.catalogue import exif
    from tests.conftest import exif_photo

    photo = exif_photo(tmp_path / "a.jpg", "2024:06:01 10:32:05", (64.10, -21.95), serial="0123", size=(400, 300))
    meta = exif.read(photo)
    assert meta.taken == datetime(2024, 6, 1, 10, 32, 5) and meta.date == "2024-06-01T10:32:05"
    assert meta.location == "64.100000,-21.950000" and meta.camera == "Canon EOS 7D #0123"
    cut = tmp_path / "cut.jpg"  # a photo cut short by a full card: its header, and so its date, survive
    cut.write_bytes(photo.read_bytes()[:photo.stat().st_size // 2])
    assert exif.read(cut).date == "2024-06-01T10:32:05"
    bare = exif.read(exif_photo(tmp_path / "b.jpg", "0000:00:00 00:00:00", (0.0, 0.0), make=None, model=None,
                                serial=None))
    assert (bare.taken, bare.location, bare.camera) == (None, None, None)  # an unset clock, no fix, no camera
    (tmp_path / "notes.txt").write_text("not a photo")
    assert exif.read(tmp_path / "notes.txt") == exif.CameraMetadata()


def test_a_survey_folder_is_walked_and_what_is_not_a_photo_is_named(tmp_path):
    from pipeline.catalogue.intake import gather
    from tests.conftest import exif_photo

    card = tmp_path / "card1"
    exif_photo(card / "DCIM" / "IMG_0002.JPG")
    exif_photo(card / "DCIM" / "IMG_0001.JPG", seed=1)
    for name in ("IMG_0001.CR2", "IMG_0003.CR2", "IMG_0001.xmp", ".DS_Store", "Thumbs.db", "._IMG_0001.JPG",
                 "readme.txt"):
        (card / "DCIM" / name).write_bytes(b"x")
    (card / ".Trashes").mkdir()
    (card / ".Trashes" / "IMG_9.JPG").write_bytes(b"x")
    single = exif_photo(tmp_path / "loose.png", seed=2)
    photos, passed = gather([card, single, single, tmp_path / "missing.jpg"])
    assert [p.name for p in photos] == ["IMG_0001.JPG", "IMG_0002.JPG", "loose.png"]
    reasons = {p.path.name: (p.reason, p.refused) for p in passed}
    assert reasons["IMG_0001.CR2"] == ("RAW file; the photo beside it, IMG_0001.JPG, is tried", False)
    assert reasons["IMG_0003.CR2"][0].startswith("RAW file: not a photo type")
    assert reasons["IMG_0001.xmp"][0] == "sidecar file (.xmp)"
    assert reasons[".DS_Store"][0] == reasons["Thumbs.db"][0] == reasons["._IMG_0001.JPG"][0] == "system file"
    assert "is not a photo type" in reasons["readme.txt"][0]
    assert reasons[".Trashes"] == ("hidden or system folder", False)
    assert reasons["missing.jpg"] == ("file not found", True)


def test_a_broken_link_in_a_survey_is_listed_with_its_reason(tmp_path):
    """A link to a photo on a drive that is not mounted is refused by name (the photo is lost to this
    add), a broken link to a sidecar skipped as a sidecar; neither vanishes from the list."""
    from pipeline.catalogue.intake import gather
    from tests.conftest import exif_photo

    card = tmp_path / "card"
    exif_photo(card / "IMG_0001.JPG")
    (card / "IMG_0002.JPG").symlink_to(tmp_path / "unmounted" / "IMG_0002.JPG")
    (card / "IMG_0002.xmp").symlink_to(tmp_path / "unmounted" / "IMG_0002.xmp")
    (tmp_path / "given.jpg").symlink_to(tmp_path / "gone.jpg")
    photos, passed = gather([card, tmp_path / "given.jpg"])
    assert [p.name for p in photos] == ["IMG_0001.JPG"]
    reasons = {p.path.name: (p.reason, p.refused) for p in passed}
    target = tmp_path / "unmounted" / "IMG_0002.JPG"
    assert reasons["IMG_0002.JPG"] == (f"a broken link (to {target}, which cannot be opened)", True)
    assert reasons["IMG_0002.xmp"][0].endswith("sidecar file (.xmp)") and not reasons["IMG_0002.xmp"][1]
    assert reasons["given.jpg"][0].startswith("a broken link") and reasons["given.jpg"][1]


def test_a_top_folder_holding_only_sub_folders_is_named_in_a_warning(tmp_path):
    """PATH/2019/HW-0042/...: the id is the top folder's name ("2019"), and the warning names that folder
    and an example of what it files under it; a folder per individual with photos of its own warns nothing."""
    from pipeline.catalogue.sources import read_source
    from tests.conftest import exif_photo

    lab = tmp_path / "lab"
    exif_photo(lab / "2019" / "HW-0042" / "a.jpg")
    exif_photo(lab / "2019" / "HW-0043" / "b.jpg", seed=1)
    exif_photo(lab / "HW-0050" / "c.jpg", seed=2)
    exif_photo(lab / "unknown" / "2020" / "d.jpg", seed=3)  # photos without an id: any layout below
    source = read_source(lab)
    assert {r.path.name: r.individual for r in source.records} == {"a.jpg": "2019", "b.jpg": "2019",
                                                                    "c.jpg": "HW-0050", "d.jpg": None}
    assert len(source.warnings) == 1
    warning = source.warnings[0]
    assert "1 top folder(s)" in warning and "'2019'" in warning and "2019/HW-0042" in warning
    assert "HW-0050" not in warning and "unknown" not in warning
    assert read_source(lab / "2019").warnings == []


def test_encounters_are_planned_by_camera_and_time_gap():
    from datetime import datetime, timedelta

    from pipeline.catalogue.encounters import Sighted, plan

    def at(minute):
        return datetime(2024, 6, 1, 10, 0) + timedelta(minutes=minute)

    photos = [Sighted("cam A", at(0), None), Sighted("cam A", at(12), None), Sighted("cam A", at(5), None),
              Sighted("cam A", at(40), None), Sighted("cam B", at(1), None), Sighted("cam A", at(2), "E17"),
              Sighted(None, at(3), None), Sighted("cam A", None, None)]
    stored = []
    planned = plan(photos, 10, lambda camera, start, end: stored.append((camera, start, end)) or
                   ("E-old" if camera == "cam A" and start <= at(35) <= end else None))
    names = [p[0] for p in planned]
    assert names[0] == names[1] == names[2] == "E20240601-100000-" + names[0][-4:]  # 0, 5, 12: each within 10
    assert names[3] == "E-old"  # within the gap of a stored photo of that camera (at 35)
    assert names[4] not in (None, names[0]) and names[5] == "E17" and names[6] is None and names[7] is None
    assert [p[1] for p in planned] == [True] * 5 + [False] * 3
    assert ("cam A", at(30), at(50)) in stored  # the run at 40 looked 10 minutes either side


def test_an_encounter_ranks_each_candidate_by_its_best_photo():
    from pipeline.catalogue.encounters import combine

    a = {"hash": "a", "p_new": 0.4, "suggested": "w_1", "threshold": 0.5,
         "candidates": [{"id": "w_1", "score": 0.6, "photos": ["g1"]}, {"id": "w_2", "score": 0.5, "photos": ["g2"]}]}
    b = {"hash": "b", "p_new": 0.2, "suggested": "w_2", "threshold": 0.5,
         "candidates": [{"id": "w_2", "score": 0.9, "photos": ["g3"]}, {"id": "w_3", "score": 0.3, "photos": ["g4"]}]}
    ranked = combine([a, b])
    assert [(c["id"], c["score"], c["query"], c["photos"]) for c in ranked["candidates"]] == [
        ("w_2", 0.9, "b", ["g3"]), ("w_1", 0.6, "a", ["g1"]), ("w_3", 0.3, "b", ["g4"])]
    assert ranked["p_new"] == 0.2 and ranked["suggested"] == "w_2"
    low = combine([{**a, "threshold": 0.95}, {**b, "threshold": 0.95}])
    assert low["suggested"] == "new"  # the best score over the encounter is under the threshold


def test_encounter_level_ranking_takes_each_candidates_best_score():
    import pandas as pd

    from pipeline.catalogue.evaluate import best_over_photos, encounters_together, rank_of

    one = pd.DataFrame({"Image": "p1", "Id": ["w_9", "w_8", "w_1"], "score": [0.9, 0.8, 0.7]})
    two = pd.DataFrame({"Image": "p2", "Id": ["w_1", "w_9"], "score": [0.95, 0.1]})
    together = best_over_photos([one, two], "E1")
    assert list(together["Id"]) == ["w_1", "w_9", "w_8"] and list(together["Image"]) == ["E1"] * 3
    assert (rank_of(one, "w_1"), rank_of(two, "w_1"), rank_of(together, "w_1")) == (3, 1, 1)
    assert rank_of(together, "w_7") is None
    photos = pd.DataFrame({"hash": list("abcde"), "encounter": ["E1", None, "E2", "E1", ""]})
    replay = encounters_together(photos)
    assert list(replay["hash"]) == ["a", "d", "b", "c", "e"] and list(replay["unit"]) == ["E1", "E1", "b", "E2", "e"]


def test_the_real_humpback_layout_reads_as_a_catalogue_source():
    """../shared/data/humpback_small (skipped when absent): every train.csv row a photo, new_whale
    photos without an id, nothing passed over."""
    from tests.conftest import SHARED_DATA

    root = SHARED_DATA / "humpback_small"
    if not (root / "train.csv").is_file():
        pytest.skip(f"{root} not present")
    import pandas as pd

    from pipeline.catalogue.sources import read_source

    source = read_source(root)
    train = pd.read_csv(root / "train.csv")
    assert source.kind == "kaggle" and not source.passed and len(source.records) == len(train)
    assert sum(r.individual is None for r in source.records) == int((train["Id"] == "new_whale").sum())
