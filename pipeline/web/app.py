"""Flask app of `whale serve --work WORK`: GET / shows the upload form; POST /identify checks the upload
(size, type, that it decodes), stores it under WORK/uploads/ with a generated name, and shows the top
five with thumbnails. Nothing the user sends chooses a path: uploaded names are never used on disk.
The review screen over a catalogue (`whale serve --catalogue DIR`) is web/review.py; both pages sit
behind web/security.py (loopback host check, access token off loopback, CSRF)."""
from __future__ import annotations

import html
import uuid
from pathlib import Path

from flask import Flask, request

from pipeline.errors import PipelineError
from pipeline.io.layout import not_a_photo_type
from pipeline.io.paths import uploads_dir
from pipeline.reporting.images import jpeg_uri

PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>Which whale is this?</title><style>
body{{font-family:system-ui,sans-serif;margin:2em;max-width:1000px}}
.cands{{display:flex;gap:10px;flex-wrap:wrap}}figure{{margin:0;text-align:center;font-size:13px}}
img{{height:110px;border:1px solid #ccc}}.nw{{height:110px;width:160px;display:flex;align-items:center;
justify-content:center;background:#eee}}.error{{color:#b00}}</style></head><body>
<h1>Which whale is this?</h1>
<form action="/identify" method="post" enctype="multipart/form-data">{csrf}
<input type="file" id="photo" name="photo" accept="image/*"> <button id="submit" type="submit">Identify</button>
</form>{body}</body></html>"""


def create_app(work: str | Path, models: list[str], threshold: float | None = None, max_upload_mb: float = 10.0,
               require_token: bool = False, token: str | None = None, loopback_hosts: bool = True):
    """`require_token`, `loopback_hosts`: see web/security.py (serve sets them from the address it binds)."""
    import threading

    from pipeline.identify import Identifier
    from pipeline.web.security import csrf_field, protect

    work = Path(work)
    identifier = Identifier(work, models, threshold)
    uploads = uploads_dir(work)
    uploads.mkdir(parents=True, exist_ok=True)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = int(max_upload_mb * 1024 * 1024)
    protect(app, require_token=require_token, token=token, loopback_hosts=loopback_hosts)
    lock = threading.Lock()  # the server's threads share one identifier

    def page(body: str, status: int = 200):
        return PAGE.format(body=body, csrf=csrf_field()), status

    @app.errorhandler(413)
    def too_large(_):
        return page(f'<p class="error">That file is larger than {max_upload_mb:g} MB.</p>', 413)

    @app.get("/")
    def index():
        return page(f"<p>Models: {html.escape(', '.join(models))}. Upload a photo of a fluke.</p>")

    @app.post("/identify")
    def identify():
        upload = request.files.get("photo")
        if upload is None or upload.filename == "":
            return page('<p class="error">Choose a photo first.</p>', 400)
        suffix = Path(upload.filename).suffix.lower()
        refused = not_a_photo_type(suffix)
        if refused:
            return page(f'<p class="error">{html.escape(refused)}.</p>', 400)
        path = uploads / f"{uuid.uuid4().hex}{suffix}"  # our name, inside WORK/uploads: never the user's
        upload.save(path)
        try:
            photo = identifier.load_photo(path)
        except PipelineError as e:
            path.unlink(missing_ok=True)
            reason = str(e).split(": ", 1)[-1]  # the reason, without our generated file name
            return page(f'<p class="error">That file could not be read as an image: {html.escape(reason)}</p>', 400)
        with lock:
            result = identifier.identify([photo], [upload.filename])[0]
        cells = [f'<figure class="query"><img src="{jpeg_uri(photo, 110)}"><figcaption>your photo</figcaption></figure>']
        for rank, c in enumerate(result.candidates, 1):
            if c.photos:
                body = f'<img src="{jpeg_uri(identifier.load_photo(c.photos[0]), 110)}">'
            else:
                body = f'<div class="nw">{html.escape(c.whale)}</div>'
            score = "" if c.score is None else f" {c.score:.3f}"
            cells.append(f'<figure class="candidate" data-whale="{html.escape(c.whale)}">{body}'
                         f"<figcaption>{rank}. {html.escape(c.whale)}{score}</figcaption></figure>")
        return page(f'<h2>Top five for {html.escape(upload.filename)}</h2><div class="cands">{"".join(cells)}</div>')

    return app
