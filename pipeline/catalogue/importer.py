"""`whale catalogue init`: what the lab has (sources.py) into a new catalogue, in one transaction.

Each photo's date and position are its own (a spreadsheet's columns) or else its camera's (exif.py);
its encounter is its own or the camera's time gap's (encounters.py). Its vectors come from the work
folder when the source is the Kaggle layout the work folder was trained on, or the photo is in the
zero-shot work folder made from this source (zero_shot.py), and are computed by the bundle's fold
networks otherwise. The same bytes under two names are one photo known by both; a photo
that does not decode, or the same photo given two ids, is passed over and named. A crash before the
commit leaves an empty catalogue (its files are orphans the next open removes): init runs again."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline import columns as C
from pipeline.catalogue import exif
from pipeline.catalogue.encounters import DEFAULT_GAP_MINUTES, Sighted, plan
from pipeline.catalogue.intake import PassedOver
from pipeline.catalogue.sources import Source
from pipeline.catalogue.store import Store, content_hash, crash_point, descriptor_blobs, now, vector_blob
from pipeline.errors import PipelineError
from pipeline.io.paths import cache_dir

log = logging.getLogger(__name__)


def import_source(store: Store, source: Source, work, bundle, species: dict, version: str,
                  encounter_gap: float | None = None, progress: bool = False,
                  work_names: dict[int, str] | None = None) -> list[PassedOver]:
    """One transaction: every usable photo of the source, its fields, what its camera wrote, its
    encounter and its vectors (from the work folder for the Kaggle layout it was trained on, or for the
    records `work_names` maps to its train photos (record index -> name: the zero-shot work folder made
    from this source), else computed by the bundle's networks). Returns what was passed over, each with
    its file or row."""
    passed = list(source.passed)
    gap = DEFAULT_GAP_MINUTES if encounter_gap is None else float(encounter_gap)
    records = source.records
    metas = [exif.read(r.path) for r in records]
    digests, first_of, keep = [], {}, []
    for i, r in enumerate(records):
        try:
            digest = content_hash(r.path.read_bytes())
        except OSError as e:  # unreadable (no permission, a failing disk): this photo only
            digests.append(None)
            passed.append(r.refused(f"cannot read it: {e.strerror or e}"))
            continue
        digests.append(digest)
        if digest in first_of:  # the same bytes twice: one photo, known by both names
            earlier = records[first_of[digest]]
            if earlier.individual != r.individual:
                passed.append(r.refused(f"the same photo as {earlier.where}, which says "
                                        f"{earlier.individual or 'no id'}; kept as that"))
            continue
        first_of[digest] = i
        keep.append(i)
    vectors, local, keep = _vectors(store, source, keep, work, bundle, progress, passed, work_names or {})
    # Planned over the photos imported only: one passed over (unreadable, not decoding, a second copy)
    # never links two sightings nor names an encounter.
    planned = dict(zip(keep, plan([Sighted(metas[i].camera, metas[i].taken, records[i].encounter) for i in keep],
                                  gap)))
    stamp = now()
    with store.writing() as db:
        store.set_setting(db, "species", species)
        store.set_setting(db, "bundle_version", version)
        store.set_setting(db, "encounter_gap_minutes", gap)
        store.set_setting(db, "source", {"data": str(Path(source.root).resolve()), "kind": source.kind,
                                         "work": str(Path(work).resolve())})
        for row, i in enumerate(keep):
            r, digest, meta = records[i], digests[i], metas[i]
            known = r.individual is not None
            if known and not db.execute("SELECT 1 FROM individuals WHERE id = ?", (r.individual,)).fetchone():
                db.execute("INSERT INTO individuals (id, created_at, created_by) VALUES (?, ?, 'import')",
                           (r.individual, stamp))
            date, location, origin = exif.fill(r.date, r.location, meta)
            encounter, by_gap = planned[i]
            if by_gap:
                origin["encounter"] = "time gap"
            try:
                data = r.path.read_bytes()
            except OSError as e:  # it was read a moment ago: roll back, name it, import nothing
                raise PipelineError(f"cannot read it any more ({e.strerror or e}); nothing was imported: run init "
                                    "again", r.path) from None
            relative = store.write_file(data, digest, r.path.suffix)
            db.execute("INSERT INTO photos (hash, file, original_name, date, location, encounter, photographer, "
                       "added_at, source, arrival, status, individual_id, camera, notes, origin) VALUES "
                       "(?, ?, ?, ?, ?, ?, ?, ?, 'import', ?, ?, ?, ?, ?, ?)",
                       (digest, relative, r.name, date, location, encounter, r.photographer, stamp, i,
                        "confirmed" if known else "unidentified", r.individual, meta.camera,
                        json.dumps(r.notes) if r.notes else None, json.dumps(origin) if origin else None))
            for (model, fold), array in vectors.items():
                db.execute("INSERT INTO embeddings VALUES (?, ?, ?, ?)", (digest, model, fold, vector_blob(array[row])))
            for keypoints, arrays in local.items():
                db.execute("INSERT INTO descriptors VALUES (?, ?, ?, ?)",
                           (digest, keypoints, *descriptor_blobs(arrays[row])))
        stored = {digests[i] for i in keep}
        db.executemany("INSERT OR IGNORE INTO photo_names VALUES (?, ?)",
                       [(r.name, d) for r, d in zip(records, digests) if d in stored])
        crash_point("import_rows_written")
        db.execute("INSERT INTO decisions (kind, reviewer, at, bundle_version, details) VALUES "
                   "('import', 'import', ?, ?, ?)",
                   (stamp, version, json.dumps({"data": str(source.root), "kind": source.kind,
                                                "photos": len(keep), "linked": len(records) - len(first_of),
                                                "passed_over": len(passed)})))
    log.info("catalogue %s: %d photos imported from %s (%s), %d linked by content hash, %d passed over, bundle %s",
             store.folder, len(keep), source.root, source.kind, len(records) - len(first_of), len(passed),
             version)
    return passed


def _work_holds(work, records) -> bool:
    """Whether the work folder's cache holds these photos (each record's name in its train split, with
    the same width and height, read from the photo's header): then the work folder's vectors are theirs.
    Any other Kaggle layout (the catalogue's own Kaggle export, a newer train set) is embedded anew."""
    from PIL import Image

    manifest = cache_dir(work) / "manifest.parquet"
    if not manifest.is_file():
        return False
    table = pd.read_parquet(manifest, columns=[C.IMAGE, C.SPLIT, C.WIDTH, C.HEIGHT])
    table = table[table[C.SPLIT] == C.TRAIN].drop_duplicates(C.IMAGE).set_index(C.IMAGE)
    for r in records:
        if r.name not in table.index:
            return False
        try:
            with Image.open(r.path) as img:
                size = img.size[::-1] if img.getexif().get(0x0112) in (5, 6, 7, 8) else img.size
        except Exception:  # noqa: BLE001 - not readable here: let the networks' decoding name it
            return False
        if tuple(size) != (int(table.at[r.name, C.WIDTH]), int(table.at[r.name, C.HEIGHT])):
            return False
    return True


def _vectors(store: Store, source: Source, keep: list[int], work, bundle, progress: bool, passed: list,
             work_names: dict[int, str]):
    """((model, fold) -> vectors, keypoints -> descriptors, the kept records' indexes), one row per kept
    record: read from the work folder for its own Kaggle layout (_work_holds) and for the records
    `work_names` names there, else computed (a photo that does not decode is passed over, named)."""
    records = source.records
    if source.kind == "kaggle" and _work_holds(work, [records[i] for i in keep]):
        work_names = {i: records[i].name for i in keep}
    read = [i for i in keep if i in work_names]
    rows: dict[int, tuple[dict, dict]] = {}  # record index -> (its vector per key, its descriptors per key)
    if read:
        from pipeline.io.paths import embedding_dir
        from pipeline.retrieval.embeddings import load_embeddings
        from pipeline.retrieval.local.extract import DescriptorStore

        names = [work_names[i] for i in read]
        vectors = {(m.name, f): load_embeddings(embedding_dir(work, m.name, f), names, C.TRAIN)
                   for m in bundle.models for f in m.checkpoints}
        local = {k: DescriptorStore.open(work, k).get(names, C.TRAIN) for k in bundle.descriptors}
        for row, i in enumerate(read):
            rows[i] = ({k: v[row] for k, v in vectors.items()}, {k: v[row] for k, v in local.items()})
    rows.update(_computed(store, source, [i for i in keep if i not in work_names], progress, passed))
    usable = [i for i in keep if i in rows]
    if not usable:
        first = passed[-1] if passed else None
        raise PipelineError("no photo of it could be used" + (f"; the last: {first.where}: {first.reason}" if first
                                                              else ""), source.root)
    keys, kinds = rows[usable[0]][0].keys(), rows[usable[0]][1].keys()
    return ({k: np.stack([rows[i][0][k] for i in usable]) for k in keys},
            {k: [rows[i][1][k] for i in usable] for k in kinds}, usable)


def _computed(store: Store, source: Source, indexes: list[int], progress: bool, passed: list) -> dict:
    """Record index -> (its vector per (model, fold), its descriptors per keypoints), computed by the
    catalogue's bundle; a photo that does not decode is passed over, named."""
    if not indexes:
        return {}
    from pipeline.bundle import Bundle
    from pipeline.progress import Progress
    from pipeline.identify import Identifier

    records = source.records
    identifier = Identifier(bundle=Bundle.load(store.folder / "bundle"))
    out = {}
    bar = Progress(len(indexes), "embedding the catalogue", unit="photo") if progress else None
    for start in range(0, len(indexes), 32):
        part, photos = [], []
        for i in indexes[start:start + 32]:
            try:
                photos.append(identifier.load_photo(records[i].path))
                part.append(i)
            except PipelineError as e:
                passed.append(records[i].refused(e.message))
        if photos:
            vectors = identifier.embed(photos)
            local = identifier.local_descriptors(photos)
            for row, i in enumerate(part):
                out[i] = ({k: v[row] for k, v in vectors.items()}, {k: v[row] for k, v in local.items()})
        if bar:
            bar.update(len(indexes[start:start + 32]))
    if bar:
        bar.close()
    return out
