"""catalogue: keep a catalogue of known individuals (pipeline/catalogue/). Every action names the
catalogue folder (--catalogue DIR):

    init      --from PATH [--work WORK]   a catalogue from a Kaggle layout, a folder per individual or a CSV
                                          (sources.py), bound to WORK's bundle; without --work, to a zero-shot
                                          bundle (ImageNet features, no training) made from its identified
                                          photos in DIR/work-zero-shot (zero_shot.py; --set KEY=VALUE for its
                                          config)
              --rebind --work WORK        bind it to another work folder (every photo embedded anew)
    add       FILES/FOLDERS... [--date --location --encounter --photographer --encounter-gap MIN]
    queue     [--json] [--unsure] [--encounters]   pending photos (or encounters), candidates, P(new), a suggestion
    decide    PHOTO|--encounter E (--match ID | --new [ID] | --unsure | --junk) --reviewer NAME
                                          (an encounter: its pending photos; its unsure ones once none is)
    merge     ID_A ID_B --reviewer NAME   ID_B becomes an alias of ID_A
    split     ID PHOTOS... --reviewer NAME [--new-id ID]
    undo      --reviewer NAME             that reviewer's last decision
    rematch   [--unsure]                  rank pending (and unsure) photos again
    export    --format kaggle|wildbook|dwc --out PATH
    evaluate  [--json]                    replay the catalogue: rank-1/5/10, P(new individual) AUC
    check                                 integrity and files against rows
"""
from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True)

    def action(name, help_text):
        p = actions.add_parser(name, help=help_text)
        p.add_argument("--catalogue", required=True, help="the catalogue folder")
        return p

    p = action("init", "make a catalogue from what the lab has, bound to a work folder's bundle")
    p.add_argument("--from", dest="data", default=None,
                   help="a Kaggle layout (train.csv + train/), a folder with a folder per individual (photos "
                        "without an id in unidentified/, unknown/, unmatched/, new_whale/ or no_id/), or a CSV "
                        "spreadsheet with an image column, an id column and any others")
    p.add_argument("--photos", default=None, help="the folder a spreadsheet's image paths are relative to "
                                                  "(default: the spreadsheet's folder)")
    p.add_argument("--image-column", default=None, help="the spreadsheet's image column, when its name is not "
                                                        "one of the accepted ones")
    p.add_argument("--id-column", default=None, help="the spreadsheet's id column, likewise")
    p.add_argument("--encounter-gap", type=float, default=None, metavar="MINUTES",
                   help="photos of one camera this close in time form one encounter (default 10)")
    p.add_argument("--work", default=None, help="work folder whose trained models identify new photos (default: "
                                                 "a zero-shot bundle, ImageNet features, made from the identified "
                                                 "photos of --from in DIR/work-zero-shot; rebind later)")
    p.add_argument("--models", nargs="+", default=None, help="default: every model with embeddings in WORK")
    p.add_argument("--configs", default=None, help="the zero-shot bundle's configs folder (default: configs/ here "
                                                   "if it holds the recipes, else the checkout's)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override the zero-shot bundle's config, e.g. --set preprocess.image_size=[96,192] "
                        "(repeatable)")
    p.add_argument("--rebind", action="store_true", help="bind an existing catalogue to WORK's models")
    p.add_argument("--genus", default="Megaptera")
    p.add_argument("--species", default="novaeangliae")
    p = action("add", "add photos and folders of photos: validate, store by content hash, rank, queue for review")
    p.add_argument("photos", nargs="+", help="photo files and folders (walked recursively)")
    for field in ("date", "location", "encounter", "photographer"):
        p.add_argument(f"--{field}", default=None, help="for every photo (date and location: else the camera's)"
                       if field in ("date", "location") else None)
    p.add_argument("--encounter-gap", type=float, default=None, metavar="MINUTES",
                   help="photos of one camera this close in time form one encounter (default: the catalogue's "
                        "setting, 10)")
    p = action("queue", "pending photos with their candidates")
    p.add_argument("--json", action="store_true")
    p.add_argument("--unsure", action="store_true", help="also the photos decided unsure")
    p.add_argument("--encounters", action="store_true", help="an encounter's photos as one item, ranked together")
    p = action("decide", "record a decision on one photo, or on the photos of an encounter")
    p.add_argument("photo", nargs="?", help="a hash, hash prefix (8+) or original file name")
    p.add_argument("--encounter", default=None, help="instead of a photo: this encounter's pending photos, as the "
                                                     "queue and the page group them (its unsure ones once none is "
                                                     "pending); each its own decision, undone together")
    choice = p.add_mutually_exclusive_group(required=True)
    choice.add_argument("--match", metavar="ID")
    choice.add_argument("--new", nargs="?", const="", metavar="ID", help="a new individual (a fresh id unless given)")
    choice.add_argument("--unsure", action="store_true")
    choice.add_argument("--junk", action="store_true", help="not usable for identification")
    p.add_argument("--reviewer", required=True)
    p = action("merge", "ID_B becomes an alias of ID_A, its photos move to ID_A")
    p.add_argument("keep")
    p.add_argument("gone")
    p.add_argument("--reviewer", required=True)
    p = action("split", "chosen photos of an individual become a new individual")
    p.add_argument("individual")
    p.add_argument("photos", nargs="+")
    p.add_argument("--new-id", default=None)
    p.add_argument("--reviewer", required=True)
    p = action("undo", "undo the reviewer's last decision")
    p.add_argument("--reviewer", required=True)
    p = action("rematch", "rank pending photos again")
    p.add_argument("--unsure", action="store_true")
    p = action("export", "export the catalogue")
    from pipeline.catalogue.exports import FORMATS

    p.add_argument("--format", required=True, choices=FORMATS.names())
    p.add_argument("--out", required=True)
    p = action("evaluate", "replay the catalogue to measure matching on it")
    p.add_argument("--json", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    action("check", "database integrity and photo files against its rows")


def passed_over(passed) -> None:
    """What an import or add could not use, skipped files first, each with its reason."""
    for p in sorted(passed, key=lambda p: p.refused):
        print(f"{'refused' if p.refused else 'skipped'} {p.where}: {p.reason}")


def run(args: argparse.Namespace):
    from pipeline.catalogue.catalogue import Catalogue
    from pipeline.errors import PipelineError

    if args.action == "init":
        if args.rebind:
            if args.work is None:
                raise PipelineError("--rebind binds the catalogue to a trained work folder: give --work WORK",
                                    "catalogue init")
            catalogue = Catalogue.open(args.catalogue)
            version = catalogue.rebind(args.work, args.models)
            print(f"Catalogue {args.catalogue}: bound to bundle {version}")
            return version
        if not args.data:
            raise PipelineError("init needs --from PATH (a Kaggle layout, a folder per individual or a CSV), or "
                                "--rebind", "catalogue init")
        catalogue = Catalogue.init(args.catalogue, args.data, args.work, args.models,
                                   {"genus": args.genus, "species": args.species}, args.photos, args.image_column,
                                   args.id_column, args.encounter_gap, progress=True, configs=args.configs,
                                   overrides=args.overrides)
        counts = dict(catalogue.store.db.execute("SELECT status, COUNT(*) FROM photos GROUP BY status").fetchall())
        passed_over(catalogue.passed)
        for warning in catalogue.warnings:
            print(f"warning: {warning}")
        print(f"Catalogue {args.catalogue}: {counts.get('confirmed', 0)} photos of "
              f"{len(catalogue.individuals())} individuals, {counts.get('unidentified', 0)} unidentified")
        if catalogue.zero_shot:
            print(f"Bound to the zero-shot bundle {catalogue.store.setting('bundle_version')}: EfficientNet-Lite0's ImageNet "
                  f"features, not trained on your photos (made in {catalogue.zero_shot.work}, "
                  f"{catalogue.zero_shot.n_folds} folds); once a model is trained on them (export --format kaggle, "
                  f"then the pipeline), bind it with: whale catalogue init --catalogue {args.catalogue} --rebind "
                  "--work WORK")
        refused = sum(p.refused for p in catalogue.passed)
        if refused:
            raise PipelineError(f"{refused} photo(s) or row(s) refused (listed above); the others were imported",
                                args.data)
        return counts
    catalogue = Catalogue.open(args.catalogue)
    if args.action == "add":
        added = catalogue.add(args.photos, args.date, args.location, args.encounter, args.photographer,
                              args.encounter_gap, progress=True)
        queued = [a for a in added if a.ranking is not None]
        for a in queued:
            top = a.ranking.candidates[0] if a.ranking.candidates else None
            best = f"best {top['id']} {top['score']:.3f}" if top else "no candidate"
            print(f"queued {a.name} ({a.hash[:12]}): {best}, P(new individual) {a.ranking.p_new:.2f}, "
                  f"suggested {a.ranking.suggested}" + (f", encounter {a.encounter}" if a.encounter else ""))
        for a in added:
            if a.skipped:
                print(f"skipped {a.path}: {a.skipped}")
        for a in added:
            if a.refused:
                print(f"refused {a.path}: {a.refused}")
        refused = [a for a in added if a.refused]
        skipped = sum(bool(a.skipped) for a in added)
        print(f"{len(queued)} photo(s) queued, {skipped} file(s) skipped, {len(refused)} refused")
        if refused:
            raise PipelineError(f"{len(refused)} photo(s) refused (listed above), first {refused[0].path}: "
                                f"{refused[0].refused}", args.catalogue)
        return added
    if args.action == "queue":
        queue = catalogue.queue(args.unsure, by_encounter=args.encounters)
        if args.json:
            print(json.dumps(queue, indent=2))
        else:
            for q in queue:
                cands = ", ".join(f"{c['id']} {c['score']:.3f}" for c in q["candidates"])
                suggested = q["suggested_new_id"] + " (new)" if q["suggested"] == "new" else q["suggested"]
                p_new = "–" if q["p_new"] is None else f"{q['p_new']:.2f}"
                print(f"{q['hash'][:12]} {q['name']} [{q['status']}] P(new) {p_new} suggested {suggested}: {cands}")
            print(f"{len(queue)} {'item' if args.encounters else 'photo'}(s) to review")
        return queue
    if args.action == "decide":
        kind, individual = ("match", args.match) if args.match else ("new", args.new or None) if args.new is not None \
            else ("unsure", None) if args.unsure else ("junk", None)
        if (args.photo is None) == (args.encounter is None):
            raise PipelineError("decide names one photo, or --encounter E", "catalogue decide")
        if args.encounter is not None:
            result = catalogue.decide_encounter(args.encounter, kind, args.reviewer, individual)
            what = f" {result['individual']}" if result["individual"] else ""
            left = result["unsure_left"]
            print(f"encounter {args.encounter}, {len(result['photos'])} photo(s): {kind}{what} (decisions "
                  f"{', '.join(map(str, result['decisions']))}, {args.reviewer})"
                  + (f"; its {left} unsure photo(s) left for their own decision" if left else ""))
            return result
        result = catalogue.decide(args.photo, kind, args.reviewer, individual)
        print(f"{result['name']}: {kind}{' ' + result['individual'] if result['individual'] else ''} "
              f"(decision {result['decision']}, {args.reviewer})")
        return result
    if args.action == "merge":
        result = catalogue.merge(args.keep, args.gone, args.reviewer)
        print(f"merged {result['gone']} into {result['individual']} ({result['photos']} photos moved)")
        return result
    if args.action == "split":
        result = catalogue.split(args.individual, args.photos, args.reviewer, args.new_id)
        print(f"split {result['photos']} photo(s) of {result['from']} into {result['individual']}")
        return result
    if args.action == "undo":
        result = catalogue.undo(args.reviewer)
        together = f" with {len(result['photos']) - 1} more of its encounter" if len(result["photos"]) > 1 else ""
        print(f"undid decision {result['of']} ({result['undid']}){together}")
        return result
    if args.action == "rematch":
        n = catalogue.rematch(args.unsure)
        print(f"ranked {n} photo(s) again")
        return n
    if args.action == "export":
        from pipeline.catalogue.exports import export

        path = export(catalogue.store, args.format, args.out)
        print(f"exported ({args.format}) to {path}")
        return path
    if args.action == "evaluate":
        from pipeline.catalogue.evaluate import evaluate, format_report

        report = evaluate(catalogue, args.seed)
        print(json.dumps(report, indent=2) if args.json else format_report(report))
        return report
    report = catalogue.store.check()
    print(json.dumps(report, indent=2))
    if report["integrity"] != "ok" or report["files_not_listed"] or report["rows_without_file"]:
        raise PipelineError("the catalogue is not consistent (see above)", args.catalogue)
    return report
