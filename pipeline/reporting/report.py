"""The HTML report: CV table, MAP@5 against the threshold, training curves, an embedding map and
the worst validation queries with their top five. Every image is inlined: one self-contained file."""
from __future__ import annotations

import html
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display: render to files
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from pipeline import columns as C  # noqa: E402
from pipeline.data.cache import ImageCache  # noqa: E402
from pipeline.metrics import average_precision_at_5  # noqa: E402
from pipeline.io.paths import embeddings_root, models_root, prediction_dir, predictions_root, reports_dir  # noqa: E402
from pipeline.reporting.images import figure_uri, jpeg_uri  # noqa: E402
from pipeline.decision.evaluation import cross_validate, fold_policies  # noqa: E402
from pipeline.decision.policy import NewWhalePolicy  # noqa: E402
from pipeline.retrieval.predictions import Predictions, fallback_whales  # noqa: E402

STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
.q{display:flex;gap:6px;align-items:flex-start;margin:8px 0}.q figure{margin:0;text-align:center;font-size:11px}
.q img{height:64px;border:3px solid transparent}.hit img{border-color:#2a2}.query img{border-color:#36c}
.nw{height:64px;width:90px;display:flex;align-items:center;justify-content:center;background:#eee;border:3px solid transparent}
.hit .nw{border-color:#2a2}
"""


def cv_table(work: Path, folds: pd.DataFrame, names: list[str], policy: NewWhalePolicy) -> pd.DataFrame:
    rows = []
    for name in names:
        preds = Predictions.read(prediction_dir(work, name))
        report = cross_validate(preds.oof, folds, policy)
        row = {"model": name, **{f"fold {f['fold']}": f["map5"] for f in report["folds"]},
               "overall": report["map5"], "threshold": report["threshold"]}
        rows.append(row)
    return pd.DataFrame(rows)


def threshold_plot(cv: dict) -> str:
    curve = pd.DataFrame(cv["curve"])
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.plot(curve["threshold"], curve["map5"])
    ax.axvline(cv["threshold"], color="gray", ls="--", label=f"tuned {cv['threshold']:.3f}")
    ax.set_xlabel("new_whale threshold")
    ax.set_ylabel("out-of-fold MAP@5")
    ax.legend()
    return figure_uri(fig)


def training_plots(work: Path) -> list[tuple[str, str]]:
    out = []
    for model in sorted(p for p in models_root(work).iterdir() if p.is_dir()) if models_root(work).is_dir() else []:
        logs = sorted(model.glob("fold*/log.csv"))
        if not logs:
            continue
        fig, ax = plt.subplots(figsize=(6, 3))
        for log in logs:
            df = pd.read_csv(log)
            ax.plot(df["elapsed_s"] / 60, df["loss"], marker=".", label=log.parent.name)
        ax.set_xlabel("minutes")
        ax.set_ylabel("training loss")
        ax.legend(fontsize=8)
        out.append((model.name, figure_uri(fig)))
    return out


def embedding_map(work: Path, folds: pd.DataFrame, largest: int = 12) -> str | None:
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    from pipeline.retrieval.embeddings import load_embeddings

    folders = sorted(embeddings_root(work).glob("*/fold*/index.csv"))
    if not folders:
        return None
    known = folds[folds[C.ID] != C.NEW_WHALE]
    top = known[C.ID].value_counts().index[:largest]
    part = known[known[C.ID].isin(top)]
    x = load_embeddings(folders[0].parent, part[C.IMAGE], C.TRAIN)
    if len(part) >= 30:
        xy = TSNE(n_components=2, init="pca", perplexity=min(30, len(part) // 4), random_state=0).fit_transform(x)
        method = "t-SNE"
    else:
        xy = PCA(n_components=2).fit_transform(x)
        method = "PCA"
    fig, ax = plt.subplots(figsize=(6, 5))
    for i, whale in enumerate(top):
        mine = (part[C.ID] == whale).to_numpy()
        ax.scatter(xy[mine, 0], xy[mine, 1], s=18, color=plt.cm.tab20(i % 20), label=whale)
    ax.legend(fontsize=7, loc="best", ncol=2)
    ax.set_title(f"{method} of {folders[0].parent.parent.name} {folders[0].parent.name} embeddings, "
                 f"{len(top)} most photographed whales", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    return figure_uri(fig)


def match_lines_uri(cache: ImageCache, query: str, photo: str, settings, height: int = 64) -> str:
    """The two cached photos side by side with the SIFT matches that the local score counts, matched with
    the settings that score (a local.match.MatchSettings, from knn.local_*) on the photos it reads."""
    from pipeline.reporting.match_lines import draw_match_lines
    from pipeline.retrieval.local.collect import scored_matches
    from pipeline.retrieval.local.extract import sift_descriptors

    q, g = cache.images[cache.rows([query])[0]], cache.images[cache.rows([photo])[0]]
    q_xy, g_xy, strength = scored_matches(sift_descriptors(q, settings.keypoints),
                                          sift_descriptors(g, settings.keypoints), settings)
    return jpeg_uri(draw_match_lines(q, g, q_xy, g_xy, strength, height=2 * height), height)


def query_gallery(work: Path, folds: pd.DataFrame, cache: ImageCache, name: str, sample: int, policy: NewWhalePolicy,
                  seed: int = 0, knn: dict | None = None) -> str:
    """Validation queries with their five, each fold's labels from the policy that scored it in CV."""
    import yaml

    from pipeline.config import DEFAULTS
    from pipeline.retrieval.local.match import MatchSettings

    knn = knn or DEFAULTS["knn"]
    preds = Predictions.read(prediction_dir(work, name))
    saved = prediction_dir(work, name) / "config.yaml"  # the settings these predictions were scored with
    knn = yaml.safe_load(saved.read_text())["knn"] if saved.is_file() else knn
    settings = MatchSettings.from_knn(knn)
    scored = "matches that scored" if knn.get("local") else "local matches (not scored: knn.local off) with"
    queries = folds[folds[C.FOLD].isin(preds.oof[C.FOLD].unique())]
    queries = queries.sample(n=min(sample, len(queries)), random_state=seed)
    per_fold = fold_policies(preds.oof, folds, policy)
    fallback = fallback_whales(folds)
    labels = [per_fold[int(f)].labels(preds.oof, [name_], fallback)[0]
              for name_, f in zip(queries[C.IMAGE], queries[C.FOLD])]
    scores = preds.oof.set_index([C.IMAGE, C.ID])[C.SCORE]
    aps = [average_precision_at_5(t, p) for t, p in zip(queries[C.TRUTH], labels)]
    order = np.argsort(aps, kind="stable")  # worst first
    first_photo = folds[folds[C.ID] != C.NEW_WHALE].groupby(C.ID)[C.IMAGE].first()
    rows = []
    for i in order:
        q = queries.iloc[i]
        cells = [f'<figure class="query"><img src="{jpeg_uri(cache.images[cache.rows([q[C.IMAGE]])[0]])}">'
                 f'<figcaption>{html.escape(q[C.IMAGE])}<br>truth {html.escape(q[C.TRUTH])}<br>AP {aps[i]:.2f}'
                 '</figcaption></figure>']
        best = next((label for label in labels[i] if label != C.NEW_WHALE and label in first_photo.index), None)
        if best is not None:  # the query against its best candidate's photo, verified matches drawn
            cells.append(f'<figure class="lines"><img src="{match_lines_uri(cache, q[C.IMAGE], first_photo[best], settings)}">'
                         f'<figcaption title="{html.escape(settings.describe())}">{scored} {html.escape(best)}'
                         "</figcaption></figure>")
        for label in labels[i]:
            hit = ' class="hit"' if label == q[C.TRUTH] else ""
            score = scores.get((q[C.IMAGE], label))
            caption = html.escape(label) + ("" if score is None else f"<br>{score:.3f}")
            if label == C.NEW_WHALE or label not in first_photo.index:
                body = f'<div class="nw">{html.escape(label)}</div>'
            else:
                body = f'<img src="{jpeg_uri(cache.images[cache.rows([first_photo[label]])[0]])}">'
            cells.append(f"<figure{hit}>{body}<figcaption>{caption}</figcaption></figure>")
        rows.append(f'<div class="q">{"".join(cells)}</div>')
    return "\n".join(rows)


def build_report(work: str | Path, folds: pd.DataFrame, name: str, sample: int, cfg: dict) -> str:
    work = Path(work)
    policy = NewWhalePolicy.from_config(cfg)
    cache = ImageCache.open(work)
    cv_path = reports_dir(work) / "cv.json"
    cv = json.loads(cv_path.read_text()) if cv_path.is_file() else None
    sets = [p.name for p in sorted(predictions_root(work).iterdir()) if (p / "oof.parquet").is_file()]
    table = cv_table(work, folds, sets, policy)
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>Whale identification report</title>"
             f"<style>{STYLE}</style></head><body>",
             f"<h1>Whale identification report</h1><p>{html.escape(str(work))}: {len(cache.split(C.TRAIN))} train "
             f"and {len(cache.split(C.TEST))} test photos.</p>",
             '<h2 id="cv">Cross-validation MAP@5</h2>',
             f"<p>Out-of-fold MAP@5, new_whale policy <code>{html.escape(policy.strategy)}</code>"
             + (" (each fold at a threshold tuned on the other folds).</p>" if policy.strategy == "cv" else
                " (each fold with new_whale first for the configured share of its queries).</p>"),
             table.to_html(index=False, float_format=lambda v: f"{v:.4f}")]
    if cv:
        parts += ['<h2 id="threshold">MAP@5 against the new_whale threshold</h2>', f'<img src="{threshold_plot(cv)}">']
    curves = training_plots(work)
    if curves:
        parts.append('<h2 id="training">Training curves</h2>')
        parts += [f"<h3>{html.escape(m)}</h3><img src=\"{uri}\">" for m, uri in curves]
    projection = embedding_map(work, folds)
    if projection:
        parts += ['<h2 id="embeddings">Embeddings of the largest whales</h2>', f'<img src="{projection}">']
    if name in sets:
        parts += [f'<h2 id="queries">Validation queries, worst first ({html.escape(name)})</h2>',
                  "<p>Blue: the query. Green: the correct answer among the five.</p>",
                  query_gallery(work, folds, cache, name, sample, policy, knn=cfg.get("knn"))]
    parts.append("</body></html>")
    return "\n".join(parts)
