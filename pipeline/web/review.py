"""The review screen over a catalogue (`whale serve --catalogue DIR`): the pending photos in arrival order,
each beside its five best candidates' best-matching photos with the verified local matches drawn
between them, and one key (or button) per decision. Every change goes through the catalogue's own
functions (Catalogue.add / decide / undo / merge / split), exactly as `whale catalogue ...` does.

Threads: the server's threads share one CatalogueMatcher (the bundle's networks and every gallery,
loaded once; its own lock and database connection) and each thread has its own database connection
(Store). Writes are serialised by the store (flock + BEGIN IMMEDIATE), so two reviewers deciding one
photo at once leave exactly one decision; the second is told who made it.

    GET  /                      the next pending item (or ?photo=HASH), the queue, the upload form; ?view=encounter
                                (the default: an encounter's photos are one item, ranked together) or ?view=photo
    POST /upload                photos (several), date, location, encounter, photographer -> Catalogue.add
    POST /decide                photo (or photos: an encounter's), kind (match|new|unsure|junk), individual |
                                new_id -> Catalogue.decide / decide_photos
    POST /undo                  the reviewer's last decision -> Catalogue.undo
    POST /reviewer              the reviewer's name, kept in the session and sent with every decision
    GET  /individuals, /individual/ID;  POST /merge, /split
    GET  /photo/HASH?h=, /pair/QUERY/GALLERY?h=&lines=   JPEGs drawn on the server (pictures.py)
"""
from __future__ import annotations

import html
import logging
import re
import tempfile
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

from flask import Flask, Response, abort, redirect, request, session
from werkzeug.utils import secure_filename

from pipeline.catalogue.catalogue import DECISIONS, Catalogue
from pipeline.catalogue.store import Store
from pipeline.errors import PipelineError
from pipeline.io.layout import IMAGE_SUFFIXES, not_a_photo_type
from pipeline.web.pictures import Pictures, geometry_available
from pipeline.web.security import csrf_field, protect

log = logging.getLogger(__name__)
HASH = re.compile(r"^[0-9a-f]{64}$")
PAIR_HEIGHT = 240
BIG_HEIGHT = 800
QUERY_HEIGHT = 220
OTHER_PHOTOS = 10  # thumbnails of a candidate's other photos
MAX_FILES = 50

STYLE = """
body{font-family:system-ui,sans-serif;margin:0;color:#222;background:#fafafa}
header{display:flex;gap:1.5em;align-items:center;padding:.45em 1em;background:#1d3557;color:#fff;flex-wrap:wrap}
header a{color:#fff}header h1{font-size:18px;margin:0}header form{margin:0}
.layout{display:flex;align-items:flex-start}
nav.queue{width:230px;padding:.8em;border-right:1px solid #ddd;font-size:13px;flex:none}
nav.queue ol{padding-left:1.4em;margin:.3em 0}nav.queue li.current{font-weight:bold}
section.main{flex:1;padding:.8em 1.2em;min-width:0}
.msg{padding:.4em .8em;margin:.3em 0;background:#e3f1e3;border-left:4px solid #4a4}
.msg.error{background:#fbe3e3;border-color:#c33;color:#800}
.query{display:flex;gap:1.2em;align-items:flex-start;flex-wrap:wrap}
.query img{height:220px;border:1px solid #bbb}
.facts{font-size:14px}.facts td{padding:1px 8px 1px 0}.facts th{text-align:left;padding-right:8px;font-weight:600}
.pnew{font-size:22px;font-weight:bold}
.actions{display:flex;gap:.6em;align-items:center;flex-wrap:wrap;margin:.7em 0;padding:.5em;background:#eef;border-radius:6px}
.actions form{margin:0;display:flex;gap:.3em;align-items:center}
button{font-size:14px;padding:.3em .7em;cursor:pointer}
kbd{border:1px solid #888;border-bottom-width:2px;border-radius:3px;padding:0 4px;background:#fff;color:#000;font-size:12px}
.cand{display:flex;gap:1em;border:1px solid #ccc;background:#fff;padding:.5em;margin:.5em 0;border-radius:6px}
.cand .info{width:240px;flex:none;font-size:13px}.cand .info h3{margin:.1em 0 .3em;font-size:16px}
.cand .score{font-size:15px}.cand img.pair{height:240px;max-width:100%;border:1px solid #999}
.names{color:#555;font-size:12px;word-break:break-all}
.visual{min-width:0}.others{display:flex;gap:4px;flex-wrap:wrap;align-items:center;margin-top:.3em;font-size:12px;color:#555}
.others img{height:40px;border:1px solid #bbb}
.lightbox{display:none;position:fixed;inset:0;background:rgba(0,0,0,.88);z-index:10;align-items:center;
justify-content:center;flex-direction:column;color:#fff}
.lightbox:target{display:flex}.lightbox img{max-width:98vw;max-height:88vh;background:#fff}.lightbox a{color:#fff}
table.list{border-collapse:collapse;font-size:13px}table.list td,table.list th{border-bottom:1px solid #ddd;padding:3px 8px;text-align:left}
.photos{display:flex;gap:10px;flex-wrap:wrap}.photos figure{margin:0;font-size:12px;text-align:center}
.photos img{height:110px;border:1px solid #bbb}.undone{color:#999;text-decoration:line-through}
fieldset{border:1px solid #ccc;border-radius:6px;margin:.8em 0}
"""

KEYS = """<script>
(function(){
  var sent = false;
  document.addEventListener('submit', function(e){ if (sent) { e.preventDefault(); } sent = true; }, true);
  document.addEventListener('keydown', function(e){
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    var t = e.target;
    if (t && (t.tagName === 'INPUT' || t.tagName === 'TEXTAREA' || t.tagName === 'SELECT')) return;
    if (e.key === 'Escape' && location.hash) { location.hash = ''; return; }
    var b = document.querySelector('[data-key="' + e.key + '"]');
    if (b && !b.disabled) { e.preventDefault(); b.click(); }
  });
})();
</script>"""


def esc(value) -> str:
    return html.escape("" if value is None else str(value))


def back_here() -> str:
    query = request.query_string.decode("latin-1")
    return request.path + (f"?{query}" if query and request.method == "GET" else "")


def page(title: str, body: str, reviewer: str | None, messages: list, status: int = 200):
    who = esc(reviewer) if reviewer else ""
    notes = "".join(f'<div class="msg{" error" if kind == "error" else ""}" data-kind="{esc(kind)}">{esc(text)}</div>'
                    for kind, text in messages)
    head = (f'<header><h1>Whale catalogue review</h1><a href="/">Queue</a><a href="/individuals">Individuals</a>'
            f'<form method="post" action="/reviewer" id="reviewer-form">{csrf_field()}'
            f'<input type="hidden" name="back" value="{esc(back_here())}">'
            f'<label>Reviewer <input id="reviewer" name="reviewer" value="{who}" size="12" required '
            f'placeholder="your name"></label> <button type="submit" id="set-reviewer">Set</button></form>'
            f'{"" if reviewer else "<strong>Set your name to decide.</strong>"}</header>')
    text = (f'<!doctype html><html><head><meta charset="utf-8"><title>{esc(title)}</title><style>{STYLE}</style>'
            f'</head><body>{head}<div id="messages">{notes}</div>{body}{KEYS}</body></html>')
    return Response(text, status=status, content_type="text/html; charset=utf-8")


def scoring_settings(bundle):
    """(the local matching settings that scored the candidates, whether local matching scored them): the
    first bundled model that matches locally (knn.local_*), else the defaults' (the lines are then only
    a picture: the page says so)."""
    from pipeline.config import DEFAULTS
    from pipeline.retrieval.local.match import MatchSettings

    for model in bundle.models:
        if model.config["knn"].get("local"):
            return MatchSettings.from_knn(model.config["knn"]), True
    return MatchSettings.from_knn(DEFAULTS["knn"]), False


def lines_note(review) -> str:
    """What the match lines are: the settings that drew them, and whether those scored the candidates."""
    what = esc(review.settings.describe())
    if review.scored:
        return f'<p class="names">Match lines: the local matches that scored each pair ({what}; knn.local_*).</p>'
    return (f'<p class="names">Match lines: {what}. Local matching did not score these candidates '
            '(knn.local is off): the lines are a picture, not the evidence.</p>')


class Review:
    """What the server's threads share: the matcher, the pictures' cache, a prefetching worker."""

    def __init__(self, folder):
        self.folder = Path(folder)
        first = Catalogue.open(self.folder)
        self.matcher = first.matcher  # the bundle and every gallery, loaded once; keeps `first`'s connection
        self.local = threading.local()
        self.settings, self.scored = scoring_settings(self.matcher.bundle)
        self.pictures = Pictures(lambda digest: self.catalogue().store.photo_path(digest), settings=self.settings)
        self.prefetcher = ThreadPoolExecutor(1, thread_name_prefix="prefetch")
        self.prefetching: set[str] = set()
        self.lines = geometry_available()

    def catalogue(self) -> Catalogue:
        """This thread's Catalogue: its own database connection, the shared matcher."""
        cat = getattr(self.local, "catalogue", None)
        if cat is None:
            cat = Catalogue(Store.open(self.folder))
            cat._matcher = self.matcher
            self.local.catalogue = cat
        return cat

    def prefetch(self, item: dict) -> None:
        """Draws the pairs of a photo the reviewer will see next, while they look at this one."""
        if item["hash"] in self.prefetching:
            return
        self.prefetching.add(item["hash"])

        def work():
            for c in item["candidates"]:
                if c.get("photos"):
                    try:
                        self.pictures.pair(c.get("query") or item["hash"], c["photos"][0], PAIR_HEIGHT)
                    except Exception:  # only a head start: the page draws it again on request
                        log.debug("prefetch failed", exc_info=True)
        self.prefetcher.submit(work)


def create_review_app(catalogue, require_token: bool = False, token: str | None = None, loopback_hosts: bool = True,
                      max_upload_mb: float = 10.0) -> Flask:
    review = Review(catalogue)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = int(max_upload_mb * 1024 * 1024 * MAX_FILES)
    app.extensions["whale_review"] = review
    protect(app, require_token=require_token, token=token, loopback_hosts=loopback_hosts)

    def reviewer() -> str | None:
        return session.get("reviewer")

    def flash(kind: str, text: str) -> None:
        session["flash"] = session.get("flash", []) + [[kind, text]]

    def messages(extra=()) -> list:
        return session.pop("flash", []) + list(extra)

    # ------------------------------------------------------------------------------- the queue

    def view() -> str:
        wanted = request.args.get("view")
        if wanted in ("photo", "encounter"):
            session["view"] = wanted
        return session.get("view", "encounter")

    def review_page(focus: str | None = None, extra=(), status: int = 200):
        cat = review.catalogue()
        by = view()
        items = cat.queue(include_unsure=True, by_encounter=by == "encounter")
        pending = [q for q in items if q["status"] == "pending"]
        unsure = [q for q in items if q["status"] == "unsure"]
        notes = list(extra)
        current = None
        if focus:
            current = next((q for q in items if any(p["hash"] == focus for p in q["photos"])), None)
            if current is None:
                try:
                    row = cat.store.find_photo(focus)
                    notes.append(("info", f"{row['original_name']} is no longer in the queue "
                                          f"(now {row['individual_id'] or row['status']})"))
                except PipelineError:
                    notes.append(("error", "no such photo in the catalogue"))
        if current is None:
            current = pending[0] if pending else None
        body = ['<div class="layout">', queue_nav(pending, unsure, current, by), '<section class="main">']
        if current is None:
            body.append('<h2 id="empty">Nothing to review</h2><p>Add photos below, or with '
                        '<code>whale catalogue add</code>.</p>' + undo_form())
        else:
            body.append(photo_view(cat, current))
            later = [q for q in pending if q["hash"] != current["hash"]]
            if later:
                review.prefetch(later[0])
        body.append(upload_form())
        body.append("</section></div>")
        title = f"Review {current['name']}" if current else "Nothing to review"
        return page(title, "".join(body), reviewer(), messages(notes), status)

    def queue_nav(pending, unsure, current, by: str) -> str:
        def entries(items):
            return "".join(f'<li class="{"current" if current and q["hash"] == current["hash"] else ""}">'
                           f'<a href="/?photo={q["hash"]}">{esc(q["name"])}</a></li>' for q in items)
        other = "photo" if by == "encounter" else "encounter"
        toggle = (f'<a id="view-{other}" href="/?view={other}">'
                  f'{"one photo at a time" if other == "photo" else "group by encounter"}</a>')
        return (f'<nav class="queue" data-view="{by}"><h3>Pending (<span id="pending-count">{len(pending)}</span>)</h3>'
                f'<div class="names">{toggle}</div><ol id="pending">{entries(pending)}</ol>'
                + (f'<h3>Unsure ({len(unsure)})</h3><ol id="unsure">{entries(unsure)}</ol>' if unsure else "")
                + "</nav>")

    def facts(item: dict) -> str:
        """What is known of a photo, saying which values the camera wrote and which encounter the time gap made."""
        origin = item.get("origin") or {}
        marks = {"date": " (camera)" if origin.get("date") == "camera" else "",
                 "location": " (camera GPS)" if origin.get("location") == "camera" else "",
                 "encounter": " (by time gap)" if origin.get("encounter") == "time gap" else ""}
        rows = [(label, f"{item[key]}{marks.get(key, '')}") for label, key in
                (("Date", "date"), ("Location", "location"), ("Encounter", "encounter"),
                 ("Photographer", "photographer"), ("Camera", "camera"), ("Status", "status")) if item.get(key)]
        rows += [(k, v) for k, v in (item.get("notes") or {}).items()]
        return "".join(f"<tr><th>{esc(label)}</th><td>{esc(value)}</td></tr>" for label, value in rows)

    def decision_fields(item: dict) -> str:
        """The photo a form decides, or every photo of an encounter's item."""
        return f'<input type="hidden" name="photo" value="{item["hash"]}">' + "".join(
            f'<input type="hidden" name="photos" value="{p["hash"]}">' for p in item["photos"]
            if len(item["photos"]) > 1)

    def photo_view(cat: Catalogue, item: dict) -> str:
        digest = item["hash"]
        decidable = bool(reviewer())
        disabled = "" if decidable else " disabled"
        suggested_new = item["suggested_new_id"] or cat.store.fresh_id()
        suggestion = "a new individual" if item["suggested"] == "new" else item["suggested"]
        p_new = item["p_new"]
        out = [f'<div class="query" id="query" data-hash="{digest}">'
               f'<a href="#big-query"><img src="/photo/{digest}?h={QUERY_HEIGHT}" alt="query photo"></a>'
               f'<div class="facts"><h2 id="query-name" style="margin:.1em 0">{esc(item["name"])}</h2>'
               f'<div class="pnew">P(new individual) <span id="p-new">{"–" if p_new is None else f"{p_new:.2f}"}</span></div>'
               f'<div>suggested: <strong id="suggested">{esc(suggestion)}</strong></div>'
               f'<table>{facts(item)}</table><div class="names">{digest[:16]}…</div></div></div>'
               f'<div class="lightbox" id="big-query"><a href="#"><img loading="lazy" src="/photo/{digest}?h={BIG_HEIGHT}" '
               f'alt="query photo enlarged"></a><a href="#">close (Esc)</a></div>']
        if len(item["photos"]) > 1:
            out.append(encounter_strip(item))
        out.append(f'<div class="actions">'
                   f'<form method="post" action="/decide" class="decision">{csrf_field()}'
                   f'{decision_fields(item)}<input type="hidden" name="kind" value="new">'
                   f'<label>New individual <input id="new-id" name="new_id" value="{esc(suggested_new)}" size="12"></label>'
                   f'<button id="decide-new" data-key="n" type="submit"{disabled}><kbd>n</kbd> New individual</button></form>')
        for kind, key, label in (("unsure", "u", "Not sure"), ("junk", "j", "Not usable")):
            out.append(f'<form method="post" action="/decide" class="decision">{csrf_field()}'
                       f'{decision_fields(item)}<input type="hidden" name="kind" value="{kind}">'
                       f'<button id="decide-{kind}" data-key="{key}" type="submit"{disabled}><kbd>{key}</kbd> {label}</button></form>')
        out.append(undo_form() + '</div>')
        if not review.lines:
            out.append('<p class="names">Match lines need local matching (pipeline/retrieval/local/collect.py), '
                       'which this installation lacks: the photos are shown side by side without them.</p>')
        else:
            out.append(lines_note(review))
        for k, c in enumerate(item["candidates"][:5], 1):
            out.append(candidate_view(cat, item, k, c, disabled))
        if not item["candidates"]:
            out.append("<p>No candidate: the catalogue holds no confirmed photo to compare with.</p>")
        return "".join(out)

    def encounter_strip(item: dict) -> str:
        """The encounter's photos: each opens large; each can still be decided alone (the photo view)."""
        figures = "".join(
            f'<figure class="photo"><a href="/photo/{p["hash"]}?h={BIG_HEIGHT}" target="_blank">'
            f'<img src="/photo/{p["hash"]}?h=110" alt="{esc(p["name"])}"></a><br>{esc(p["name"])}'
            f'<br><span class="names">{esc(p["date"] or "")}</span><br>'
            f'<a href="/?view=photo&amp;photo={p["hash"]}">decide alone</a></figure>' for p in item["photos"])
        return (f'<h3 id="encounter" data-photos="{len(item["photos"])}">Encounter {esc(item["encounter"])}: '
                f'{len(item["photos"])} photos, ranked together (each candidate by its best photo); one decision '
                f'applies to each</h3><div class="photos" id="encounter-photos">{figures}</div>')

    def candidate_view(cat: Catalogue, item: dict, k: int, c: dict, disabled: str) -> str:
        digest = c.get("query") or item["hash"]  # the encounter's photo that scored this candidate best
        try:
            current = cat.store.resolve_individual(c["id"])
        except PipelineError:
            current = None  # undone since this ranking: no longer an individual
        photos = cat.store.individual_photos(current) if current else []
        best = next((h for h in c.get("photos", []) if any(p["hash"] == h for p in photos)), None) \
            or (photos[0]["hash"] if photos else None)
        names = {p["hash"]: p["original_name"] for p in photos}
        query_name = next((p["name"] for p in item["photos"] if p["hash"] == digest), item["name"])
        renamed = f' (now <a href="/individual/{quote(current)}">{esc(current)}</a>)' if current and current != c["id"] else ""
        info = (f'<div class="info"><h3>{k}. <a href="/individual/{quote(current or c["id"])}">{esc(c["id"])}</a>{renamed}</h3>'
                f'<div class="score">score <strong>{c["score"]:.3f}</strong></div>'
                f'<div class="names">query: {esc(query_name)}<br>candidate: {esc(names.get(best, "–"))}</div>'
                f'<div>{len(photos)} photo(s)</div>')
        if current:
            info += (f'<form method="post" action="/decide" class="decision">{csrf_field()}'
                     f'{decision_fields(item)}<input type="hidden" name="kind" value="match">'
                     f'<input type="hidden" name="individual" value="{esc(current)}">'
                     f'<button id="match-{k}" data-key="{k}" type="submit"{disabled}><kbd>{k}</kbd> Same as {esc(current)}'
                     f'</button></form>')
        info += "</div>"
        others = [p for p in photos if p["hash"] != best][:OTHER_PHOTOS]
        strip = ""
        if others:
            more = len(photos) - 1 - len(others)
            strip = ('<div class="others">other photos (each opens beside the query): ' + "".join(
                f'<a href="/pair/{digest}/{p["hash"]}?h={BIG_HEIGHT}" target="_blank" title="{esc(p["original_name"])}">'
                f'<img src="/photo/{p["hash"]}?h=40" alt="{esc(p["original_name"])}"></a>' for p in others)
                + (f' <a href="/individual/{quote(current)}">{more} more</a>' if more > 0 else "") + "</div>")
        if best is None:
            return f'<div class="cand" data-whale="{esc(c["id"])}">{info}<p>No photo of this individual.</p></div>'
        pair = f"/pair/{digest}/{best}"
        return (f'<div class="cand" data-whale="{esc(c["id"])}" data-photo="{best}">{info}<div class="visual">'
                f'<a href="#big-{k}"><img class="pair" src="{pair}?h={PAIR_HEIGHT}" '
                f'alt="query beside {esc(names.get(best, ""))}"></a>{strip}</div></div>'
                f'<div class="lightbox" id="big-{k}"><a href="#"><img loading="lazy" src="{pair}?h={BIG_HEIGHT}" '
                f'alt="enlarged pair"></a><div>{esc(query_name)} ↔ {esc(names.get(best, ""))} · '
                f'<a href="{pair}?h={BIG_HEIGHT}&amp;lines=0" target="_blank">without lines</a> · '
                f'<a href="#">close (Esc)</a></div></div>')

    def undo_form() -> str:
        disabled = "" if reviewer() else " disabled"
        return (f'<form method="post" action="/undo">{csrf_field()}<button id="undo" data-key="z" type="submit"'
                f'{disabled}><kbd>z</kbd> Undo my last decision</button></form>')

    def upload_form() -> str:
        return (f'<fieldset><legend>Add photos</legend><form method="post" action="/upload" enctype="multipart/form-data" '
                f'id="upload-form">{csrf_field()}<input type="file" id="photos" name="photos" multiple accept="image/*"> '
                f'<label>Date <input type="date" name="date" id="date"></label> '
                f'<label>Location <input name="location" id="location" size="14" placeholder="lat,lon or place"></label> '
                f'<label>Encounter <input name="encounter" size="8"></label> '
                f'<label>Photographer <input name="photographer" size="12"></label> '
                f'<button type="submit" id="upload">Add to the queue</button></form>'
                f'<div class="names">{", ".join(sorted(IMAGE_SUFFIXES))}; at most {max_upload_mb:g} MB each.</div>'
                f'</fieldset>')

    @app.errorhandler(413)
    def too_large(_):
        return review_page(extra=[("error", f"That upload is too large (at most {max_upload_mb:g} MB a photo, "
                                            f"{MAX_FILES} photos at once).")], status=413)

    @app.get("/")
    def index():
        focus = request.args.get("photo")
        return review_page(focus if focus and HASH.match(focus) else None)

    @app.post("/reviewer")
    def set_reviewer():
        name = " ".join(request.form.get("reviewer", "").split())[:64]
        if not name:
            session.pop("reviewer", None)
            flash("error", "A reviewer needs a name.")
        else:
            session["reviewer"] = name
            flash("info", f"Deciding as {name}.")
        back = request.form.get("back", "/")
        local = back.startswith("/") and not back.startswith(("//", "/\\"))  # never to another site
        return redirect(back if local else "/", 303)

    # ------------------------------------------------------------------------------- changes

    @app.post("/upload")
    def upload():
        files = [f for f in request.files.getlist("photos") if f and f.filename]
        if not files:
            return review_page(extra=[("error", "Choose one or more photos first.")], status=400)
        if len(files) > MAX_FILES:
            return review_page(extra=[("error", f"At most {MAX_FILES} photos at once.")], status=400)
        fields = {k: (request.form.get(k) or "").strip() or None for k in ("date", "location", "encounter", "photographer")}
        cat = review.catalogue()
        notes, added = [], 0
        with tempfile.TemporaryDirectory(prefix="whale-upload-") as tmp:
            for upload in files:
                shown = Path(upload.filename).name or "upload"
                suffix = Path(shown).suffix.lower()
                refused = not_a_photo_type(suffix)
                if refused:
                    notes.append(("error", f"refused {shown}: {refused}"))
                    continue
                # Our own folder and a sanitised name: the catalogue stores the file under its content hash
                # and keeps this name only as a label for reviewers.
                name = secure_filename(shown)
                name = name if name and Path(name).suffix.lower() == suffix else f"upload{suffix}"
                folder = Path(tmp) / uuid.uuid4().hex
                folder.mkdir()
                path = folder / name
                upload.save(path)
                if path.stat().st_size > max_upload_mb * 1024 * 1024:
                    notes.append(("error", f"refused {shown}: larger than {max_upload_mb:g} MB"))
                    continue
                try:
                    result = cat.add([path], **fields)[0]
                except PipelineError as e:
                    reason = str(e).split(": ", 1)[-1] if e.path is not None else str(e)
                    notes.append(("error", f"refused {shown}: {reason}"))
                    continue
                if result.refused:
                    notes.append(("error", f"refused {shown}: {result.refused}"))
                    continue
                added += 1
                top = result.ranking.candidates[0] if result.ranking.candidates else None
                notes.append(("info", f"queued {name}: " + (f"best {top['id']} {top['score']:.3f}, " if top else "")
                              + f"P(new individual) {result.ranking.p_new:.2f}"))
        if any(kind == "error" for kind, _ in notes):
            return review_page(extra=notes, status=200 if added else 400)
        for kind, text in notes:
            flash(kind, text)
        return redirect("/", 303)

    def need_reviewer():
        name = reviewer()
        if not name:
            return None, review_page(extra=[("error", "Set your name (top of the page) before deciding: every "
                                                      "decision names its reviewer.")], status=400)
        return name, None

    @app.post("/decide")
    def decide():
        name, refused = need_reviewer()
        if refused:
            return refused
        photo = request.form.get("photo", "")
        photos = request.form.getlist("photos") or [photo]
        kind = request.form.get("kind", "")
        if not HASH.match(photo) or not all(HASH.match(p) for p in photos) or kind not in DECISIONS:
            return review_page(extra=[("error", "a decision names a photo and one of " + ", ".join(DECISIONS))],
                               status=400)
        individual = (request.form.get("individual") if kind == "match" else
                      (request.form.get("new_id") or "").strip() or None if kind == "new" else None)
        try:
            result = review.catalogue().decide_photos(photos, kind, name, individual)
        except PipelineError as e:
            message = e.message if e.path is not None else str(e)
            conflict = "already decided" in message
            return review_page(None if conflict else photo, extra=[("error", message)], status=409 if conflict else 400)
        what = f"{kind} {result['individual']}" if result["individual"] else kind
        if len(result["photos"]) > 1:
            flash("info", f"{len(result['photos'])} photos of the encounter: {what} (decisions "
                          f"{result['decisions'][0]}–{result['decisions'][-1]} by {name}); z undoes them together")
        else:
            flash("info", f"{result['names'][0]}: {what} (decision {result['decisions'][0]} by {name}); z undoes it")
        return redirect("/", 303)

    @app.post("/undo")
    def undo():
        name, refused = need_reviewer()
        if refused:
            return refused
        try:
            result = review.catalogue().undo(name)
        except PipelineError as e:
            return review_page(extra=[("error", str(e).split(": ", 1)[-1])], status=409)
        together = f" and {len(result['photos']) - 1} more of its encounter" if len(result["photos"]) > 1 else ""
        flash("info", f"undid decision {result['of']} ({result['undid']}){together} by {name}")
        if result["undid"] in DECISIONS and result["photo"]:
            return redirect(f"/?photo={result['photo']}", 303)
        if result["undid"] == "merge":
            return redirect(f"/individual/{quote(result['individual'])}", 303)
        return redirect("/", 303)

    @app.post("/merge")
    def merge():
        name, refused = need_reviewer()
        if refused:
            return refused
        keep, gone = (request.form.get("keep") or "").strip(), (request.form.get("gone") or "").strip()
        if request.form.get("direction") == "other":
            keep, gone = gone, keep
        try:
            result = review.catalogue().merge(keep, gone, name)
        except PipelineError as e:
            return individual_page(keep or gone, extra=[("error", str(e).split(": ", 1)[-1])], status=400)
        flash("info", f"merged {result['gone']} into {result['individual']} ({result['photos']} photo(s) moved; "
                      f"decision {result['decision']} by {name})")
        return redirect(f"/individual/{quote(result['individual'])}", 303)

    @app.post("/split")
    def split():
        name, refused = need_reviewer()
        if refused:
            return refused
        individual = (request.form.get("individual") or "").strip()
        photos = [h for h in request.form.getlist("photos") if HASH.match(h)]
        new_id = (request.form.get("new_id") or "").strip() or None
        try:
            result = review.catalogue().split(individual, photos, name, new_id)
        except PipelineError as e:
            return individual_page(individual, extra=[("error", str(e).split(": ", 1)[-1])], status=400)
        flash("info", f"split {result['photos']} photo(s) of {result['from']} into {result['individual']} "
                      f"(decision {result['decision']} by {name})")
        return redirect(f"/individual/{quote(result['individual'])}", 303)

    # ------------------------------------------------------------------------------- individuals

    @app.get("/individuals")
    def individuals():
        table = review.catalogue().individuals()
        rows = "".join(f'<tr><td><a href="/individual/{quote(str(r.id))}">{esc(r.id)}</a></td><td>{int(r.photos)}</td>'
                       f'<td>{esc(r.aliases or "")}</td></tr>' for r in table.itertuples())
        body = (f'<section class="main"><h2>Individuals ({len(table)})</h2><table class="list" id="individuals">'
                f'<tr><th>id</th><th>photos</th><th>aliases</th></tr>{rows}</table></section>')
        return page("Individuals", body, reviewer(), messages())

    @app.get("/individual/<path:key>")
    def individual(key):
        return individual_page(key)

    def individual_page(key: str, extra=(), status: int = 200):
        cat = review.catalogue()
        try:
            record = cat.individual_record(key)
        except PipelineError as e:
            return page("No such individual", '<section class="main"><a href="/individuals">all individuals</a></section>',
                        reviewer(), messages([*extra, ("error", str(e).split(": ", 1)[-1])]), 404)
        ident = record["id"]
        disabled = "" if reviewer() else " disabled"
        names = {p["hash"]: p["name"] for p in record["photos"]}
        figures = []
        for p in record["photos"]:
            d = p["decision"]
            by = f'{d["kind"]} by {d["reviewer"]} {d["at"]}' if d else p["source"]
            figures.append(f'<figure class="photo"><label><a href="/photo/{p["hash"]}?h={BIG_HEIGHT}" target="_blank">'
                           f'<img src="/photo/{p["hash"]}?h=110" alt="{esc(p["name"])}"></a><br>'
                           f'<input type="checkbox" name="photos" value="{p["hash"]}"> {esc(p["name"])}</label>'
                           f'<br><span class="names">{esc(p["date"] or "")} {esc(p["location"] or "")}<br>{esc(by)}</span>'
                           f'</figure>')
        decision_rows = "".join(
            f'<tr class="{"undone" if d["undone_by"] else ""}"><td>{d["id"]}</td><td>{esc(d["kind"])}</td>'
            f'<td>{esc(names.get(d["photo"], (d["photo"] or "")[:12]))}</td><td>{esc(d["individual_id"])}</td>'
            f'<td>{esc(d["reviewer"])}</td><td>{esc(d["at"])}</td>'
            f'<td>{"undone by " + str(d["undone_by"]) if d["undone_by"] else ""}</td></tr>' for d in record["decisions"])
        aliases = f' (also known as {esc(", ".join(record["aliases"]))})' if record["aliases"] else ""
        body = (f'<section class="main"><h2 id="individual" data-id="{esc(ident)}">{esc(ident)}{aliases}</h2>'
                f'<form method="post" action="/split" id="split-form">{csrf_field()}'
                f'<input type="hidden" name="individual" value="{esc(ident)}">'
                f'<div class="photos" id="photos">{"".join(figures) or "no photos"}</div>'
                f'<p>Split the ticked photos into a new individual <input name="new_id" placeholder="fresh id" size="12"> '
                f'<button type="submit" id="split"{disabled}>Split</button></p></form>'
                f'<form method="post" action="/merge" id="merge-form">{csrf_field()}'
                f'<input type="hidden" name="keep" value="{esc(ident)}">'
                f'Merge with <input name="gone" id="merge-other" size="12" required placeholder="other id"> '
                f'<label><input type="radio" name="direction" value="this" checked> keep {esc(ident)}</label> '
                f'<label><input type="radio" name="direction" value="other"> keep the other id</label> '
                f'<button type="submit" id="merge"{disabled}>Merge</button></form>'
                f'<form method="post" action="/undo">{csrf_field()}<button type="submit" id="undo"{disabled}>'
                f'Undo my last decision</button></form>'
                f'<h3>Decisions</h3><table class="list" id="decisions"><tr><th>#</th><th>kind</th><th>photo</th>'
                f'<th>individual</th><th>reviewer</th><th>at</th><th></th></tr>{decision_rows}</table></section>')
        return page(ident, body, reviewer(), messages(extra), status)

    # ------------------------------------------------------------------------------- pictures

    def picture(make):
        try:
            data = make()
        except PipelineError:
            abort(404)
        return Response(data, content_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400"})

    def height() -> int:
        try:
            return int(request.args.get("h", PAIR_HEIGHT))
        except ValueError:
            abort(400)

    @app.get("/photo/<digest>")
    def photo(digest):
        if not HASH.match(digest):
            abort(404)
        return picture(lambda: review.pictures.photo(digest, height()))

    @app.get("/pair/<query>/<gallery>")
    def pair(query, gallery):
        if not (HASH.match(query) and HASH.match(gallery)):
            abort(404)
        lines = request.args.get("lines", "1") != "0"
        return picture(lambda: review.pictures.pair(query, gallery, height(), lines))

    return app
