"""The review screen (`whale serve --catalogue DIR`, pipeline/web/review.py): a review in headless
Chromium (upload two photos, a match, a new individual, undo, merge, the database afterwards), two
reviewers deciding one photo at once over waitress, the refusals (uploads, a second decision, a
colliding id), and the access token and CSRF checks."""
import http.cookiejar
import io
import re
import threading
import urllib.error
import urllib.request

import pandas as pd
import pytest

from pipeline import columns as C
from pipeline.cli import main
from tests.conftest import bomb_png, catalogue_db as db, headless_chromium, require_browser

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def test_photos(data):
    """A test photo of a known whale and one of an unknown animal (solution.csv): (path, whale), path."""
    solution = pd.read_csv(data / "solution.csv")
    known = solution[solution[C.ID] != C.NEW_WHALE].iloc[0]
    unknown = solution[solution[C.ID] == C.NEW_WHALE].iloc[0]
    return (data / "test" / known[C.IMAGE], known[C.ID]), data / "test" / unknown[C.IMAGE]


test_photos.__test__ = False  # a helper, not a test


class Client:
    """Flask's test client as one reviewer's browser: the session cookie, and the CSRF token of the
    last page."""

    def __init__(self, app, name=None):
        self.http = app.test_client()
        self.csrf = None
        self.get("/")
        if name:
            assert self.post("/reviewer", reviewer=name).status_code == 303

    def get(self, url):
        response = self.http.get(url)
        found = CSRF.search(response.text) if response.mimetype == "text/html" else None
        self.csrf = found.group(1) if found else self.csrf
        return response

    def post(self, url, data=None, **fields):
        data = {**(data or {}), **fields, "csrf": self.csrf}
        response = self.http.post(url, data=data, content_type="multipart/form-data")
        found = CSRF.search(response.text)
        self.csrf = found.group(1) if found else self.csrf
        return response

    def upload(self, *files, **fields):
        return self.post("/upload", {"photos": [(io.BytesIO(b), n) for b, n in files], **fields})


@pytest.fixture()
def app(catalogue):
    from pipeline.web.review import create_review_app

    return create_review_app(catalogue, max_upload_mb=0.5)


def queued(folder):
    with db(folder) as con:
        return [dict(r) for r in con.execute("SELECT * FROM photos WHERE source = 'add' ORDER BY arrival")]


def test_review_with_the_test_client(app, catalogue, trained_tiny):
    """Upload two photos with date and location; the screen shows the first beside five candidates
    (pairs drawn on the server, file names, scores, P(new)); a match, a new individual with an edited
    id, a colliding id refused, undo, merge on the individual's page, the database afterwards."""
    data, _ = trained_tiny
    (known, whale), unknown = test_photos(data)
    ann = Client(app, "ann")
    response = ann.upload((known.read_bytes(), "../../" + known.name), (unknown.read_bytes(), unknown.name),
                          date="2024-06-01", location="64.1,-21.9")
    assert response.status_code == 303
    rows = queued(catalogue)
    assert [r["original_name"] for r in rows] == [known.name, unknown.name]  # a sanitised label, stored by hash
    assert all(r["date"] == "2024-06-01" and r["location"] == "64.1,-21.9" and r["status"] == "pending" for r in rows)
    page = ann.get("/").text
    assert f'data-hash="{rows[0]["hash"]}"' in page and page.count('class="cand"') == 5
    assert "P(new individual)" in page and known.name in page and 'data-key="n"' in page and 'data-key="z"' in page
    pair = re.search(r'src="(/pair/[0-9a-f]+/[0-9a-f]+)\?h=240"', page).group(1)
    image = ann.get(pair + "?h=240")
    assert image.status_code == 200 and image.mimetype == "image/jpeg" and image.data[:2] == b"\xff\xd8"
    assert ann.get(f"/photo/{rows[0]['hash']}?h=100").mimetype == "image/jpeg"
    if app.extensions["whale_review"].lines:  # geometry.inlier_matches: a photo against itself is all matches
        import numpy as np
        from PIL import Image

        same = f"/pair/{rows[0]['hash']}/{rows[0]['hash']}?h=240"
        drawn, bare = (np.asarray(Image.open(io.BytesIO(ann.get(same + extra).data)), dtype=int)
                       for extra in ("", "&lines=0"))
        assert drawn.shape == bare.shape and (np.abs(drawn - bare).max(axis=-1) > 60).sum() > 200
    assert ann.get("/photo/" + "0" * 64).status_code == 404
    candidates = re.findall(r'class="cand" data-whale="([^"]+)"', page)
    target = whale if whale in candidates else candidates[0]
    response = ann.post("/decide", photo=rows[0]["hash"], kind="match", individual=target)
    assert response.status_code == 303
    page = ann.get("/").text  # the next photo at once, and what was decided
    assert f'data-hash="{rows[1]["hash"]}"' in page and f"match {target}" in page
    existing = pd.read_csv(data / "train.csv")[C.ID].iloc[0]
    response = ann.post("/decide", photo=rows[1]["hash"], kind="new", new_id=existing)
    assert response.status_code == 400 and "already an individual or an alias" in response.text
    assert ann.post("/decide", photo=rows[1]["hash"], kind="new", new_id="w_review1").status_code == 303
    assert "Nothing to review" in ann.get("/").text
    assert ann.post("/undo").headers["Location"].endswith(f"/?photo={rows[1]['hash']}")
    assert f'data-hash="{rows[1]["hash"]}"' in ann.get(f"/?photo={rows[1]['hash']}").text
    assert ann.post("/decide", photo=rows[1]["hash"], kind="new", new_id="w_review1").status_code == 303
    page = ann.get(f"/individual/{target}").text
    assert known.name in page and 'id="merge-form"' in page and "ann" in page
    assert ann.post("/merge", keep=target, gone="w_review1").headers["Location"].endswith(f"/individual/{target}")
    page = ann.get("/individual/w_review1").text  # an alias leads to the survivor
    assert f'data-id="{target}"' in page and unknown.name in page and "also known as w_review1" in page
    with db(catalogue) as con:
        photos = {r["original_name"]: (r["status"], r["individual_id"]) for r in con.execute(
            "SELECT * FROM photos WHERE source = 'add'")}
        decisions = [tuple(r) for r in con.execute(
            "SELECT kind, individual_id, reviewer, undone_by IS NOT NULL FROM decisions WHERE reviewer != 'import' "
            "ORDER BY id")]
        alias = con.execute("SELECT individual_id FROM aliases WHERE alias = 'w_review1'").fetchone()[0]
    assert photos == {known.name: ("confirmed", target), unknown.name: ("confirmed", target)}
    assert decisions == [("match", target, "ann", 0), ("new", "w_review1", "ann", 1), ("undo", "w_review1", "ann", 0),
                         ("new", "w_review1", "ann", 0), ("merge", target, "ann", 0)]
    assert alias == target


def test_a_second_reviewer_is_told_who_decided(app, catalogue, trained_tiny):
    data, _ = trained_tiny
    (known, _), _ = test_photos(data)
    ann, bob = Client(app, "ann"), Client(app, "bob")
    assert ann.upload((known.read_bytes(), known.name)).status_code == 303
    digest = queued(catalogue)[0]["hash"]
    assert f'data-hash="{digest}"' in bob.get("/").text  # both have it on screen
    assert ann.post("/decide", photo=digest, kind="unsure").status_code == 303
    # unsure leaves it open: bob may still decide it; then ann's late junk is refused, naming bob.
    assert bob.post("/decide", photo=digest, kind="new").status_code == 303
    late = ann.post("/decide", photo=digest, kind="junk")
    assert late.status_code == 409 and "already decided: new" in late.text and "by bob" in late.text
    with db(catalogue) as con:
        kinds = [tuple(r) for r in con.execute("SELECT kind, reviewer FROM decisions WHERE photo = ? ORDER BY id",
                                               (digest,))]
    assert kinds == [("unsure", "ann"), ("new", "bob")]
    # Without a name nothing is decided.
    anonymous = Client(app)
    response = anonymous.post("/decide", photo=digest, kind="junk")
    assert response.status_code == 400 and "Set your name" in response.text


def test_an_encounter_is_one_item_on_the_page_decided_and_undone_together(app, catalogue, tmp_path):
    """Two photos one camera took a minute apart (EXIF), uploaded one by one, and a third taken later:
    the page shows the pair as one item (both photos, facts from the camera, candidates ranked over
    both), one decision covers both photos, and undo takes both back; ?view=photo shows them alone."""
    from tests.conftest import exif_photo

    photos = [exif_photo(tmp_path / f"IMG_{k}.JPG", taken, (64.1, -21.95), seed=k)
              for k, taken in enumerate(("2024:06:01 10:00:00", "2024:06:01 10:01:00", "2024:06:01 15:00:00"))]
    ann = Client(app, "ann")
    for photo in photos:
        assert ann.upload((photo.read_bytes(), photo.name)).status_code == 303
    rows = queued(catalogue)
    assert rows[0]["encounter"] == rows[1]["encounter"] != rows[2]["encounter"]
    page = ann.get("/").text
    assert 'id="encounter" data-photos="2"' in page and "IMG_0.JPG" in page and "IMG_1.JPG" in page
    assert "2024-06-01T10:00:00 (camera)" in page and "64.100000,-21.950000 (camera GPS)" in page
    assert "Canon EOS 7D #0123" in page and "(by time gap)" in page
    pairs = set(re.findall(r'src="/pair/([0-9a-f]+)/[0-9a-f]+\?h=240"', page))
    assert pairs and pairs <= {rows[0]["hash"], rows[1]["hash"]}  # each pair drawn from the photo that scored it
    assert page.count(f'name="photos" value="{rows[1]["hash"]}"') == page.count('class="decision"') > 0
    response = ann.post("/decide", {"photos": [rows[0]["hash"], rows[1]["hash"]]}, photo=rows[0]["hash"], kind="junk")
    assert response.status_code == 303
    page = ann.get("/").text
    assert "2 photos of the encounter: junk" in page and f'data-hash="{rows[2]["hash"]}"' in page
    assert [r["status"] for r in queued(catalogue)] == ["junk", "junk", "pending"]
    assert ann.post("/undo").status_code == 303
    assert "and 1 more of its encounter" in ann.get("/").text
    assert [r["status"] for r in queued(catalogue)] == ["pending", "pending", "pending"]
    single = ann.get("/?view=photo").text
    assert 'id="encounter"' not in single and 'id="view-encounter"' in single
    assert 'type="hidden" name="photos"' not in single and f'data-hash="{rows[0]["hash"]}"' in single


@pytest.mark.parametrize("payload, name, message", [
    (b"not an image", "x.jpg", "cannot decode image"),
    ("bomb", "huge.png", "exceeds limit"),
    (b"#!/bin/sh", "x.sh", "is not a photo type"),
    (b"0" * 600_000, "big.jpg", "larger than 0.5 MB"),
])
def test_uploads_refused_with_the_reason(app, catalogue, payload, name, message):
    ann = Client(app, "ann")
    payload = bomb_png() if payload == "bomb" else payload
    response = ann.upload((payload, name))
    assert response.status_code == 400 and message in response.text and "Traceback" not in response.text
    assert not queued(catalogue)


def test_posts_need_the_csrf_token_and_a_same_origin(app):
    ann = Client(app, "ann")
    assert ann.http.post("/reviewer", data={"reviewer": "eve"}).status_code == 403  # no token in the form
    response = ann.http.post("/reviewer", data={"reviewer": "eve", "csrf": ann.csrf},
                             headers={"Origin": "http://evil.example"})
    assert response.status_code == 403 and "cross-site" in response.text
    response = ann.http.post("/reviewer", data={"reviewer": "eve", "csrf": ann.csrf},
                             headers={"Referer": "http://evil.example/page"})
    assert response.status_code == 403
    assert ann.http.post("/reviewer", data={"reviewer": "eve", "csrf": ann.csrf},
                         headers={"Origin": "http://localhost"}).status_code == 303
    response = ann.post("/reviewer", reviewer="ann", back="//evil.example/")
    assert response.status_code == 303 and response.headers["Location"] == "/"  # never to another site
    # Bound to loopback, a request for another host name (DNS rebinding) is refused.
    assert app.test_client().get("/", base_url="http://evil.example/").status_code == 400


class Browserless:
    """urllib with its own cookies: one reviewer's client of a real server."""

    def __init__(self, base, headers=None):
        self.base, self.csrf = base, None
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        self.headers = headers or {}

    def request(self, path, fields=None, headers=None, follow=True):
        from urllib.parse import urlencode

        data = None
        if fields is not None:
            data = urlencode({**fields, **({"csrf": self.csrf} if self.csrf else {})}).encode()
        req = urllib.request.Request(self.base + path, data=data, headers={**self.headers, **(headers or {})})
        opener = self.opener if follow else urllib.request.build_opener(
            NoRedirect, *[h for h in self.opener.handlers if isinstance(h, urllib.request.HTTPCookieProcessor)])
        try:
            with opener.open(req, timeout=60) as response:
                status, body, heads = response.status, response.read(), response.headers
        except urllib.error.HTTPError as e:
            status, body, heads = e.code, e.read(), e.headers
        text = body.decode("utf-8", "replace")
        found = CSRF.search(text)
        self.csrf = found.group(1) if found else self.csrf
        return status, text, heads


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def start_waitress(app, threads=4):
    """`app` on a waitress server on 127.0.0.1 (a free port), in a thread: (base address, stop)."""
    import waitress

    server = waitress.create_server(app, host="127.0.0.1", port=0, threads=threads)
    stopping = threading.Event()

    def run():
        try:
            server.run()
        except (OSError, ValueError):  # its sockets closed under select() by stop(): the way it ends
            if not stopping.is_set():
                raise

    threading.Thread(target=run, daemon=True).start()

    def stop():
        stopping.set()
        server.task_dispatcher.shutdown()
        server.close()

    return f"http://127.0.0.1:{server.effective_port}", stop


@pytest.fixture()
def served(catalogue):
    """The review app behind a real waitress server on 127.0.0.1 (a free port); yields a function
    that starts one with the given options and returns its base address."""
    from pipeline.web.review import create_review_app

    stops = []

    def start(**options):
        app = create_review_app(catalogue, **options)
        base, stop = start_waitress(app)
        stops.append(stop)
        return base, app

    yield start
    for stop in stops:
        stop()


def test_two_concurrent_decisions_on_one_photo_leave_exactly_one(served, catalogue, trained_tiny):
    """Two reviewers post a decision on the same photo at the same moment (two threads, two
    connections to a waitress server with several threads): one decision is recorded, the other
    reviewer is told who made it."""
    data, _ = trained_tiny
    (known, _), _ = test_photos(data)
    base, app = served()
    from pipeline.catalogue.catalogue import Catalogue

    Catalogue.open(catalogue).add([known])
    digest = queued(catalogue)[0]["hash"]
    clients = {name: Browserless(base) for name in ("ann", "bob")}
    for name, client in clients.items():
        client.request("/")
        assert client.request("/reviewer", {"reviewer": name})[0] == 200  # after the redirect
    barrier, results = threading.Barrier(2), {}

    def decide(name):
        barrier.wait()
        results[name] = clients[name].request("/decide", {"photo": digest, "kind": "new"}, follow=False)

    threads = [threading.Thread(target=decide, args=(n,)) for n in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    statuses = sorted(r[0] for r in results.values())
    assert statuses == [303, 409], statuses
    winner = next(n for n, r in results.items() if r[0] == 303)
    loser = next(n for n, r in results.items() if r[0] == 409)
    assert "already decided: new" in results[loser][1] and f"by {winner}" in results[loser][1]
    with db(catalogue) as con:
        rows = con.execute("SELECT kind, reviewer FROM decisions WHERE photo = ?", (digest,)).fetchall()
        individuals = con.execute("SELECT COUNT(*) FROM individuals WHERE created_by IN ('ann', 'bob')").fetchone()[0]
    assert [tuple(r) for r in rows] == [("new", winner)] and individuals == 1


def test_off_loopback_every_request_needs_the_token(served):
    """What binding to another address turns on (require_token), served on 127.0.0.1: no token or a
    wrong one is refused; ?token= sets an HttpOnly cookie and cleans the address; a Bearer header
    works; a cross-site POST is refused even with the token and the form's CSRF token."""
    token = "correct-horse-battery-staple"
    base, _ = served(require_token=True, token=token, loopback_hosts=False)
    stranger = Browserless(base)
    status, text, _ = stranger.request("/")
    assert status == 401 and "access token" in text
    assert stranger.request("/?token=wrong-token-of-some-length")[0] == 401
    assert stranger.request("/individuals", headers={"Authorization": "Bearer nope"})[0] == 401
    assert stranger.request("/reviewer", {"reviewer": "eve"})[0] == 401
    assert Browserless(base).request("/individuals", headers={"Authorization": f"Bearer {token}"})[0] == 200
    ann = Browserless(base)
    status, _, headers = ann.request(f"/?token={token}", follow=False)
    cookie = headers.get("Set-Cookie", "")
    assert status == 303 and headers["Location"] == "/" and "HttpOnly" in cookie and "whale_token=" in cookie
    status, text, _ = ann.request("/")  # the cookie from now on
    assert status == 200 and "Whale catalogue review" in text and ann.csrf
    status, text, _ = ann.request("/reviewer", {"reviewer": "ann"}, headers={"Origin": "http://evil.example"},
                                  follow=False)
    assert status == 403 and "cross-site" in text
    assert ann.request("/reviewer", {"reviewer": "ann"}, headers={"Origin": base}, follow=False)[0] == 303
    ann.csrf = "forged"
    assert ann.request("/reviewer", {"reviewer": "ann"}, headers={"Origin": base}, follow=False)[0] == 403


def test_serve_turns_the_token_on_off_loopback_and_prints_it_once(catalogue_base, monkeypatch, capsys):
    import waitress

    served = []
    monkeypatch.setattr(waitress, "serve", lambda app, **kw: served.append((app, kw)))
    assert main(["serve", "--catalogue", str(catalogue_base), "--host", "192.0.2.10", "--port", "8123"]) == 0
    out = capsys.readouterr().out
    app, options = served[-1]
    assert options["host"] == "192.0.2.10" and options["threads"] >= 2
    token = re.search(r"\?token=(\S+)", out).group(1)
    assert out.count(token) == 1 and len(token) >= 16
    client = app.test_client()
    assert client.get("/", base_url="http://192.0.2.10:8123/").status_code == 401
    assert client.get("/", base_url="http://192.0.2.10:8123/", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert main(["serve", "--catalogue", str(catalogue_base)]) == 0  # localhost: no token
    app, options = served[-1]
    assert options["host"] == "127.0.0.1" and "token" not in capsys.readouterr().out
    assert app.test_client().get("/").status_code == 200


def test_review_in_headless_chromium(catalogue, trained_tiny, tmp_path):
    """The issue's review, driven as a reviewer would: the name once, two photos uploaded together with a
    date and place, key 1 (same as candidate 1), an edited id and `n`, `z` (undo), `n` again, then on
    the individual's page a merge; the database afterwards. Also times decisions and saves a screenshot."""
    require_browser()  # before anything starts: a skip here, or a failure in CI
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    from pipeline.web.review import create_review_app

    data, _ = trained_tiny
    (known, _), unknown = test_photos(data)
    base, stop = start_waitress(create_review_app(catalogue))
    browser = headless_chromium("1400,1000")
    wait = WebDriverWait(browser, 60)

    def showing(name):
        wait.until(EC.text_to_be_present_in_element((By.ID, "query-name"), name))

    def key(k):
        ActionChains(browser).send_keys(k).perform()

    try:
        browser.get(base + "/")
        browser.find_element(By.ID, "reviewer").send_keys("ann")
        browser.find_element(By.ID, "set-reviewer").click()
        wait.until(EC.text_to_be_present_in_element((By.ID, "messages"), "Deciding as ann"))
        browser.find_element(By.ID, "photos").send_keys(f"{known}\n{unknown}")
        browser.execute_script("document.getElementById('date').value = '2024-06-01'")
        browser.find_element(By.ID, "location").send_keys("64.1,-21.9")
        browser.find_element(By.ID, "upload").click()
        showing(known.name)
        wait.until(lambda b: b.execute_script(  # every pair drawn on the server has arrived
            "return [...document.querySelectorAll('img.pair')].every(i => i.complete && i.naturalWidth > 0)"))
        assert len(browser.find_elements(By.CSS_SELECTOR, ".cand")) == 5
        browser.save_screenshot(str(tmp_path / "review.png"))
        first = browser.find_element(By.CSS_SELECTOR, ".cand").get_attribute("data-whale")
        key("1")  # same as candidate 1
        showing(unknown.name)
        new_id = browser.find_element(By.ID, "new-id")
        new_id.clear()
        new_id.send_keys("w_browser")
        browser.find_element(By.TAG_NAME, "body").click()
        key("n")
        wait.until(EC.presence_of_element_located((By.ID, "empty")))
        key("z")  # undo: the photo is back
        showing(unknown.name)
        new_id = browser.find_element(By.ID, "new-id")
        new_id.clear()
        new_id.send_keys("w_browser")
        browser.find_element(By.ID, "decide-new").click()
        wait.until(EC.presence_of_element_located((By.ID, "empty")))
        browser.get(f"{base}/individual/{first}")
        browser.find_element(By.ID, "merge-other").send_keys("w_browser")
        browser.find_element(By.ID, "merge").click()
        wait.until(EC.text_to_be_present_in_element((By.ID, "messages"), "merged w_browser into"))
        assert unknown.name in browser.find_element(By.ID, "photos").text
        with db(catalogue) as con:
            photos = {r["original_name"]: (r["status"], r["individual_id"], r["date"], r["location"])
                      for r in con.execute("SELECT * FROM photos WHERE source = 'add'")}
            kinds = [tuple(r) for r in con.execute("SELECT kind, reviewer, undone_by IS NOT NULL FROM decisions "
                                                   "WHERE reviewer != 'import' ORDER BY id")]
            alias = con.execute("SELECT individual_id FROM aliases WHERE alias = 'w_browser'").fetchone()
        assert photos == {known.name: ("confirmed", first, "2024-06-01", "64.1,-21.9"),
                          unknown.name: ("confirmed", first, "2024-06-01", "64.1,-21.9")}
        assert kinds == [("match", "ann", 0), ("new", "ann", 1), ("undo", "ann", 0), ("new", "ann", 0),
                         ("merge", "ann", 0)]
        assert alias is not None and alias[0] == first
        assert (tmp_path / "review.png").stat().st_size > 10_000
    finally:
        browser.quit()
        stop()
