"""For people: `whale identify`, the HTML report and the local web page (in headless Chromium when
it is installed)."""
import json
import shutil
import threading
from pathlib import Path

import pandas as pd
import pytest

from pipeline.cli import main


def known_train_photo(data):
    train = pd.read_csv(data / "train.csv")
    row = train[train["Id"] != "new_whale"].iloc[0]
    return data / "train" / row["Image"], row["Id"]


def test_identify_json_puts_the_true_whale_in_the_five(trained_tiny, capsys):
    data, work = trained_tiny
    photo, whale = known_train_photo(data)
    assert main(["identify", str(photo), "--work", str(work), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    top5 = out["results"][0]["top5"]
    assert len(top5) == 5 and len({c["id"] for c in top5}) == 5
    assert whale in [c["id"] for c in top5]
    best = next(c for c in top5 if c["id"] == whale)
    assert best["photos"] and all(Path(p).exists() for p in best["photos"])


def test_identify_unreadable_photo(trained_tiny, tmp_path, capsys):
    _, work = trained_tiny
    bad = tmp_path / "bad.jpg"
    bad.write_text("no")
    assert main(["identify", str(bad), "--work", str(work)]) == 2
    assert "bad.jpg: cannot decode image" in capsys.readouterr().err


def test_identify_refuses_a_decompression_bomb_in_one_line(trained_tiny, tmp_path, capsys):
    from tests.conftest import bomb_png

    _, work = trained_tiny
    bomb = tmp_path / "huge.png"
    bomb.write_bytes(bomb_png())
    assert main(["identify", str(bomb), "--work", str(work)]) == 2
    err = capsys.readouterr().err
    assert "huge.png: refused" in err and "Pillow's limit" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_report_has_every_section(trained_tiny):
    data, work = trained_tiny
    assert main(["report", "--work", str(work), "--folds-file", str(work / "folds.csv")]) == 0
    text = (work / "reports" / "report.html").read_text()
    for section in ('id="cv"', 'id="threshold"', 'id="training"', 'id="embeddings"', 'id="queries"'):
        assert section in text, section
    assert "demo_triplet" in text and text.count("data:image/") > 20  # plots and thumbnails are inline
    assert "src=\"http" not in text  # self-contained


@pytest.fixture()
def client(trained_tiny):
    from pipeline.web.app import create_app

    _, work = trained_tiny
    app = create_app(work, ["demo_triplet"], max_upload_mb=0.5)
    return app.test_client(), work


def test_web_upload_shows_the_true_whale(client, trained_tiny):
    client, work = client
    data, _ = trained_tiny
    photo, whale = known_train_photo(data)
    with open(photo, "rb") as f:
        response = client.post("/identify", data={"photo": (f, "../../evil name.jpg")},
                               content_type="multipart/form-data")
    assert response.status_code == 200
    assert f'data-whale="{whale}"' in response.text
    assert response.text.count('class="candidate"') == 5
    saved = list((work / "uploads").iterdir())
    assert saved and all(p.parent == work / "uploads" and "evil" not in p.name for p in saved)


@pytest.mark.parametrize("payload, name, status, message", [
    (b"not an image", "x.jpg", 400, "could not be read as an image"),
    ("bomb", "huge.png", 400, "exceeds limit"),
    (b"#!/bin/sh", "x.sh", 400, "is not a photo type"),
    (b"0" * 600_000, "big.jpg", 413, "larger than 0.5 MB"),
])
def test_web_rejects_bad_uploads(client, payload, name, status, message):
    import io

    from tests.conftest import bomb_png

    client, work = client
    payload = bomb_png() if payload == "bomb" else payload
    response = client.post("/identify", data={"photo": (io.BytesIO(payload), name)},
                           content_type="multipart/form-data")
    assert response.status_code == status and message in response.text


def browser_paths():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return chromium, driver


@pytest.mark.skipif(None in browser_paths(), reason="no chromium/chromedriver (Debian packages chromium, "
                                                    "chromium-driver); .ci/run installs them")
def test_web_page_in_headless_chromium(trained_tiny):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait
    from werkzeug.serving import make_server

    from pipeline.web.app import create_app

    data, work = trained_tiny
    server = make_server("127.0.0.1", 0, create_app(work, ["demo_triplet"]))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    chromium, driver_path = browser_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1100,700"):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        browser.get(f"http://127.0.0.1:{server.server_port}/")
        photo, whale = known_train_photo(data)
        browser.find_element(By.ID, "photo").send_keys(str(photo))
        browser.find_element(By.ID, "submit").click()
        WebDriverWait(browser, 60).until(EC.presence_of_element_located((By.CSS_SELECTOR, ".candidate")))
        shown = [e.get_attribute("data-whale") for e in browser.find_elements(By.CSS_SELECTOR, ".candidate")]
        assert len(shown) == 5 and whale in shown
        browser.save_screenshot(str(work / "reports" / "web_page.png"))
        assert (work / "reports" / "web_page.png").stat().st_size > 1000
    finally:
        browser.quit()
        server.shutdown()
