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
