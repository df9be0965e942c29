"""What a search returns and every re-scorer takes and gives back (postprocess/base.py):

    RetrievalResult(scores, photos)
    result.scores   Image, Id, score (+ any per-candidate column a re-scorer adds, e.g. local counts):
                    each query's candidates, best first
    result.photos   Image, Id, photo, similarity: the gallery photos that scored each candidate, best
                    first (None when the search was not asked for photos)

Immutable: both tables are copied in and handed out as copies (pandas' copy-on-write makes that
cheap), so a re-scorer cannot change the result it was given, only return a new one (`rescored`).
Checked when built: within each query the ids are unique and the scores sorted best first; a
re-scorer that breaks either fails at once instead of shifting the new_whale policy's threshold.

Stages that write CSVs use the long table (`scores`) directly; `from_table` wraps one."""
from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline import columns as C

PHOTO_COLUMNS = [C.IMAGE, C.ID, "photo", "similarity"]


class RetrievalResult:
    __slots__ = ("_scores", "_photos", "_queries")

    def __init__(self, scores: pd.DataFrame, photos: pd.DataFrame | None = None):
        missing = {C.IMAGE, C.ID, C.SCORE} - set(scores.columns)
        if missing:
            raise ValueError(f"a retrieval result needs the columns Image, Id and score; {sorted(missing)} missing")
        check_ranked(scores)
        set_ = object.__setattr__  # immutable: the only writes are these, at construction
        set_(self, "_scores", scores.reset_index(drop=True).copy(deep=False))
        set_(self, "_photos", None if photos is None else photos.reset_index(drop=True).copy(deep=False))
        set_(self, "_queries", tuple(pd.unique(scores[C.IMAGE])))

    def __setattr__(self, name, value):
        raise AttributeError("a RetrievalResult is immutable; a re-scorer returns a new one (rescored)")

    def __delattr__(self, name):
        raise AttributeError("a RetrievalResult is immutable")

    def __repr__(self) -> str:
        return f"RetrievalResult({len(self._queries)} queries, {len(self._scores)} candidates)"

    @classmethod
    def from_table(cls, table: pd.DataFrame, photos: pd.DataFrame | None = None) -> "RetrievalResult":
        """A long table (Image, Id, score, best first per query) as a result."""
        return cls(table, photos)

    @property
    def scores(self) -> pd.DataFrame:
        """The long table (Image, Id, score, ...), a copy."""
        return self._scores.copy(deep=False)

    @property
    def photos(self) -> pd.DataFrame | None:
        return None if self._photos is None else self._photos.copy(deep=False)

    @property
    def queries(self) -> tuple:
        """The queries that have candidates, in the table's order."""
        return self._queries

    def __len__(self) -> int:
        return len(self._scores)

    def candidates(self, query) -> tuple[np.ndarray, np.ndarray]:
        """(ids, scores) of one query's candidates, best first."""
        mine = self._scores[self._scores[C.IMAGE] == query]
        return mine[C.ID].to_numpy(), mine[C.SCORE].to_numpy()

    def rescored(self, table: pd.DataFrame) -> "RetrievalResult":
        """A new result with `table` as its scores (a re-scorer's output); the photos of the candidates
        it keeps stay as they were, in their order."""
        if self._photos is None:
            return RetrievalResult(table)
        kept = pd.MultiIndex.from_frame(table[[C.IMAGE, C.ID]])
        photos = self._photos[pd.MultiIndex.from_frame(self._photos[[C.IMAGE, C.ID]]).isin(kept)]
        return RetrievalResult(table, photos)

    def with_photos(self, photos: pd.DataFrame) -> "RetrievalResult":
        return RetrievalResult(self._scores, photos)


def check_ranked(table: pd.DataFrame) -> None:
    """ValueError unless, within each query, ids are unique and scores sorted best first (NaN counts as
    the lowest score, as sort_values places it)."""
    if not len(table):
        return
    duplicated = table.duplicated([C.IMAGE, C.ID])
    if duplicated.any():
        row = table[duplicated].iloc[0]
        raise ValueError(f"retrieval result: query {row[C.IMAGE]!r} lists candidate {row[C.ID]!r} twice")
    query = pd.factorize(table[C.IMAGE])[0]
    order = np.argsort(query, kind="stable")  # each query's rows together, in their own order
    scores = table[C.SCORE].to_numpy(np.float64)[order]
    scores = np.where(np.isnan(scores), -np.inf, scores)
    same = query[order][1:] == query[order][:-1]
    rising = same & (scores[1:] > scores[:-1])
    if rising.any():
        name = table[C.IMAGE].to_numpy()[order][1:][rising][0]
        raise ValueError(f"retrieval result: the scores of query {name!r} are not sorted best first")
