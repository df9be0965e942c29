"""The catalogue's operations, the one library behind `whale catalogue ...` and the review page:
init (what the lab has, bound to a work folder's bundle: sources.py, importer.py), add (files and
folders: intake.py, exif.py, encounters.py), queue (by photo or by encounter), decide (a photo, or an
encounter's photos together), merge, split, undo, rematch, rebind. Each change is one transaction of
the store (store.py); a confirmed photo joins the matcher's galleries as soon as its decision commits
(matching.py)."""
from __future__ import annotations

import json
import logging
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.catalogue import exif
from pipeline.catalogue.importer import import_source
from pipeline.catalogue.intake import gather
from pipeline.catalogue.matching import CatalogueMatcher, Ranking, ranking_json
from pipeline.catalogue.store import (Store, content_hash, crash_point, descriptor_blobs, foreign_entries, now,
                                      vector_blob)
from pipeline.errors import PipelineError
from pipeline.io.paths import embeddings_root

log = logging.getLogger(__name__)
DECISIONS = ("match", "new", "unsure", "junk")
FINAL = ("confirmed", "junk")  # a photo in these states has been decided
DEFAULT_SPECIES = {"genus": "Megaptera", "species": "novaeangliae"}


@dataclass
class Added:
    name: str
    hash: str | None
    ranking: Ranking | None = None
    refused: str | None = None  # why the photo was not added: it does not decode, it is stored already
    skipped: str | None = None  # why the file was not tried: not a photo type, a system file
    path: Path | None = None
    encounter: str | None = None


class Catalogue:
    def __init__(self, store: Store):
        self.store = store
        self._matcher: CatalogueMatcher | None = None
        self.passed: list = []  # what init could not use (intake.PassedOver), each with its file or row
        self.zero_shot = None  # init without a work folder: the zero-shot work it made (zero_shot.ZeroShotWork)
        self.warnings: list[str] = []  # what init read in a way that may not be what was meant (sources.py)

    @classmethod
    def open(cls, folder) -> "Catalogue":
        return cls(Store.open(folder))

    @property
    def matcher(self) -> CatalogueMatcher:
        if self._matcher is None:
            self._matcher = CatalogueMatcher.open(self.store)
        return self._matcher

    @property
    def folder(self) -> Path:
        return self.store.folder

    def close(self) -> None:
        self.store.close()

    # ------------------------------------------------------------------------------- init

    @classmethod
    def init(cls, folder, data, work=None, models: list[str] | None = None, species: dict | None = None,
             photos=None, image_column: str | None = None, id_column: str | None = None,
             encounter_gap: float | None = None, progress: bool = False, configs=None,
             overrides=()) -> "Catalogue":
        """A catalogue from what the lab has (sources.py: a Kaggle layout, a folder per individual, a
        spreadsheet), bound to the bundle of `work`; without one, to the zero-shot bundle made from the
        source's identified photos in FOLDER/work-zero-shot (zero_shot.py: `configs` and `overrides` are
        its chain's). Photos with an id are confirmed, those without are kept as unidentified; what could
        not be used is in `self.passed` (each with its row or file), and `self.zero_shot` says whether
        the zero-shot bundle was made."""
        from pipeline.bundle import Bundle
        from pipeline.catalogue.sources import read_source
        from pipeline.io.paths import embedded_models

        folder = Path(folder)
        foreign = foreign_entries(folder)
        if foreign:
            raise PipelineError(f"this folder holds files that are not a catalogue's ({', '.join(foreign[:3])}"
                                f"{', ...' if len(foreign) > 3 else ''}): make the catalogue in a new or empty "
                                "folder", folder)
        if (folder / "catalogue.db").is_file():
            existing = Store.open(folder)
            count = existing.db.execute("SELECT COUNT(*) FROM photos").fetchone()[0]
            existing.close()
            if count:
                raise PipelineError(f"a catalogue with {count} photos is already here; use --rebind to bind it "
                                    "to another work folder", folder)
        if work is not None and overrides:
            raise PipelineError("config overrides (--set) shape the zero-shot bundle, made when no work folder "
                                "is given; a trained work folder keeps its own config", "catalogue init")
        source = read_source(data, photos, image_column, id_column)  # every error before anything is made
        zero_shot = None
        if work is None:
            from pipeline.catalogue import zero_shot as zs

            if models:
                raise PipelineError("--models names models of a work folder (--work WORK)", "catalogue init")
            zero_shot = zs.build(folder, source, configs, overrides, progress)
            work, models = zero_shot.work, [zs.MODEL]
        models = models or embedded_models(work)
        if not models:
            raise PipelineError("no trained model with embeddings; run train and embed first", embeddings_root(work))
        bundle = Bundle.from_work(work, models)
        store = Store.open(folder, create=True)
        version = bundle.save(folder / "bundle")
        catalogue = cls(store)
        catalogue.zero_shot = zero_shot
        catalogue.warnings = list(source.warnings)
        catalogue.passed = import_source(store, source, work, bundle, {**DEFAULT_SPECIES, **(species or {})},
                                         version, encounter_gap, progress,
                                         zero_shot.names if zero_shot else None)
        return catalogue

    def rebind(self, work, models: list[str] | None = None) -> str:
        """Binds the catalogue to another work folder's bundle: every photo is embedded anew by its fold
        networks (and its local descriptors recomputed), and pending photos are ranked again."""
        from pipeline.bundle import Bundle
        from pipeline.io.paths import embedded_models
        from pipeline.identify import Identifier

        models = models or embedded_models(work)
        bundle = Bundle.from_work(work, models)
        staging = self.folder / "bundle.new"
        version = bundle.save(staging)
        identifier = Identifier(bundle=Bundle.load(staging))
        rows = self.store.db.execute("SELECT hash FROM photos ORDER BY arrival").fetchall()
        hashes = [r[0] for r in rows]
        embeddings, local = {}, {}
        for start in range(0, len(hashes), 64):
            part = hashes[start:start + 64]
            photos = [identifier.load_photo(self.store.photo_path(h)) for h in part]
            for key, array in identifier.embed(photos).items():
                embeddings.setdefault(key, []).append(array)
            for key, arrays in identifier.local_descriptors(photos).items():
                local.setdefault(key, []).extend(arrays)
        with self.store.writing() as db:
            db.execute("DELETE FROM embeddings")
            db.execute("DELETE FROM descriptors")
            for (model, fold), parts in embeddings.items():
                array = np.concatenate(parts)
                db.executemany("INSERT INTO embeddings VALUES (?, ?, ?, ?)",
                               [(h, model, fold, vector_blob(v)) for h, v in zip(hashes, array)])
            for keypoints, arrays in local.items():
                db.executemany("INSERT INTO descriptors VALUES (?, ?, ?, ?)",
                               [(h, keypoints, *descriptor_blobs(a)) for h, a in zip(hashes, arrays)])
            self.store.set_setting(db, "bundle_version", version)
            db.execute("INSERT INTO decisions (kind, reviewer, at, bundle_version, details) VALUES "
                       "('rebind', 'rebind', ?, ?, ?)", (now(), version, json.dumps({"work": str(work)})))
            # The bundle folder is swapped inside the transaction's lock: a crash before COMMIT leaves the
            # old bundle with the old embeddings; after it, the new with the new.
            old = self.folder / "bundle.old"
            shutil.rmtree(old, ignore_errors=True)
            (self.folder / "bundle").rename(old)
            staging.rename(self.folder / "bundle")
        shutil.rmtree(self.folder / "bundle.old", ignore_errors=True)
        self._matcher = None
        self.rematch(include_unsure=True)
        return version

    # ------------------------------------------------------------------------------- add

    def add(self, paths, date=None, location=None, encounter=None, photographer=None,
            encounter_gap: float | None = None, progress: bool = False) -> list[Added]:
        """Adds files and folders (walked recursively, intake.py): every photo that decodes as preprocess
        decodes it and is not stored already is stored once under its content hash, embedded by every fold
        model, ranked and queued; every other file comes back too, skipped (not a photo type) or refused
        (does not decode, already in the catalogue), each with its reason. One bad file never stops the
        others. The date, position and camera the photo's EXIF holds fill what is not given (exif.py);
        photos of one camera within the gap form an encounter unless `encounter` is given (encounters.py)."""
        from pipeline.catalogue.encounters import DEFAULT_GAP_MINUTES, Sighted, plan
        from pipeline.progress import Progress

        photos, passed = gather(paths)
        gap = self.store.setting("encounter_gap_minutes", DEFAULT_GAP_MINUTES) if encounter_gap is None \
            else float(encounter_gap)
        # A photo that will be refused (unreadable, not decoding, stored already, twice in this batch) is
        # refused before the encounters are planned: it never links two sightings nor names an encounter.
        refused = self._refusals(photos, progress)
        usable = [i for i in range(len(photos)) if i not in refused]
        metas = {i: exif.read(photos[i]) for i in usable}
        planned = dict(zip(usable, plan([Sighted(metas[i].camera, metas[i].taken, encounter) for i in usable], gap,
                                        self._stored_encounter)))
        out = []
        bar = Progress(len(photos), "adding photos", unit="photo") if progress and photos else None
        for i, path in enumerate(photos):
            if i in refused:
                out.append(refused[i])
            else:
                chosen, by_gap = planned[i]
                try:
                    out.append(self._add_one(path, metas[i], date, location, chosen, by_gap, photographer))
                except OSError as e:  # unreadable (a card pulled out, no permission): this file only
                    out.append(Added(path.name, None, refused=f"cannot read it: {e.strerror or e}", path=path))
            if bar:
                bar.update()
        if bar:
            bar.close()
        out += [Added(p.path.name, None, refused=p.reason if p.refused else None,
                      skipped=None if p.refused else p.reason, path=p.path) for p in passed]
        return out

    def _refusals(self, photos: list[Path], progress: bool) -> dict[int, Added]:
        """The photos of a batch that add would refuse, by index, each with its reason: read, hashed and
        decoded once here (the photos themselves are not kept: a card's worth would not fit in memory)."""
        from pipeline.progress import Progress

        refused: dict[int, Added] = {}
        first: dict[str, Path] = {}
        bar = Progress(len(photos), "checking photos", unit="photo") if progress and photos else None
        for i, path in enumerate(photos):
            if bar:
                bar.update()
            try:
                digest = content_hash(path.read_bytes())
            except OSError as e:
                refused[i] = Added(path.name, None, refused=f"cannot read it: {e.strerror or e}", path=path)
                continue
            stored = self._stored_already(self.store.db, path, digest)
            if stored is None and digest in first:
                stored = Added(path.name, digest, refused=f"the same photo as {first[digest]}, earlier in this batch",
                               path=path)
            if stored is not None:
                refused[i] = stored
                continue
            first[digest] = path
            try:
                self.matcher.identifier.load_photo(path)
            except PipelineError as e:
                refused[i] = Added(path.name, digest, refused=e.message, path=path)
        if bar:
            bar.close()
        return refused

    def _stored_encounter(self, camera: str, start, end) -> str | None:
        """The encounter of a stored photo that this camera took between start and end, if any."""
        row = self.store.db.execute(
            "SELECT encounter FROM photos WHERE camera = ? AND encounter IS NOT NULL AND "
            "json_extract(origin, '$.camera_date') BETWEEN ? AND ? ORDER BY json_extract(origin, '$.camera_date') "
            "LIMIT 1", (camera, start.isoformat(timespec="seconds"), end.isoformat(timespec="seconds"))).fetchone()
        return row[0] if row else None

    def _add_one(self, path: Path, meta, date, location, encounter, by_gap: bool, photographer) -> Added:
        matcher = self.matcher
        data = path.read_bytes()
        digest = content_hash(data)
        stored = self._stored_already(self.store.db, path, digest)
        if stored is not None:
            return stored
        try:
            photo = matcher.identifier.load_photo(path)  # the same decoding and errors as preprocess
        except PipelineError as e:
            return Added(path.name, digest, refused=e.message, path=path)
        embeddings, local = matcher.embed([photo])
        ranking = matcher.rank(embeddings, local, [digest])[0]
        date, location, origin = exif.fill(date, location, meta)
        if by_gap:
            origin["encounter"] = "time gap"
        with self.store.writing() as db:
            stored = self._stored_already(db, path, digest)  # added meanwhile (the page, another add)
            if stored is not None:
                return stored
            relative = self.store.write_file(data, digest, path.suffix)
            db.execute("INSERT INTO photos (hash, file, original_name, date, location, encounter, photographer, "
                       "added_at, source, arrival, status, camera, origin) VALUES "
                       "(?, ?, ?, ?, ?, ?, ?, ?, 'add', ?, 'pending', ?, ?)",
                       (digest, relative, path.name, date, location, encounter, photographer, now(),
                        self.store.next_arrival(db), meta.camera, json.dumps(origin) if origin else None))
            db.execute("INSERT INTO photo_names VALUES (?, ?)", (path.name, digest))
            for (model, fold), array in embeddings.items():
                db.execute("INSERT INTO embeddings VALUES (?, ?, ?, ?)", (digest, model, fold, vector_blob(array[0])))
            for keypoints, arrays in local.items():
                db.execute("INSERT INTO descriptors VALUES (?, ?, ?, ?)", (digest, keypoints, *descriptor_blobs(arrays[0])))
            crash_point("rows_written")
            self._write_ranking(db, digest, ranking)
        crash_point("committed")
        return Added(path.name, digest, ranking, path=path, encounter=encounter)

    @staticmethod
    def _stored_already(db, path: Path, digest: str) -> Added | None:
        """The refusal of a photo whose bytes the catalogue holds already, naming what it holds."""
        existing = db.execute("SELECT original_name, added_at, status, individual_id FROM photos WHERE hash = ?",
                              (digest,)).fetchone()
        if existing is None:
            return None
        what = existing["individual_id"] or existing["status"]
        return Added(path.name, digest, refused=f"already in the catalogue as {existing['original_name']} "
                                                f"({what}, added {existing['added_at']})", path=path)

    def _write_ranking(self, db, digest: str, ranking: Ranking) -> None:
        db.execute("INSERT OR REPLACE INTO rankings VALUES (?, ?, ?, ?, ?, ?, ?)",
                   (digest, ranking_json(ranking), ranking.p_new, ranking.suggested, self.matcher.version,
                    self.matcher.identifier.threshold, now()))

    # ------------------------------------------------------------------------------- queue

    def queue(self, include_unsure: bool = False, by_encounter: bool = False) -> list[dict]:
        """Pending photos (and unsure ones when asked), in arrival order, with their ranked candidates. By
        encounter: the photos of one encounter (and status) are one item, ranked together (encounters.py),
        in the order of their first photo; every item lists its photos."""
        from pipeline.catalogue.encounters import combine

        states = ("pending", "unsure") if include_unsure else ("pending",)
        rows = self.store.db.execute(
            f"SELECT p.*, r.candidates, r.p_new, r.suggested, r.bundle_version, r.threshold FROM photos p LEFT JOIN "
            f"rankings r ON r.hash = p.hash WHERE p.status IN ({','.join('?' * len(states))}) ORDER BY p.arrival",
            states).fetchall()
        items = []
        for r in rows:
            ranked = json.loads(r["candidates"]) if r["candidates"] else {"candidates": []}
            item = {"kind": "photo", "hash": r["hash"], "name": r["original_name"], "status": r["status"],
                    **self._fields(r), "p_new": r["p_new"], "candidates": ranked["candidates"],
                    "suggested": r["suggested"], "threshold": r["threshold"], "bundle_version": r["bundle_version"]}
            item["photos"] = [dict(item)]
            items.append(item)
        if by_encounter:
            groups: dict[tuple, list[dict]] = {}
            for item in items:
                groups.setdefault((item["encounter"], item["status"]) if item["encounter"] else (item["hash"],),
                                  []).append(item)
            items = []
            for members in groups.values():
                if len(members) == 1:
                    items.append(members[0])
                    continue
                first = members[0]
                items.append({**first, "kind": "encounter", "name": f"{first['encounter']} ({len(members)} photos)",
                              **combine(members), "photos": [m["photos"][0] for m in members]})
        for item in items:
            item["suggested_new_id"] = self.store.fresh_id() if item["suggested"] == "new" else None
        return items

    @staticmethod
    def _fields(row) -> dict:
        """What is known of a photo, for the queue and the page: its fields, the camera, the spreadsheet's
        notes and which values came from the camera (origin)."""
        keys = row.keys()
        return {"date": row["date"], "location": row["location"], "encounter": row["encounter"],
                "photographer": row["photographer"], "camera": row["camera"] if "camera" in keys else None,
                "notes": json.loads(row["notes"]) if "notes" in keys and row["notes"] else {},
                "origin": json.loads(row["origin"]) if "origin" in keys and row["origin"] else {}}

    def rematch(self, include_unsure: bool = False) -> int:
        """Ranks pending (and unsure) photos again against the galleries as they are now."""
        matcher = self.matcher
        states = ("pending", "unsure") if include_unsure else ("pending",)
        hashes = [r[0] for r in self.store.db.execute(
            f"SELECT hash FROM photos WHERE status IN ({','.join('?' * len(states))}) ORDER BY arrival", states)]
        if not hashes:
            return 0
        embeddings, local = matcher.stored_query(hashes)
        rankings = matcher.rank(embeddings, local, hashes)
        with self.store.writing() as db:
            for digest, ranking in zip(hashes, rankings):
                self._write_ranking(db, digest, ranking)
        return len(hashes)

    # ------------------------------------------------------------------------------- decisions

    def _last_decision(self, db, digest: str):
        return db.execute("SELECT * FROM decisions WHERE photo = ? AND undone_by IS NULL AND kind IN "
                          "('match', 'new', 'unsure', 'junk') ORDER BY id DESC LIMIT 1", (digest,)).fetchone()

    def decide(self, photo: str, kind: str, reviewer: str, individual: str | None = None) -> dict:
        """Records one decision on one photo: match (an existing individual), new (a fresh id, or the one
        given if no individual or alias has it), unsure, junk. A photo already decided is refused with
        who decided it; a confirmed photo joins every gallery at once."""
        result = self.decide_photos([photo], kind, reviewer, individual)
        return {"decision": result["decisions"][0], "photo": result["photos"][0], "name": result["names"][0],
                "kind": kind, "individual": result["individual"], "reviewer": result["reviewer"]}

    def decide_encounter(self, encounter: str, kind: str, reviewer: str, individual: str | None = None) -> dict:
        """One decision for the photos of an encounter that the queue and the page show as one item: its
        pending photos. A photo decided unsure was set aside by a reviewer, and the queue and the page
        keep it apart (an item of the Unsure list): deciding the encounter's other photos must not decide
        it unseen. Once none of its photos is pending, the encounter's unsure photos are the item, as the
        page's Unsure list shows them. `unsure_left` counts the unsure photos left as they are."""
        rows = self.store.db.execute("SELECT hash, status, individual_id FROM photos WHERE encounter = ? "
                                     "ORDER BY arrival", (encounter,)).fetchall()
        if not rows:
            raise PipelineError(f"no encounter {encounter!r} in the catalogue (`whale catalogue queue --encounters` "
                                "lists those waiting)", self.folder)
        pending = [r["hash"] for r in rows if r["status"] == "pending"]
        unsure = [r["hash"] for r in rows if r["status"] == "unsure"]
        if not pending and not unsure:
            done = pd.Series([r["individual_id"] or r["status"] for r in rows]).value_counts()
            raise PipelineError(f"every photo of encounter {encounter!r} is decided already ("
                                + ", ".join(f"{n} {what}" for what, n in done.items())
                                + "); nothing was changed", self.folder)
        result = self.decide_photos(pending or unsure, kind, reviewer, individual)
        return {**result, "encounter": encounter, "unsure_left": len(unsure) if pending else 0}

    def decide_photos(self, photos: list[str], kind: str, reviewer: str, individual: str | None = None) -> dict:
        """One decision applied to each of the photos (an encounter's), in one transaction: each photo
        gets its own decision row, the rows of a group share details.group, and undo takes them back
        together. If any photo is decided already, nothing is changed."""
        if kind not in DECISIONS:
            raise PipelineError(f"unknown decision {kind!r}; use {', '.join(DECISIONS)}", "decide")
        reviewer = (reviewer or "").strip()
        if not reviewer:
            raise PipelineError("every decision names its reviewer (--reviewer NAME)", "decide")
        with self.store.writing() as db:
            rows = list({r["hash"]: r for r in (self.store.find_photo(p) for p in photos)}.values())
            if not rows:
                raise PipelineError("a decision names at least one photo", "decide")
            for row in rows:
                if row["status"] in FINAL:
                    last = self._last_decision(db, row["hash"])
                    who = f"{last['kind']} {last['individual_id'] or ''} by {last['reviewer']} at {last['at']}".replace("  ", " ") \
                        if last else f"{row['status']} {row['individual_id'] or ''} at import"
                    raise PipelineError(f"photo {row['original_name']} ({row['hash'][:12]}) was already decided: {who}; "
                                        "nothing was changed", self.folder)
            target = None
            if kind == "match":
                if not individual:
                    raise PipelineError("--match needs the individual's id", "decide")
                target = self.store.resolve_individual(individual)
            elif kind == "new":
                if individual:
                    if self.store.id_taken(individual):
                        raise PipelineError(f"the id {individual!r} is already an individual or an alias in the "
                                            "catalogue; choose another or match to it", self.folder)
                    target = individual
                else:
                    target = self.store.fresh_id()
                db.execute("INSERT INTO individuals (id, created_at, created_by) VALUES (?, ?, ?)", (target, now(), reviewer))
            status = {"match": "confirmed", "new": "confirmed", "unsure": "unsure", "junk": "junk"}[kind]
            group = f"g{secrets.token_hex(6)}" if len(rows) > 1 else None
            ids = []
            for row in rows:
                digest = row["hash"]
                db.execute("UPDATE photos SET status = ?, individual_id = ? WHERE hash = ?", (status, target, digest))
                crash_point("decision_half_written")
                ranked = db.execute("SELECT * FROM rankings WHERE hash = ?", (digest,)).fetchone()
                details = {"previous_status": row["status"], **({"group": group, "photos": len(rows)} if group else {})}
                cursor = db.execute(
                    "INSERT INTO decisions (kind, photo, individual_id, reviewer, at, candidates, p_new, bundle_version, "
                    "threshold, details) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (kind, digest, target, reviewer, now(), ranked["candidates"] if ranked else None,
                     ranked["p_new"] if ranked else None, ranked["bundle_version"] if ranked else self.matcher.version,
                     ranked["threshold"] if ranked else None, json.dumps(details)))
                ids.append(cursor.lastrowid)
        if status == "confirmed" and self._matcher is not None:
            self._matcher.sync()  # appends these photos (and whatever others decided meanwhile)
        return {"decisions": ids, "photos": [r["hash"] for r in rows], "names": [r["original_name"] for r in rows],
                "kind": kind, "individual": target, "reviewer": reviewer, "group": group}

    def merge(self, keep: str, gone: str, reviewer: str) -> dict:
        """Individual `gone` becomes an alias of `keep`; its photos move to `keep`."""
        if not (reviewer or "").strip():
            raise PipelineError("every decision names its reviewer (--reviewer NAME)", "merge")
        with self.store.writing() as db:
            keep_id, gone_id = self.store.resolve_individual(keep), self.store.resolve_individual(gone)
            if keep_id == gone_id:
                raise PipelineError(f"{keep!r} and {gone!r} are one individual already ({keep_id})", self.folder)
            moved = [r[0] for r in db.execute("SELECT hash FROM photos WHERE individual_id = ?", (gone_id,))]
            db.execute("UPDATE photos SET individual_id = ? WHERE individual_id = ?", (keep_id, gone_id))
            db.execute("UPDATE individuals SET merged_into = ? WHERE id = ?", (keep_id, gone_id))
            db.execute("INSERT OR REPLACE INTO aliases VALUES (?, ?)", (gone_id, keep_id))
            cursor = db.execute("INSERT INTO decisions (kind, individual_id, reviewer, at, details) VALUES "
                                "('merge', ?, ?, ?, ?)", (keep_id, reviewer, now(),
                                                          json.dumps({"gone": gone_id, "photos": moved})))
        if self._matcher is not None:
            self._matcher.sync()
        return {"decision": cursor.lastrowid, "kind": "merge", "individual": keep_id, "gone": gone_id,
                "photos": len(moved)}

    def split(self, individual: str, photos: list[str], reviewer: str, new_id: str | None = None) -> dict:
        """The chosen photos of an individual become a new individual (a fresh id, or `new_id`)."""
        if not (reviewer or "").strip():
            raise PipelineError("every decision names its reviewer (--reviewer NAME)", "split")
        with self.store.writing() as db:
            source = self.store.resolve_individual(individual)
            hashes = []
            for key in photos:
                row = self.store.find_photo(key)
                if row["individual_id"] != source:
                    raise PipelineError(f"photo {row['original_name']} belongs to {row['individual_id'] or row['status']}, "
                                        f"not {source}", self.folder)
                hashes.append(row["hash"])
            if not hashes:
                raise PipelineError("split needs at least one photo of the individual", "split")
            if new_id and self.store.id_taken(new_id):
                raise PipelineError(f"the id {new_id!r} is already an individual or an alias", self.folder)
            target = new_id or self.store.fresh_id()
            db.execute("INSERT INTO individuals (id, created_at, created_by) VALUES (?, ?, ?)", (target, now(), reviewer))
            db.executemany("UPDATE photos SET individual_id = ? WHERE hash = ?", [(target, h) for h in hashes])
            cursor = db.execute("INSERT INTO decisions (kind, individual_id, reviewer, at, details) VALUES "
                                "('split', ?, ?, ?, ?)", (target, reviewer, now(),
                                                          json.dumps({"from": source, "photos": hashes})))
        if self._matcher is not None:
            self._matcher.sync()
        return {"decision": cursor.lastrowid, "kind": "split", "individual": target, "from": source,
                "photos": len(hashes)}

    def undo(self, reviewer: str) -> dict:
        """Reverses that reviewer's last decision still in force, if nothing since depends on it; the
        decisions of one group (an encounter decided at once) are reversed together."""
        with self.store.writing() as db:
            last = db.execute("SELECT * FROM decisions WHERE reviewer = ? AND undone_by IS NULL AND kind IN "
                              "('match', 'new', 'unsure', 'junk', 'merge', 'split') ORDER BY id DESC LIMIT 1",
                              (reviewer,)).fetchone()
            if last is None:
                raise PipelineError(f"{reviewer!r} has no decision to undo", self.folder)
            group = json.loads(last["details"] or "{}").get("group")
            together = db.execute("SELECT * FROM decisions WHERE json_extract(details, '$.group') = ? AND undone_by "
                                  "IS NULL ORDER BY id DESC", (group,)).fetchall() if group else [last]
            for decision in together:
                undo_id = self._undo_one(db, decision, reviewer)
        if self._matcher is not None:
            self._matcher.sync()  # an undo reloads the galleries
        return {"decision": undo_id, "kind": "undo", "undid": last["kind"], "of": last["id"], "photo": last["photo"],
                "individual": last["individual_id"], "photos": [d["photo"] for d in together][::-1]}

    def _undo_one(self, db, last, reviewer: str) -> int:
        details = json.loads(last["details"] or "{}")
        kind = last["kind"]
        if kind in DECISIONS:
            photo = db.execute("SELECT * FROM photos WHERE hash = ?", (last["photo"],)).fetchone()
            expected = {"match": "confirmed", "new": "confirmed", "unsure": "unsure", "junk": "junk"}[kind]
            if photo["status"] != expected or (expected == "confirmed" and photo["individual_id"] != last["individual_id"]):
                raise PipelineError(f"photo {photo['original_name']} changed since (now {photo['individual_id'] or photo['status']}); "
                                    "undo the later change first", self.folder)
            db.execute("UPDATE photos SET status = ?, individual_id = NULL WHERE hash = ?",
                       (details.get("previous_status", "pending"), last["photo"]))
            if kind == "new" and not db.execute("SELECT 1 FROM photos WHERE individual_id = ?",
                                                (last["individual_id"],)).fetchone():
                db.execute("DELETE FROM aliases WHERE individual_id = ?", (last["individual_id"],))
                db.execute("DELETE FROM individuals WHERE id = ? AND merged_into IS NULL", (last["individual_id"],))
        elif kind == "merge":
            gone = details["gone"]
            still = {r[0] for r in db.execute("SELECT hash FROM photos WHERE individual_id = ?", (last["individual_id"],))}
            if not set(details["photos"]) <= still:
                raise PipelineError("photos of the merge have moved since; undo the later change first", self.folder)
            db.executemany("UPDATE photos SET individual_id = ? WHERE hash = ?", [(gone, h) for h in details["photos"]])
            db.execute("UPDATE individuals SET merged_into = NULL WHERE id = ?", (gone,))
            db.execute("DELETE FROM aliases WHERE alias = ?", (gone,))
        else:  # split
            rows = {r[0] for r in db.execute("SELECT hash FROM photos WHERE individual_id = ?", (last["individual_id"],))}
            if rows != set(details["photos"]):
                raise PipelineError(f"{last['individual_id']} changed since the split; undo the later change first",
                                    self.folder)
            db.executemany("UPDATE photos SET individual_id = ? WHERE hash = ?",
                           [(details["from"], h) for h in details["photos"]])
            db.execute("DELETE FROM individuals WHERE id = ?", (last["individual_id"],))
        cursor = db.execute("INSERT INTO decisions (kind, photo, individual_id, reviewer, at, details) VALUES "
                            "('undo', ?, ?, ?, ?, ?)", (last["photo"], last["individual_id"], reviewer, now(),
                                                        json.dumps({"undoes": last["id"], "kind": kind})))
        db.execute("UPDATE decisions SET undone_by = ? WHERE id = ?", (cursor.lastrowid, last["id"]))
        return cursor.lastrowid

    # ------------------------------------------------------------------------------- reading

    def individuals(self) -> pd.DataFrame:
        return pd.read_sql_query(
            "SELECT i.id, COUNT(p.hash) AS photos, GROUP_CONCAT(DISTINCT a.alias) AS aliases FROM individuals i "
            "LEFT JOIN photos p ON p.individual_id = i.id LEFT JOIN aliases a ON a.individual_id = i.id "
            "WHERE i.merged_into IS NULL GROUP BY i.id ORDER BY i.id", self.store.db)

    def decisions(self, photo: str | None = None, individual: str | None = None) -> list[dict]:
        sql, params = "SELECT * FROM decisions", []
        if photo:
            sql += " WHERE photo = ?"
            params.append(self.store.find_photo(photo)["hash"])
        elif individual:
            sql += " WHERE individual_id = ?"
            params.append(individual)
        return [dict(r) for r in self.store.db.execute(sql + " ORDER BY id", params)]

    def individual_record(self, key: str) -> dict:
        """One individual for the review page: its current id (an alias leads to it), its aliases, its
        photos (arrival order) each with the decision in force that put it there, and every decision
        about it or its photos (oldest first)."""
        db = self.store.db
        ident = self.store.resolve_individual(key)
        aliases = [r[0] for r in db.execute("SELECT alias FROM aliases WHERE individual_id = ? ORDER BY alias", (ident,))]
        photos = []
        for row in self.store.individual_photos(ident):
            last = self._last_decision(db, row["hash"])
            photos.append({"hash": row["hash"], "name": row["original_name"], "date": row["date"],
                           "location": row["location"], "encounter": row["encounter"],
                           "photographer": row["photographer"], "source": row["source"],
                           "decision": dict(last) if last else None})
        hashes = [p["hash"] for p in photos]
        ids = [ident, *aliases]
        rows = db.execute(
            f"SELECT * FROM decisions WHERE individual_id IN ({','.join('?' * len(ids))}) ORDER BY id", ids).fetchall()
        found = {r["id"]: dict(r) for r in rows}
        for start in range(0, len(hashes), 500):
            part = hashes[start:start + 500]
            for r in db.execute(f"SELECT * FROM decisions WHERE photo IN ({','.join('?' * len(part))})", part):
                found.setdefault(r["id"], dict(r))
        return {"id": ident, "aliases": aliases, "photos": photos, "decisions": [found[i] for i in sorted(found)]}
