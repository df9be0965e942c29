"""Reading a fold's embeddings for named photos, joined by name through index.csv."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipeline import columns as C
from pipeline.errors import PipelineError
from pipeline.retrieval.index import check_embeddings


def load_embeddings(folder: Path, names, split: str) -> np.ndarray:
    """Rows of `split`.npy for the named photos, joined by name through index.csv (never by row order)."""
    index_path, array_path = folder / "index.csv", folder / f"{split}.npy"
    for path in (index_path, array_path):
        if not path.is_file():
            raise PipelineError("embeddings not found; run the embed stage first", path)
    index = pd.read_csv(index_path, dtype={C.IMAGE: str}, keep_default_na=False)
    index = index[index[C.SPLIT] == split]
    vectors = check_embeddings(np.load(array_path), str(array_path))
    if len(vectors) != len(index):
        raise PipelineError(f"{len(vectors)} rows but index.csv lists {len(index)} {split} photos", array_path)
    lookup = pd.Series(index[C.ROW].to_numpy(), index=index[C.IMAGE])
    names = list(names)
    missing = [n for n in names if n not in lookup.index]
    if missing:
        raise PipelineError(f"{len(missing)} photo(s) have no embedding (first: {missing[0]}); these embeddings "
                            "come from another image set: re-run embed", index_path)
    return vectors[lookup.loc[names].to_numpy()]
