"""The catalogue's storage: one SQLite database (WAL, synchronous FULL) and the photo files, each
stored once under its content hash.

    CATALOGUE/catalogue.db        individuals, aliases, photos, embeddings, descriptors, rankings,
                                  decisions, settings
    CATALOGUE/photos/ab/<sha256>.jpg
    CATALOGUE/bundle/             the identification bundle it is bound to (pipeline/bundle.py)

Consistency under kill -9: a photo's file is written to a temporary name, flushed and renamed into
place before the transaction that lists it commits; a file the database does not list can therefore
only be the remains of an add that died, and `Store.open` deletes it (holding the writers' lock, so no
add in flight is mistaken for one) if it bears a name write_file gives: a file of the user's under
photos/ is never deleted, and init refuses a folder that holds anything a catalogue does not put there. Every change is one transaction; a decision is a row, never an
edit in place (the photos' status and individual are the decisions' projection, updated in the same
transaction)."""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import secrets
import signal
import sqlite3
import time
from pathlib import Path

import numpy as np

from pipeline.errors import PipelineError

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS individuals (
    id TEXT PRIMARY KEY, created_at TEXT NOT NULL, created_by TEXT NOT NULL,
    merged_into TEXT REFERENCES individuals(id));
CREATE TABLE IF NOT EXISTS aliases (alias TEXT PRIMARY KEY, individual_id TEXT NOT NULL REFERENCES individuals(id));
CREATE TABLE IF NOT EXISTS photos (
    hash TEXT PRIMARY KEY, file TEXT NOT NULL UNIQUE, original_name TEXT NOT NULL,
    date TEXT, location TEXT, encounter TEXT, photographer TEXT,
    added_at TEXT NOT NULL, source TEXT NOT NULL, arrival INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'unsure', 'confirmed', 'junk', 'unidentified')),
    individual_id TEXT REFERENCES individuals(id),
    CHECK ((status = 'confirmed') = (individual_id IS NOT NULL)));
CREATE INDEX IF NOT EXISTS photos_by_individual ON photos(individual_id);
CREATE INDEX IF NOT EXISTS photos_by_status ON photos(status);
CREATE TABLE IF NOT EXISTS photo_names (
    name TEXT NOT NULL, hash TEXT NOT NULL REFERENCES photos(hash), PRIMARY KEY (name, hash));
CREATE TABLE IF NOT EXISTS embeddings (
    hash TEXT NOT NULL REFERENCES photos(hash), model TEXT NOT NULL, fold INTEGER NOT NULL, vector BLOB NOT NULL,
    PRIMARY KEY (hash, model, fold));
CREATE TABLE IF NOT EXISTS descriptors (
    hash TEXT NOT NULL REFERENCES photos(hash), keypoints INTEGER NOT NULL, data BLOB NOT NULL,
    points BLOB, PRIMARY KEY (hash, keypoints));
CREATE TABLE IF NOT EXISTS rankings (
    hash TEXT PRIMARY KEY REFERENCES photos(hash), candidates TEXT NOT NULL, p_new REAL NOT NULL,
    suggested TEXT NOT NULL, bundle_version TEXT NOT NULL, threshold REAL, ranked_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, photo TEXT, individual_id TEXT,
    reviewer TEXT NOT NULL, at TEXT NOT NULL, candidates TEXT, p_new REAL, bundle_version TEXT,
    threshold REAL, details TEXT NOT NULL DEFAULT '{}', undone_by INTEGER REFERENCES decisions(id));
CREATE INDEX IF NOT EXISTS decisions_by_reviewer ON decisions(reviewer, id);
"""
# The schema's later versions, each applied once, in order, to a database of any earlier version (its
# version is SQLite's user_version; SCHEMA above is version 0, as the first catalogues were made):
#   1  photos.camera (make, model and serial the camera wrote), photos.notes (a spreadsheet's other
#      columns, JSON), photos.origin (which of date, location, encounter came from the camera or the
#      time gap rather than the user, JSON); encounters and cameras indexed.
MIGRATIONS: dict[int, list[str]] = {
    1: ["ALTER TABLE photos ADD COLUMN camera TEXT",
        "ALTER TABLE photos ADD COLUMN notes TEXT",
        "ALTER TABLE photos ADD COLUMN origin TEXT",
        "CREATE INDEX IF NOT EXISTS photos_by_encounter ON photos(encounter)",
        "CREATE INDEX IF NOT EXISTS photos_by_camera ON photos(camera, date)"],
}
SCHEMA_VERSION = max(MIGRATIONS)
DB_NAME = "catalogue.db"
PHOTOS = "photos"
OWN_FILE = re.compile(r"^([0-9a-f]{64})(\.[a-z0-9]+)?$")  # a stored photo: <sha256>.ext
OWN_TMP = re.compile(r"^\.([0-9a-f]{64})\.[0-9a-f]{8}\.tmp$")  # write_file's temporary name
# What a catalogue folder holds; init refuses a folder holding anything else (a lab's own folder).
OWN_ENTRIES = {DB_NAME, DB_NAME + "-wal", DB_NAME + "-shm", DB_NAME + "-journal", "catalogue.lock", PHOTOS,
               "bundle", "bundle.tmp", "bundle.new", "bundle.old", "bundle.new.tmp",
               "work-zero-shot"}  # zero_shot.WORK: the zero-shot bundle's work folder


def own_file(folder: Path, path: Path) -> bool:
    """Whether `path` has a name Store.write_file gives (PHOTOS/ab/<sha256>.ext, or its temporary
    .<sha256>.<8 hex>.tmp): only such a file is ever deleted as an orphan, never a file of the user's
    that happens to lie under PHOTOS."""
    if path.parent.parent != Path(folder) / PHOTOS:
        return False
    name = OWN_TMP.match(path.name) or OWN_FILE.match(path.name)
    return bool(name) and name.group(1)[:2] == path.parent.name


def foreign_entries(folder: Path) -> list[str]:
    """What a would-be catalogue folder holds that no catalogue puts there (init refuses such a folder:
    it is someone's own, and a catalogue's files would mix with theirs)."""
    folder = Path(folder)
    if not folder.is_dir():
        return [] if not folder.exists() else [folder.name]
    foreign = sorted(p.name for p in folder.iterdir() if p.name not in OWN_ENTRIES)
    if (folder / PHOTOS).is_dir():
        foreign += sorted(str(p.relative_to(folder)) for p in (folder / PHOTOS).rglob("*")
                          if p.is_file() and not own_file(folder, p))
    return foreign


def crash_point(name: str) -> None:
    """Fault injection for the kill -9 tests: WHALE_CATALOGUE_CRASH_AT=<name> kills this process here,
    as a power cut or kill -9 would (no cleanup, no exception handlers)."""
    if os.environ.get("WHALE_CATALOGUE_CRASH_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Store:
    """The database connection and the photo files of one catalogue folder."""

    def __init__(self, folder: Path, db: sqlite3.Connection):
        self.folder, self.db = folder, db

    # ------------------------------------------------------------------------------- opening

    @classmethod
    def open(cls, folder, create: bool = False) -> "Store":
        folder = Path(folder)
        path = folder / DB_NAME
        if not path.is_file() and not create:
            raise PipelineError("no catalogue here; make one with `whale catalogue init`", folder)
        (folder / PHOTOS).mkdir(parents=True, exist_ok=True)
        # isolation_level None: transactions are ours (BEGIN IMMEDIATE ... COMMIT), never implicit.
        db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA foreign_keys=ON")
        db.executescript(SCHEMA)
        store = cls(folder, db)
        store.migrate()
        store.remove_orphans()
        return store

    def migrate(self) -> int:
        """Brings the database to SCHEMA_VERSION, one transaction per version (a crash leaves it at the
        last version that committed); returns the version it found."""
        found = int(self.db.execute("PRAGMA user_version").fetchone()[0])
        if found > SCHEMA_VERSION:
            raise PipelineError(f"this catalogue's database is of schema version {found}, newer than this "
                                f"program's {SCHEMA_VERSION}: update the program", self.folder / DB_NAME)
        for version in range(found + 1, SCHEMA_VERSION + 1):
            with self.writing() as db:
                if int(db.execute("PRAGMA user_version").fetchone()[0]) >= version:
                    continue  # another process migrated it meanwhile
                for statement in MIGRATIONS[version]:
                    db.execute(statement)
                crash_point(f"migration_{version}")
                db.execute(f"PRAGMA user_version = {version}")
            log.info("catalogue %s: database migrated to schema version %d", self.folder, version)
        return found

    def close(self) -> None:
        self.db.close()

    @contextlib.contextmanager
    def writing(self):
        """The writers' lock (across processes) and one transaction: all of it commits, or none."""
        with open(self.folder / "catalogue.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                self.db.execute("BEGIN IMMEDIATE")
                try:
                    yield self.db
                except BaseException:
                    self.db.execute("ROLLBACK")
                    raise
                self.db.execute("COMMIT")
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def remove_orphans(self) -> list[str]:
        """Deletes photo files the database does not list (left by an add that died before its commit)
        and temporary files; returns what it deleted."""
        with open(self.folder / "catalogue.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                listed = {r[0] for r in self.db.execute("SELECT file FROM photos")}
                removed = []
                for path in (self.folder / PHOTOS).rglob("*"):
                    if path.is_file() and str(path.relative_to(self.folder)) not in listed and own_file(self.folder, path):
                        path.unlink()
                        removed.append(str(path))
                return removed
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def check(self) -> dict:
        """integrity_check, and photo files against the photo rows (both ways)."""
        integrity = self.db.execute("PRAGMA integrity_check").fetchone()[0]
        listed = {r[0] for r in self.db.execute("SELECT file FROM photos")}
        present = {str(p.relative_to(self.folder)) for p in (self.folder / PHOTOS).rglob("*") if p.is_file()}
        return {"integrity": integrity, "files_not_listed": sorted(present - listed),
                "rows_without_file": sorted(listed - present)}

    # ------------------------------------------------------------------------------- settings

    def setting(self, key: str, default=None):
        row = self.db.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def set_setting(self, db, key: str, value) -> None:
        db.execute("INSERT OR REPLACE INTO settings VALUES (?, ?)", (key, json.dumps(value)))

    # ------------------------------------------------------------------------------- photo files

    def write_file(self, data: bytes, digest: str, suffix: str) -> str:
        """Writes the photo's bytes under its hash (flushed, then renamed into place) and returns the
        path relative to the catalogue; an existing file of that hash is the same bytes and is kept."""
        relative = f"{PHOTOS}/{digest[:2]}/{digest}{suffix.lower()}"
        path = self.folder / relative
        if path.is_file():
            return relative
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{digest}.{secrets.token_hex(4)}.tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        crash_point("file_written")
        os.replace(tmp, path)
        crash_point("file_renamed")
        return relative

    def photo_path(self, digest: str) -> Path:
        row = self.db.execute("SELECT file FROM photos WHERE hash = ?", (digest,)).fetchone()
        if row is None:
            raise PipelineError(f"no photo {digest[:12]} in the catalogue", self.folder)
        return self.folder / row[0]

    # ------------------------------------------------------------------------------- look-ups

    def find_photo(self, key: str) -> sqlite3.Row:
        """A photo by its hash (or a unique prefix of 8+ characters), or by its original file name."""
        row = self.db.execute("SELECT * FROM photos WHERE hash = ?", (key,)).fetchone()
        if row is None:
            named = self.db.execute("SELECT hash FROM photo_names WHERE name = ?", (Path(key).name,)).fetchall()
            if len(named) > 1:
                raise PipelineError(f"{len(named)} photos are named {Path(key).name!r}: give the hash", self.folder)
            if named:
                row = self.db.execute("SELECT * FROM photos WHERE hash = ?", (named[0][0],)).fetchone()
        if row is None and len(key) >= 8:
            rows = self.db.execute("SELECT * FROM photos WHERE hash LIKE ?", (key + "%",)).fetchall()
            if len(rows) > 1:
                raise PipelineError(f"{len(rows)} photos start with {key!r}: give more of the hash", self.folder)
            row = rows[0] if rows else None
        if row is None:
            raise PipelineError(f"no photo {key!r} in the catalogue (a hash, hash prefix or file name)", self.folder)
        return row

    def resolve_individual(self, key: str) -> str:
        """An individual's current id from its id or any alias (a merged-away id leads to its survivor)."""
        seen = set()
        current = key
        while current not in seen:
            seen.add(current)
            row = self.db.execute("SELECT id, merged_into FROM individuals WHERE id = ?", (current,)).fetchone()
            if row is None:
                alias = self.db.execute("SELECT individual_id FROM aliases WHERE alias = ?", (current,)).fetchone()
                if alias is None:
                    raise PipelineError(f"no individual {key!r} in the catalogue", self.folder)
                current = alias[0]
                continue
            if row["merged_into"] is None:
                return row["id"]
            current = row["merged_into"]
        raise PipelineError(f"individual {key!r}: a cycle of merges", self.folder)

    def id_taken(self, key: str) -> bool:
        return bool(self.db.execute("SELECT 1 FROM individuals WHERE id = ? UNION SELECT 1 FROM aliases WHERE alias = ?",
                                    (key, key)).fetchone())

    def fresh_id(self, prefix: str = "w_") -> str:
        """An id in the Kaggle style (w_ and 7 hex digits) that no individual or alias has."""
        while True:
            candidate = prefix + secrets.token_hex(4)[:7]
            if not self.id_taken(candidate):
                return candidate

    def individual_photos(self, individual: str) -> list[sqlite3.Row]:
        return self.db.execute("SELECT * FROM photos WHERE individual_id = ? ORDER BY arrival",
                               (individual,)).fetchall()

    def next_arrival(self, db) -> int:
        return int(db.execute("SELECT COALESCE(MAX(arrival), -1) + 1 FROM photos").fetchone()[0])

    # ------------------------------------------------------------------------------- vectors

    def embeddings(self, model: str, fold: int, hashes: list[str] | None = None,
                   status: str | None = "confirmed") -> tuple[list[str], list[str | None], np.ndarray]:
        """(hashes, individuals, vectors) of the photos with this fold model's embedding: in arrival order,
        or in the order of `hashes` (those found) when given."""
        sql = ("SELECT p.hash, p.individual_id, e.vector FROM embeddings e JOIN photos p ON p.hash = e.hash "
               "WHERE e.model = ? AND e.fold = ?")
        params: list = [model, fold]
        if status is not None:
            sql += " AND p.status = ?"
            params.append(status)
        if hashes is not None:
            rows = self._rows_with_hash(sql, params, "e.hash", hashes)
            wanted = {h: i for i, h in enumerate(hashes)}
            rows.sort(key=lambda r: wanted[r[0]])
        else:
            rows = self.db.execute(sql + " ORDER BY p.arrival", params).fetchall()
        vectors = np.stack([np.frombuffer(r[2], dtype=np.float32) for r in rows]) if rows else None
        return [r[0] for r in rows], [r[1] for r in rows], vectors

    def _rows_with_hash(self, sql: str, params: list, column: str, hashes) -> list:
        """`sql` restricted to rows whose `column` is one of `hashes`, 500 at a time (SQLite's limit on
        bound parameters)."""
        rows = []
        for start in range(0, len(hashes), 500):
            part = list(hashes[start:start + 500])
            rows += self.db.execute(sql + f" AND {column} IN ({','.join('?' * len(part))})", params + part).fetchall()
        return rows

    def descriptors(self, keypoints: int, hashes: list[str] | None = None) -> dict:
        """hash -> its local features (local.extract.LocalFeatures: descriptors with their keypoints)."""
        from pipeline.retrieval.local.extract import LocalFeatures

        sql, params = "SELECT hash, data, points FROM descriptors WHERE keypoints = ?", [keypoints]
        if hashes is None:
            rows = self.db.execute(sql, params).fetchall()
        else:
            rows = self._rows_with_hash(sql, params, "hash", hashes)
        out = {}
        for digest, data, points in rows:
            descriptors = np.frombuffer(data, dtype=np.uint8).reshape(-1, 128)
            points = np.frombuffer(points, dtype=np.float32).reshape(-1, 4) if points is not None else \
                np.zeros((len(descriptors), 4), np.float32)
            out[digest] = LocalFeatures(descriptors, points)
        return out


def vector_blob(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype=np.float32).tobytes()


def descriptor_blobs(features) -> tuple[bytes, bytes]:
    """(descriptors, keypoints) of local features as stored in the descriptors table."""
    points = getattr(features, "points", None)
    if points is None:
        points = np.zeros((len(features), 4), np.float32)
    return (np.ascontiguousarray(features, dtype=np.uint8).reshape(-1, 128).tobytes(),
            np.ascontiguousarray(points, dtype=np.float32).reshape(-1, 4).tobytes())
