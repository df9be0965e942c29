"""The zero-shot bundle: a catalogue that matches on day one, before any model is trained on the lab's
photos (`whale catalogue init --from PATH` without --work).

The identified photos of the source become a Kaggle-layout train set in CATALOGUE/work-zero-shot/data
(links to the lab's files, named by content hash so that two folders' IMG_0001.JPG never collide), and
the chain preprocess, folds, train, embed, knn runs on it with the recipe `lite0_zero_shot`:
EfficientNet-Lite0's ImageNet weights saved as they are (train.epochs: 0), so "training" writes the
pretrained network once per fold and embed computes its features once. The folds are not for training:
they hold photos out so that knn learns what a true match scores against a gallery without it, which
sets the new-individual threshold and P(new individual). The image size and framing are the pipeline's
own (configs/pipeline.yaml over config.py's defaults), as for a trained bundle; --set overrides them.

Kaggle's layout needs a test split; this one holds a single stand-in (a link to one train photo):
nothing is predicted from it. A photo that does not decode as preprocess decodes it is left out of the
work folder (the import refuses it by name), and so is a second copy of the same bytes."""
from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pipeline import columns as C
from pipeline.catalogue.sources import Source
from pipeline.catalogue.store import content_hash
from pipeline.errors import PipelineError
from pipeline.io.paths import layout_dir, own_folds_file

log = logging.getLogger(__name__)

MODEL = "lite0_zero_shot"
WORK = "work-zero-shot"  # inside the catalogue folder
STAND_IN = "stand-in"  # the test split's one photo: a link to a train photo under this prefix


@dataclass
class ZeroShotWork:
    work: Path
    names: dict[int, str]  # source record index -> its photo's name in the work folder's train split
    n_folds: int


def default_configs() -> Path:
    """configs/ in the current folder when it holds the recipes (as every stage reads it), else the
    checkout's own beside the package: a biologist need not run init from the repository."""
    here = Path("configs")
    if (here / "models" / f"{MODEL}.yaml").is_file():
        return here
    return Path(__file__).resolve().parents[2] / "configs"


def build(folder, source: Source, configs=None, overrides=(), progress: bool = False) -> ZeroShotWork:
    """Makes CATALOGUE/work-zero-shot from the source's identified photos and runs the chain on it;
    the work folder's bundle is then Bundle.from_work(work, [MODEL]). Raises a PipelineError naming
    what is missing when the set is too small for folds (fewer than two individuals with two photos)."""
    from pipeline.config import load_stage_config
    from pipeline.data.images import UnreadableImage, decode_photo
    from pipeline.progress import Progress

    configs = Path(configs) if configs else default_configs()
    cfg = load_stage_config(configs, MODEL, list(overrides))
    _check_weights(cfg)
    pre = cfg["preprocess"]
    size = tuple(int(v) for v in pre["image_size"])
    work = Path(folder).resolve() / WORK
    names: dict[int, str] = {}
    ids: dict[str, str] = {}  # work name -> id
    seen: set[str] = set()
    known = [i for i, r in enumerate(source.records) if r.individual is not None]
    bar = Progress(len(known), "checking the identified photos", unit="photo") if progress and known else None
    for i in known:
        r = source.records[i]
        if bar:
            bar.update()
        try:
            digest = content_hash(r.path.read_bytes())
            decode_photo(r.path, size, auto_crop=bool(pre["auto_crop"]), trim_padding=bool(pre["trim_padding"]),
                         keep_aspect=bool(pre["keep_aspect"]))
        except (OSError, UnreadableImage):  # the import names it; the work folder does without it
            continue
        if digest in seen:  # the same bytes twice: the import keeps the first
            continue
        seen.add(digest)
        names[i] = f"{digest[:24]}{r.path.suffix.lower()}"
        ids[names[i]] = r.individual
    if bar:
        bar.close()
    per_individual = pd.Series(list(ids.values()), dtype=str).value_counts()
    repeated = int((per_individual >= 2).sum())
    if repeated < 2:
        raise PipelineError(too_small(f"this source has {len(ids)} usable identified photo(s) of {len(per_individual)} "
                                      f"individual(s), {repeated} with two or more"), source.root)
    # Each fold holds out photos of the individuals seen twice or more, so that its queries have a
    # match in its gallery: no more folds than such individuals, and no fewer than cross-validation's 2.
    n_folds = max(2, min(int(cfg["folds"]["n_folds"]), repeated))
    if n_folds != int(cfg["folds"]["n_folds"]):
        log.info("zero-shot bundle: %d folds (folds.n_folds is %d; %d individual(s) have two photos or more)",
                 n_folds, cfg["folds"]["n_folds"], repeated)
    _write_layout(layout_dir(work), source, names, ids)
    _run_chain(work, configs, [*overrides, f"folds.n_folds={n_folds}"])
    return ZeroShotWork(work, names, n_folds)


def too_small(found: str) -> str:
    return ("the zero-shot bundle needs two individuals or more with two photos each (each fold holds photos out "
            f"to learn what a match scores, and keeps two individuals or more to compare with); {found}: add "
            "photos, or give --work WORK (a work folder trained by the pipeline)")


def _check_folds(path: Path) -> None:
    """Every fold keeps two individuals or more outside it, as training needs (near-duplicate photos of
    one individual move as one: two photos may not be enough)."""
    from pipeline.data.folds import read_folds

    folds = read_folds(path)
    known = folds[folds[C.ID] != C.NEW_WHALE]
    for k in sorted(set(folds[C.FOLD]) - {C.TRAIN_ONLY}):
        kept = known.loc[known[C.FOLD] != k, C.ID].nunique()
        if kept < 2:
            raise PipelineError(too_small(f"fold {k} keeps {kept} (near-duplicate photos of one individual count "
                                          "as one photo)"), path)


def _check_weights(cfg: dict) -> None:
    """An installed weights package the recipe needs is found before any photo is cached."""
    weights = str(cfg["model"].get("weights") or "")
    if weights.startswith("package:"):
        from pipeline.models.weights.packages import PACKAGES

        PACKAGES.get(weights.partition(":")[2]).file()


def _link(target: Path, link: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        link.unlink()
    try:
        os.symlink(target.resolve(), link)
    except OSError:  # a file system without links
        shutil.copyfile(target, link)


def _write_layout(data: Path, source: Source, names: dict[int, str], ids: dict[str, str]) -> None:
    """train.csv + train/ (links), and the test split's one stand-in photo. Rewritten from the source
    each time, so that a second run (after a failed one) reads the same photos."""
    shutil.rmtree(data, ignore_errors=True)
    for i, name in names.items():
        _link(source.records[i].path, data / "train" / name)
    pd.DataFrame({C.IMAGE: list(ids), C.ID: list(ids.values())}).to_csv(data / "train.csv", index=False)
    first = next(iter(names))
    stand_in = f"{STAND_IN}-{names[first]}"
    _link(source.records[first].path, data / "test" / stand_in)
    pd.DataFrame({C.IMAGE: [stand_in], C.ID: [C.NEW_WHALE]}).to_csv(data / "sample_submission.csv", index=False)


def _run_chain(work: Path, configs: Path, overrides: list[str]) -> None:
    """The stages a bundle needs (preprocess, folds, train, embed, knn), as run_chain runs them."""
    from pipeline.chain import chain_argv
    from pipeline.cli import main

    layout = layout_dir(work)
    for argv in chain_argv(layout, work, MODEL, configs, overrides, stop="knn"):
        if argv[0] == "train":
            _check_folds(own_folds_file(work))
        if main(argv) != 0:
            raise PipelineError(f"the zero-shot bundle's {argv[0]} stage failed (see the error above); the work "
                                "folder is kept: run init again once it is fixed", work)
