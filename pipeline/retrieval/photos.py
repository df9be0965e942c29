"""Each candidate's gallery photos: the ones that scored it in the search (max aggregation), or the
ones nearest the query (centroid aggregation); what the page shows and what local matching compares.
Apart from the retriever so that a re-scorer can read them without importing the search."""
from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline import columns as C


def candidate_neighbours(idx, gallery_ids, names, table: pd.DataFrame, n: int) -> list[tuple[int, int, str]]:
    """(query row, neighbour column, whale) for each candidate of `table`: its first n gallery photos
    among the query's neighbours (gallery row idx[q, column]), best first: the search that scored it."""
    out = []
    wanted = set(zip(table[C.IMAGE], table[C.ID]))
    for q, name in enumerate(names):
        taken: dict[str, int] = {}
        for j, i in enumerate(idx[q]):
            if i < 0:
                continue
            whale = gallery_ids[i]
            if (name, whale) in wanted and taken.get(whale, 0) < n:
                taken[whale] = taken.get(whale, 0) + 1
                out.append((q, j, whale))
    return out


def photos_from_neighbours(sims, idx, gallery, names, table: pd.DataFrame, n: int) -> pd.DataFrame:
    """Each candidate's gallery photos among the query's neighbours, best first: the search that scored it."""
    rows = [(names[q], whale, gallery.names[idx[q, j]], float(sims[q, j]))
            for q, j, whale in candidate_neighbours(idx, gallery.ids, names, table, n)]
    return pd.DataFrame(rows, columns=[C.IMAGE, C.ID, "photo", "similarity"])


def photos_by_similarity(vectors, gallery, queries, names, table: pd.DataFrame, n: int) -> pd.DataFrame:
    """Each candidate's n gallery photos most similar to the query (centroid aggregation)."""
    rows = []
    position = {name: q for q, name in enumerate(names)}
    by_whale = gallery.rows_by_whale()
    for name, whale in zip(table[C.IMAGE], table[C.ID]):
        members = by_whale[whale]
        sims = vectors[members] @ queries[position[name]]
        for j in np.argsort(-sims, kind="stable")[:n]:
            rows.append((name, whale, gallery.names[members[j]], float(sims[j])))
    return pd.DataFrame(rows, columns=[C.IMAGE, C.ID, "photo", "similarity"])


def merge_photos(tables: list[pd.DataFrame | None], n: int) -> pd.DataFrame:
    """Best photos per (query, whale) over several searches (fold models, models), best first."""
    tables = [t for t in tables if t is not None and len(t)]
    if not tables:
        return pd.DataFrame(columns=[C.IMAGE, C.ID, "photo", "similarity"])
    merged = pd.concat(tables, ignore_index=True).sort_values("similarity", ascending=False, kind="stable")
    merged = merged.drop_duplicates([C.IMAGE, C.ID, "photo"])
    return merged.groupby([C.IMAGE, C.ID], sort=False).head(n).reset_index(drop=True)
