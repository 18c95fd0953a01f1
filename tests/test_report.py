"""`seg-xai report`: the static report of explain / evaluate / bench output folders.

The files are checked in Python (everything local, maps exactly as stored, every image listed),
then the pages in headless Chromium (Debian's `chromium` + `chromium-driver`, driven by selenium):
no JavaScript error, every image listed, switching the class changes the picture, the value under
the cursor equals load_explanation's. The browser tests skip when Chromium is absent, except under
CI=true, where they fail: CI must run them.
"""
import base64
import json
import os
import re
import shutil
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import seg_xai_fast as sx
from seg_xai_fast.apps.report import build_report
from seg_xai_fast.apps.report.html import parse_bench_text
from seg_xai_fast.apps.bench import format_table
from seg_xai_fast.cli import main as cli_main
from seg_xai_fast.apps.batch.store import expand_maps, load_explanation, read_manifest

# Inputs of the small run: name → (height, width). Small PNGs are their own thumbnails; the larger
# JPEG (stored landscape, EXIF-rotated to portrait) gets a thumbnail, the TIFF a thumbnail and a PNG
# copy (browsers can't show TIFF).
GOOD = {"a.png": (64, 64), "b.png": (64, 64), "sub/wide.png": (48, 72), "odd name & <b>.png": (64, 64),
        "scan.tif": (64, 64), "big.jpg": (200, 336)}
MADE_THUMBS = {"scan.tif", "big.jpg"}
BAD = "broken.png"


@pytest.fixture(scope="module")
def explained(tmp_path_factory):
    """A real `seg-xai explain` output folder (trained demo model, overlays saved, one failure)."""
    root = tmp_path_factory.mktemp("report-inputs")
    (root / "sub").mkdir()
    for i, (name, (h, w)) in enumerate(GOOD.items()):
        images, _ = sx.synthetic_scenes(1, seed=100 + i, size=(h, w))
        picture = Image.fromarray((images[0].permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8))
        exif = Image.Exif()
        if name.endswith(".jpg"):
            exif[0x0112] = 6  # Orientation: rotate 90° clockwise to display
        picture.save(root / name, **({"exif": exif, "quality": 95} if name.endswith(".jpg") else {}))
    (root / BAD).write_text("not a PNG\n")
    out = tmp_path_factory.mktemp("report-out") / "xai"
    rc = cli_main(["explain", str(root), "--out", str(out), "--runtime", "torch", "--workers", "0",
                       "--save", "maps,overlays", "--no-progress"])
    assert rc == 3  # finished, with the broken file in failures.csv
    return out, root


@pytest.fixture(scope="module")
def report(explained):
    out, _ = explained
    return build_report(out, workers=0)


def _data(dest: Path, file: str, name: str = None):
    """The value that the data script data/<file>.js assigns to SXD[name] (name: file)."""
    text = (dest / "data" / f"{file}.js").read_text(encoding="utf-8")
    prefix = f"(window.SXD=window.SXD||{{}})[{json.dumps(name or file)}]="
    assert text.startswith(prefix) and text.endswith(";\n"), text[:120]
    return json.loads(text[len(prefix):-2])


def _entries(out):
    _, entries = read_manifest(out)
    return sorted(entries, key=lambda e: e["input"])


# --------------------------------------------------------------------------- files


def test_every_image_is_listed_in_input_order_with_its_predicted_labels(explained, report):
    out, root = explained
    dest = report.parent
    run = _data(dest, "run")
    assert run["count"] == len(GOOD) and run["pages"] == 1 and run["failures"] == 1
    assert run["header"]["method"] == "gradcam" and run["root"] == str(root)
    rows = _data(dest, "pages/1")
    assert [r["name"] for r in rows] == sorted(GOOD, key=lambda n: str(root / n))
    for row, entry in zip(rows, _entries(out)):
        assert row["key"] == entry["key"] and row["size"] == entry["size"]
        with np.load(out / entry["maps"]) as data:
            # Grad-CAM gives an all-zero map exactly to the classes predicted nowhere.
            maps = data["maps"][entry["member"]]  # the image's maps in its batch's file
            assert row["predicted"] == [int(c) for c, m in zip(data["classes"], maps) if m.max() > 0]
        if row["name"] in MADE_THUMBS:
            assert row["thumb"] == f"thumbs/{row['key'][:2]}/{row['key']}.jpg"
            h, w = row["size"]  # as explained: after the EXIF rotation
            tw, th = Image.open(dest / row["thumb"]).size
            assert max(tw, th) == min(160, max(h, w)) and abs(tw / th - w / h) < 0.02, (row["name"], tw, th)
        else:
            assert row["thumb"] == Path(entry["input"]).as_uri()
    assert next(r for r in rows if r["name"] == "big.jpg")["size"] == [336, 200]  # portrait after EXIF
    assert any(len(r["predicted"]) < 4 for r in rows) and all(r["predicted"] for r in rows)


def test_image_data_hold_the_stored_maps_exactly(explained, report):
    out, root = explained
    dest = report.parent
    entries = _entries(out)
    assert len(entries) == len(GOOD) and any(e["input"].endswith(".tif") for e in entries)
    for entry in entries:
        key = entry["key"]
        rec = _data(dest, f"img/{key[:2]}/{key}", f"img/{key}")
        with np.load(out / entry["maps"]) as data:
            stored, classes = data["maps"][entry["member"]], data["classes"].tolist()
            assert rec["map_size"] == data["map_size"].tolist() and rec["size"] == data["image_size"].tolist()
        planes = np.frombuffer(zlib.decompress(base64.b64decode(rec["maps"])), np.uint8).reshape(2, -1)
        maps = np.ascontiguousarray(planes.T).view("<f2").reshape(rec["shape"])  # low bytes, then high bytes
        assert np.array_equal(maps, stored) and rec["classes"] == classes and rec["input"] == entry["input"]
        assert (dest / rec["maps_file"]).resolve() == (out / entry["maps"]).resolve()
        assert rec["maps_member"] == entry["member"]
        assert [(dest / o).resolve() for o in rec["overlays"]] == [(out / o).resolve() for o in entry["overlays"]]
        if entry["input"].endswith(".tif"):  # a PNG copy the browser can show, at the explained size
            assert rec["url"].startswith("view/") and Image.open(dest / rec["url"]).size == tuple(entry["size"][::-1])
        else:
            assert rec["url"] == Path(entry["input"]).as_uri()


def test_read_npz_equals_np_load(tmp_path):
    """The fast reader on the store's arrays and on kinds it hands to numpy (Fortran order, strings)."""
    from seg_xai_fast.apps.report.build import read_npz

    rng = np.random.default_rng(0)
    arrays = {"maps": rng.random((3, 7, 5)).astype(np.float16), "classes": np.arange(3, dtype=np.int64),
              "scalar": np.array(2.5), "empty": np.zeros((0, 4), np.uint8), "big_endian": np.arange(4, dtype=">i4"),
              "fortran": np.asfortranarray(rng.random((3, 4))), "text": np.array("{'descr': '<f2'}"),
              "flags": np.array([True, False])}
    np.savez(tmp_path / "a.npz", **arrays)
    got = read_npz(tmp_path / "a.npz", list(arrays))
    for name, want in arrays.items():
        assert got[name].dtype == want.dtype and got[name].shape == want.shape and np.array_equal(got[name], want), name
    with pytest.raises(KeyError):
        read_npz(tmp_path / "a.npz", ["nope"])


def test_pages_are_static_and_local(report):
    """Nothing from the network; every local link and script of the pages exists."""
    dest = report.parent
    pages = sorted(dest.glob("*.html"))
    assert [p.name for p in pages] == ["failures.html", "image.html", "index.html"]
    for path in pages + sorted((dest / "static").iterdir()):
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"(https?:)?//[a-z]", text.replace("file://", "")), f"network reference in {path.name}"
        for ref in re.findall(r'(?:src|href)="([^"#]+)"', text):
            assert (dest / ref).is_file(), f"{path.name} links to missing {ref}"
    assert not list(dest.rglob("*.tmp")), "temp files left behind"


def test_failures_page_data(explained, report):
    out, root = explained
    rows = _data(report.parent, "failures/1")
    assert [Path(p).name for p, _ in rows] == [BAD] and "UnidentifiedImageError" in rows[0][1]


def test_pagination_a_vanished_and_a_damaged_maps_file(explained, tmp_path, capsys, monkeypatch):
    out, root = explained
    copy = tmp_path / "xai"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("report"))
    entries = _entries(copy)
    batches = {}  # maps file → the images it holds (a batch's images share one file)
    for e in entries:
        batches.setdefault(e["maps"], []).append(e["key"])
    gone_file, damaged_file = list(batches)[1], list(batches)[2]
    (copy / gone_file).unlink()  # a crash left the manifest lines without their file: not explained
    moved = next(e for e in entries if e["maps"] not in (gone_file, damaged_file))
    # its input is gone since: the thumbnail of its first overlay, no picture
    manifest = (copy / "manifest.jsonl").read_text().replace(json.dumps(moved["input"]), json.dumps("/nowhere/x.png"))
    (copy / "manifest.jsonl").write_text(manifest)
    (copy / damaged_file).write_bytes(b"not a zip file")
    monkeypatch.setattr("seg_xai_fast.apps.report.build.POOL_MIN_IMAGES", 1)  # the process pool, as for big runs
    index = build_report(copy, page_size=2, workers=2)
    damaged = batches[damaged_file]
    assert (f"the maps of {len(damaged)} images could not be read and are left out, e.g. {damaged_file}"
            in capsys.readouterr().err)
    dest = index.parent
    run = _data(dest, "run")
    left_out = batches[gone_file] + damaged
    assert run["count"] == len(GOOD) - len(left_out) and run["page_size"] == 2
    assert run["pages"] == (run["count"] + 1) // 2
    rows = [r for p in range(1, run["pages"] + 1) for r in _data(dest, f"pages/{p}")]
    assert [r["key"] for r in rows] == [e["key"] for e in _entries(copy) if e["key"] not in left_out]
    row = next(r for r in rows if r["key"] == moved["key"])
    assert row["thumb"].startswith("thumbs/") and (dest / row["thumb"]).is_file()
    key = moved["key"]
    assert _data(dest, f"img/{key[:2]}/{key}", f"img/{key}")["url"] is None


def test_cli_report_open_and_errors(explained, tmp_path, monkeypatch, capsys):
    out, _ = explained
    opened = []
    monkeypatch.setattr("webbrowser.open", opened.append)
    assert cli_main(["report", str(out), "--dest", str(tmp_path / "r"), "--open", "--no-progress",
                     "--workers", "0"]) == 0
    index = tmp_path / "r" / "index.html"
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(index)
    assert opened == [index.resolve().as_uri()]
    assert cli_main(["report", str(tmp_path / "nowhere"), "--no-progress"]) == 2
    assert "out_dir must be an existing folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert cli_main(["report", str(tmp_path / "empty"), "--no-progress"]) == 2
    assert "holds no report source: expected manifest.jsonl" in capsys.readouterr().err
    with pytest.raises(ValueError, match="page_size must be a positive int, got 0"):
        build_report(out, dest=tmp_path / "x", page_size=0)


def _evaluate_folder(folder: Path) -> Path:
    """metrics.json, metrics.csv and curves.png written by `seg-xai evaluate --out`'s own writer."""
    from seg_xai_fast.apps.evaluate import write_outputs
    from seg_xai_fast.metrics import METRIC_KEYS

    results = {}
    for i, method in enumerate(("gradcam", "gradcam++")):
        r = {k: 0.1 * (i + 1) + 0.01 * j for j, k in enumerate(METRIC_KEYS)}
        r["deletion_auc"] = float("nan")  # nothing counted: shown as n/a
        r.update(deletion_curve=[1.0, 0.6, 0.3, 0.1, 0.0], insertion_curve=[0.0, 0.5, 0.8, 0.9, 1.0],
                 randomization_by_stage={"classifier": 0.2, "decoder": 0.1, "encoder": -0.1})
        results[method] = r
    meta = {"model": "demo", "layer": "decoder", "n": 4, "size": 64, "seed": 1, "steps": 4}
    write_outputs(results, folder, False, meta)
    return folder


def test_evaluate_report(tmp_path):
    folder = _evaluate_folder(tmp_path / "eval")
    index = build_report(folder)
    page = index.read_text(encoding="utf-8")
    assert index.name == "index.html" and not (index.parent / "image.html").exists()
    assert "<h1>Evaluation</h1>" in page and page.count("<polyline") == 4  # 2 curves × 2 methods
    assert ">gradcam++</th>" in page and ">n/a</td>" in page and "randomization by stage" in page
    assert 'href="../metrics.csv"' in page


def test_bench_report_from_a_real_run(tmp_path):
    from seg_xai_fast.apps.bench import run_bench

    lines = []
    run_bench("demo", methods=["gradcam"], size=32, repeats=1, peer=False, chart=str(tmp_path / "seg-xai-bench.png"),
              log=lines.append)
    (tmp_path / "bench.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    parsed = parse_bench_text((tmp_path / "bench.txt").read_text(encoding="utf-8"))
    assert [r["row"] for r in parsed["rows"]][:2] == ["forward", "VJP loop (4 classes)"]
    assert parsed["rows"][-1]["row"] == "gradcam predicted targets" and "predicted_classes" in parsed["rows"][-1]
    assert parsed["chart"] == str(tmp_path / "seg-xai-bench.png") and parsed["meta"].startswith("model demo")
    page = build_report(tmp_path).read_text(encoding="utf-8")
    assert "<h1>Benchmark</h1>" in page and ">gradcam fused</th>" in page and "seg-xai-bench.png" in page


def test_bench_text_with_peer_columns():
    rows = [{"row": "forward", "ms": 12.25}, {"row": "gradcam fused", "ms": 5.0, "x_floor": 1.2, "peer_over_ours": 3.41},
            {"row": "gradcam predicted targets", "ms": 4.0, "x_floor": 1.1, "peer_over_ours": 12.0,
             "predicted_classes": 3}]
    parsed = parse_bench_text("model m, layer l\n" + format_table(rows) + "\n")
    assert parsed["rows"] == [{"row": "forward", "ms": 12.2}, {"row": "gradcam fused", "ms": 5.0, "x_floor": 1.2,
                                                                "peer_over_ours": 3.4},
                              {"row": "gradcam predicted targets", "ms": 4.0, "x_floor": 1.1, "peer_over_ours": 12.0,
                               "predicted_classes": 3}]
    with pytest.raises(ValueError, match="bench.txt must hold the output of `seg-xai bench`"):
        parse_bench_text("hello\n")


# --------------------------------------------------------------------------- the browser


def _browser_parts():
    """(chromium, chromedriver, selenium's webdriver); skips when one is missing, fails under CI=true."""
    chromium = next((shutil.which(n) for n in ("chromium", "chromium-browser") if shutil.which(n)), None)
    driver_path = shutil.which("chromedriver")
    try:
        from selenium import webdriver
    except ImportError:
        webdriver = None
    missing = [what for what, ok in (("chromium", chromium), ("chromedriver", driver_path), ("selenium", webdriver))
               if not ok]
    if missing:
        message = f"the browser tests need {', '.join(missing)} (apt-get install chromium chromium-driver; pip install selenium)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI=true: " + message)  # a browser test that silently skips in CI tests nothing
        pytest.skip(message)
    return chromium, driver_path, webdriver


def test_browser_tests_fail_in_ci_when_chromium_is_missing(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true: the browser tests need chromium, chromedriver"):
        _browser_parts()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="the browser tests need chromium"):
        _browser_parts()


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium through selenium and Debian's chromedriver; nothing is downloaded."""
    chromium, driver_path, webdriver = _browser_parts()
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,900"):
        options.add_argument(arg)  # no --allow-file-access-from-files: the report must work without it
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SE_OFFLINE", "true")  # Selenium Manager must never download a driver or browser
        driver = webdriver.Chrome(options=options, service=Service(driver_path))
    driver.set_script_timeout(30)
    yield driver
    driver.quit()


def _open(driver, url: str, ready: str = None):
    driver.get(url)
    return _wait_ready(driver, ready)


def _wait_ready(driver, ready: str = None):
    from selenium.webdriver.support.ui import WebDriverWait

    def done(d):
        state = d.execute_script("return document.body.dataset.ready || ''")
        return state if state and (ready is None or state == ready) else False

    state = WebDriverWait(driver, 20).until(done)
    assert state != "error", driver.find_element("tag name", "main").text
    return state


def _no_js_errors(driver):
    severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert not severe, severe


def test_browser_index_lists_every_image(browser, explained, report, tmp_path):
    out, root = explained
    _open(browser, report.as_uri(), "1")
    names = [e.text for e in browser.find_elements("css selector", ".tile .name")]
    assert names == sorted(GOOD, key=lambda n: str(root / n))
    browser.execute_script("window.scrollTo(0, document.body.scrollHeight)")
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, 10).until(lambda d: d.execute_script(
        "return [...document.querySelectorAll('.tile img')].every(i => i.complete && i.naturalWidth > 0)"))
    _no_js_errors(browser)
    # Paginated: two per page, walked with the "next page" button.
    paged = build_report(out, dest=tmp_path / "paged", page_size=2, workers=0)
    _open(browser, paged.as_uri(), "1")
    seen = []
    for page in ("1", "2", "3"):
        _wait_ready(browser, page)
        seen += [e.text for e in browser.find_elements("css selector", ".tile .name")]
        if page != "3":
            browser.find_element("css selector", "#pager button[title^='next page']").click()
    assert seen == names and browser.current_url.endswith("#p=3")
    _no_js_errors(browser)


def test_browser_image_page(browser, explained, report):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.support.ui import Select, WebDriverWait

    out, root = explained
    entries = _entries(out)
    i = next(k for k, e in enumerate(entries) if e["input"].endswith("wide.png"))
    _open(browser, f"{report.parent.as_uri()}/image.html#{i}", str(i))
    heat = browser.find_element("id", "heat")
    assert (heat.get_attribute("width"), heat.get_attribute("height")) == ("72", "48")
    assert browser.execute_script("return document.getElementById('photo').complete && "
                                  "document.getElementById('photo').naturalWidth") == 72
    exp = load_explanation(out, entries[i]["input"])
    select = Select(browser.find_element("id", "class"))
    picture = browser.execute_script("return arguments[0].toDataURL()", heat)
    first = int(select.first_selected_option.get_attribute("value"))
    other = next(c for c in exp.classes if c != first)
    select.select_by_value(str(other))
    WebDriverWait(browser, 5).until(lambda d: d.execute_script("return document.body.dataset.cls") == str(other))
    assert browser.execute_script("return arguments[0].toDataURL()", heat) != picture, "switching the class changed nothing"
    # The value under the cursor is load_explanation's, pixel for pixel.
    stage = browser.find_element("id", "stage")
    value = browser.find_element("id", "value")
    size = stage.size
    for fx, fy in ((0.1, 0.2), (0.5, 0.5), (0.85, 0.7)):
        ActionChains(browser).move_to_element_with_offset(stage, int((fx - 0.5) * size["width"]),
                                                          int((fy - 0.5) * size["height"])).perform()
        x, y = int(value.get_attribute("data-x")), int(value.get_attribute("data-y"))
        assert abs(x - fx * 72) <= 2 and abs(y - fy * 48) <= 2
        expected = float(exp.maps[exp.classes.index(other), y, x])
        assert float(value.get_attribute("data-v")) == pytest.approx(expected, abs=1e-5)
        assert f"{expected:.3f}"[:-1] in value.text
    # Opacity slider, overlay toggle (checkbox and the o key), the previous image with the ← key.
    browser.execute_script("var s = document.getElementById('opacity'); s.value = 0.2; s.dispatchEvent(new Event('input'))")
    assert heat.value_of_css_property("opacity") == "0.2"
    browser.find_element("id", "overlay").click()
    assert heat.value_of_css_property("visibility") == "hidden"
    browser.find_element("tag name", "body").send_keys("o")
    assert heat.value_of_css_property("visibility") == "visible"
    assert i == len(entries) - 1  # the last image: → goes nowhere, ← to the one before
    browser.find_element("tag name", "body").send_keys("\ue014")  # →
    browser.find_element("tag name", "body").send_keys("\ue012")  # ←
    _wait_ready(browser, str(i - 1))
    assert Path(entries[i - 1]["input"]).name in browser.find_element("id", "crumbs").text
    labels = browser.find_element("id", "labels").text
    assert "predicted labels" in labels
    _no_js_errors(browser)


@pytest.fixture(scope="module")
def explained_and_evaluated(tmp_path_factory):
    """`seg-xai explain` and `seg-xai evaluate --out` into the same folder (3 image/label pairs)."""
    root = tmp_path_factory.mktemp("scored")
    (root / "images").mkdir()
    (root / "labels").mkdir()
    images, truth = sx.synthetic_scenes(3, seed=77, size=64)
    for i in range(3):
        Image.fromarray((images[i].permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)).save(root / "images" / f"s{i}.png")
        Image.fromarray(truth[i].numpy().astype(np.uint8)).save(root / "labels" / f"s{i}.png")
    out = root / "xai"
    assert cli_main(["explain", str(root / "images"), "--out", str(out), "--runtime", "torch", "--workers", "0",
                     "--no-progress"]) == 0
    assert cli_main(["evaluate", str(root / "images"), "--labels", str(root / "labels"), "--out", str(out),
                     "--methods", "gradcam,scorecam", "--metrics", "pointing_game,sparseness,deletion",
                     "--no-progress"]) == 0
    return out, build_report(out, workers=0, progress=False)


def test_each_image_page_carries_its_evaluation_rows(explained_and_evaluated):
    import csv

    out, report = explained_and_evaluated
    with open(out / "rows.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {Path(r["path"]).name for r in rows} == {"s0.png", "s1.png", "s2.png"}
    for entry in _entries(out):
        key = entry["key"]
        rec = _data(report.parent, f"img/{key[:2]}/{key}", f"img/{key}")
        mine = [r for r in rows if os.path.realpath(r["path"]) == entry["input"]]
        assert mine and len(rec["metrics"]) == len(mine)  # every (method, class) of this image
        for shown, row in zip(rec["metrics"], mine):
            assert (shown["method"], shown["class"]) == (row["method"], row["class"])
            assert set(shown["values"]) == set(row) - {"image", "path", "method", "class"}
            for name, value in shown["values"].items():
                assert value == pytest.approx(float(row[name]), rel=1e-6) if value is not None else row[name] in ("", "nan")


def test_browser_image_page_shows_its_evaluation(browser, explained_and_evaluated):
    out, report = explained_and_evaluated
    entries = _entries(out)
    _open(browser, f"{report.parent.as_uri()}/image.html#1", "1")
    table = browser.find_element("id", "scores")
    rec = _data(report.parent, f"img/{entries[1]['key'][:2]}/{entries[1]['key']}", f"img/{entries[1]['key']}")
    lines = table.text.splitlines()
    assert lines[0].startswith("method class pointing_game") and len(lines) == 1 + len(rec["metrics"])
    first = rec["metrics"][0]
    assert lines[1].startswith(f"{first['method']} {first['class']} ")
    assert f"{first['values']['sparseness']:.3f}" in lines[1]
    _no_js_errors(browser)


def _planes(maps: np.ndarray) -> str:
    """float16 maps as the data files carry them: byte planes, zlib, base64."""
    planes = np.ascontiguousarray(maps.astype("<f2").view(np.uint8).reshape(-1, 2).T)
    return base64.b64encode(zlib.compress(planes.tobytes(), 1)).decode()


def test_browser_expand_matches_the_store(browser, report):
    """report.js's float16 decoder and map expansion against store.expand_maps, on awkward sizes."""
    _open(browser, report.as_uri(), "1")
    g = torch.Generator().manual_seed(0)
    cases = [((7, 5), (13, 11), (13, 11)), ((7, 5), (13, 11), (20, 9)), ((6, 6), (6, 6), (6, 6)),
             ((9, 4), (9, 4), (16, 3)), ((3, 8), (1, 17), (1, 17))]
    for (h, w), map_size, image_size in cases:
        stored = (torch.rand(2, h, w, generator=g) * 1.4 - 0.2).half()  # negatives and >1 too
        stored[1] = 0  # the all-zero map of a class predicted nowhere
        expected = expand_maps(stored, map_size, image_size).numpy()
        payload = _planes(stored.numpy())
        got = browser.execute_async_script(
            "var done = arguments[arguments.length - 1], a = arguments;"
            "SX.decodeMaps(a[0]).then(function (all) { var n = a[1] * a[2], out = [];"
            "  for (var k = 0; k < 2; k++) out.push(Array.from(SX.expand(all.subarray(k * n, (k + 1) * n), a[1], a[2], a[3], a[4])));"
            "  done(out); }).catch(function (e) { done(String(e)); });",
            payload, h, w, list(map_size), list(image_size))
        assert not isinstance(got, str), got
        np.testing.assert_allclose(np.array(got).reshape(expected.shape), expected, atol=2e-6,
                                   err_msg=f"stored {h}x{w}, map_size {map_size}, image_size {image_size}")
    halves = np.array([0, 1, 0x3ff, 0x400, 0x3c00, 0x7bff, 0x8001, 0xc000, 0x7c00, 0xfc00], np.uint16)
    payload = _planes(halves.view(np.float16))
    got = browser.execute_async_script(
        "var done = arguments[1]; SX.decodeMaps(arguments[0]).then(function (a) { done(Array.from(a).map(String)); });",
        payload)
    assert [float(v) for v in got] == halves.view(np.float16).astype(np.float64).tolist()
    _no_js_errors(browser)


def test_browser_failures_evaluate_and_bench_pages(browser, explained, report, tmp_path):
    _open(browser, (report.parent / "failures.html").as_uri(), "1")
    rows = browser.find_elements("css selector", "#rows tr")
    assert len(rows) == 1 and BAD in rows[0].text
    _no_js_errors(browser)
    # A run where nothing has been explained yet: its header only.
    out, _ = explained
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "manifest.jsonl").write_text((out / "manifest.jsonl").read_text().splitlines()[0] + "\n")
    empty = build_report(tmp_path / "empty")
    _open(browser, empty.as_uri(), "1")
    assert "No image has been explained yet" in browser.find_element("id", "grid").text
    _open(browser, (empty.parent / "image.html").as_uri(), "empty")
    _open(browser, (empty.parent / "failures.html").as_uri(), "1")
    assert "No failures.csv" in browser.find_element("id", "failures-note").text
    _no_js_errors(browser)
    folder = _evaluate_folder(tmp_path)
    (tmp_path / "bench.txt").write_text("model demo, layer decoder\n" + format_table([{"row": "forward", "ms": 3.0}]) + "\n")
    index = build_report(folder)
    for page in ("index.html", "bench.html"):
        browser.get((index.parent / page).as_uri())
        assert browser.find_element("tag name", "h1").text in ("Evaluation", "Benchmark")
        _no_js_errors(browser)
