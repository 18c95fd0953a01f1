"""`seg-xai report` on a 10,000-image output folder: build time and page load times in headless Chromium.

    python benchmarks/report_speed.py [--n 10000] [--size 160] [--keep DIR] [--loads 5]

1. Writes a synthetic but format-valid explain output folder: N PNG inputs of size² (16 scenes
   repeated under distinct names), the demo model's real layer-resolution maps of those scenes
   (float16, as `seg-xai explain` stores them), the manifest and a failures.csv of 50 rows. The
   files are written directly, without the store's per-file fsync (4.6 ms each here: N·4.6 ms).
   A sample is read back with load_explanation to prove the format.
2. Times `seg-xai report` (build_report, default workers) from scratch: goal < 60 s.
3. Opens index.html, a later grid page, an image page and the failures page `--loads` times each
   in headless Chromium (Debian's chromium + chromedriver through selenium, 1280×900): a probe
   installed before the page's scripts records the time from navigation start until the page
   is rendered and until every picture in view has loaded ("shown"), next to the load event.
   Goal: index.html shown in < 1 s (median).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_store(root: Path, n: int, size: int) -> Path:
    """Inputs under root/inputs, the explain output folder root/xai (returned)."""
    import torch
    from PIL import Image

    import seg_xai_fast as sx
    from seg_xai_fast.apps.batch.store import (FAILURES, FORMAT_VERSION, MANIFEST, content_digest, image_key,
                                               load_explanation, maps_relpath)

    images, _ = sx.synthetic_scenes(16, seed=7, size=size)
    explainer = sx.Explainer(sx.demo_model(), target_layer="decoder", method="gradcam")
    res = explainer(images, resolution="layer")
    maps16 = res.maps.to(torch.float16).numpy()  # [16,K,h,w]
    map_size = [size, size]
    pngs = []
    for im in images:
        buf = io.BytesIO()
        Image.fromarray((im.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)).save(buf, format="PNG")
        pngs.append(buf.getvalue())
    inputs, out = root / "inputs", root / "xai"
    inputs.mkdir(parents=True)
    out.mkdir()
    header = {"type": "run", "format": FORMAT_VERSION, "model": "demo", "model_digest": "synthetic", "layer": "decoder",
              "method": "gradcam", "classes": None, "map_resolution": "layer", "save": ["maps"], "colormap": "jet",
              "alpha": 0.5, "version": sx.__version__, "runtime": "torch", "class_names": list(sx.CLASS_NAMES),
              "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    lines = [json.dumps(header)]
    made = set()
    for i in range(n):
        path = str(inputs / f"img_{i:05d}.png")
        (inputs / f"img_{i:05d}.png").write_bytes(pngs[i % 16])
        key = image_key(path)
        rel = maps_relpath(key)
        if rel[:7] not in made:
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            made.add(rel[:7])
        meta = json.dumps({"input": path, "model": "demo", "layer": "decoder", "method": "gradcam"})
        buf = io.BytesIO()  # the store's own layout and digests (format FORMAT_VERSION)
        np.savez(buf, maps=maps16[i % 16], classes=np.asarray(res.classes, np.int64),
                 map_size=np.asarray(map_size, np.int64), image_size=np.asarray([size, size], np.int64),
                 meta=np.array(meta))
        (out / rel).write_bytes(buf.getvalue())
        lines.append(json.dumps({"type": "image", "input": path, "key": key, "maps": rel, "overlays": [],
                                 "size": [size, size], "classes": res.classes,
                                 "input_digest": content_digest(pngs[i % 16]),
                                 "digests": {rel: content_digest(buf.getvalue())}}))
    (out / MANIFEST).write_text("\n".join(lines) + "\n")
    (out / FAILURES).write_text("path,reason\n" + "".join(
        f"{inputs}/broken_{i:03d}.png,UnidentifiedImageError: cannot identify image file\n" for i in range(50)))
    for i in (0, n // 2, n - 1):  # the format is the real one
        exp = load_explanation(out, inputs / f"img_{i:05d}.png")
        assert exp.maps.shape == (len(res.classes), size, size)
    return out


def _cpu_seconds() -> float:
    """User + system CPU time of this process and of its waited-for children (the build's workers)."""
    import resource

    return sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                  resource.getrusage(resource.RUSAGE_CHILDREN)))


def browser():
    os.environ["SE_OFFLINE"] = "true"  # never let Selenium Manager download anything
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser")
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,900"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": PROBE})
    return driver


# Installed before any page script: records (performance.now(), i.e. ms since the navigation
# started) when the page says it is rendered (body[data-ready]) and when every picture in view
# has loaded.
PROBE = """
window.__sx = {};
(function poll() {
  var b = document.body, ready = b && b.dataset.ready;
  if (ready && !window.__sx.ready) window.__sx.ready = performance.now();
  if (ready === 'error') { window.__sx.error = document.querySelector('main').innerText; return; }
  if (ready) {
    var imgs = [...document.querySelectorAll('img')].filter(function (i) {
      var r = i.getBoundingClientRect(); return !i.hidden && r.top < innerHeight && r.bottom > 0; });
    if (imgs.every(function (i) { return i.complete && i.naturalWidth > 0; })) {
      window.__sx.shown = performance.now(); window.__sx.images = imgs.length; return;
    }
  }
  setTimeout(poll, 2);
})();
"""


def time_page(driver, url: str, loads: int) -> dict:
    """Medians over `loads` navigations (from about:blank) of: rendered, pictures in view shown, load event (s)."""
    ready, shown, onload = [], [], []
    images = 0
    for _ in range(loads):
        driver.get("about:blank")
        driver.get(url)
        for _ in range(2000):
            t = driver.execute_script("return window.__sx && (window.__sx.error || window.__sx.shown) ? window.__sx : null")
            if t:
                break
            time.sleep(0.01)
        else:
            raise RuntimeError(f"{url} did not render within 20 s")
        if "error" in t:
            raise RuntimeError(f"{url}: {t['error']}")
        ready.append(t["ready"] / 1e3)
        shown.append(t["shown"] / 1e3)
        images = t["images"]
        onload.append(driver.execute_script("return performance.getEntriesByType('navigation')[0].loadEventEnd") / 1e3)
    return {"ready_s": statistics.median(ready), "shown_s": statistics.median(shown), "max_s": max(shown),
            "onload_s": statistics.median(onload), "images": images}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--loads", type=int, default=5)
    parser.add_argument("--keep", default=None, help="write the store and the report here and keep them "
                                                     "(a store already there is reused)")
    args = parser.parse_args()

    from seg_xai_fast.apps.report import build_report

    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="report-speed-"))
    try:
        start = time.perf_counter()
        out = root / "xai"
        if args.keep and (out / "manifest.jsonl").is_file():
            print(f"reusing the store in {out}")
        else:
            out = make_store(root, args.n, args.size)
        made = time.perf_counter() - start
        shutil.rmtree(out / "report", ignore_errors=True)  # the build starts from scratch
        store_mb = sum(f.stat().st_size for f in (out / "maps").rglob("*.npz")) / 2**20
        print(f"synthetic store: {args.n:,} images of {args.size}², {store_mb:.0f} MB of maps, written in {made:.1f} s",
              flush=True)
        load_before = os.getloadavg()[0]
        cpu = _cpu_seconds()
        start = time.perf_counter()
        index = build_report(out, progress=True)
        build_s = time.perf_counter() - start
        cpu = _cpu_seconds() - cpu
        report_mb = sum(f.stat().st_size for f in index.parent.rglob("*") if f.is_file()) / 2**20
        print(f"report build: {build_s:.1f} s ({args.n / build_s:.0f} images/s), CPU time {cpu:.1f} s "
              f"({cpu / args.n * 1e3:.2f} ms/image) on {os.cpu_count()} CPUs, load average "
              f"{load_before:.1f} → {os.getloadavg()[0]:.1f}; {report_mb:.0f} MB written", flush=True)

        driver = browser()
        try:
            version = driver.capabilities.get("browserVersion", "?")
            blank = root / "empty.html"  # the browser's own cost of opening a page from disk
            blank.write_text('<!doctype html><html><body data-ready="1"><main></main></body></html>')
            pages = {
                "(an empty page)": blank.as_uri(),
                "index.html": index.as_uri(),
                "index.html#p=57": index.as_uri() + "#p=57",
                "image.html#4321": f"{index.parent.as_uri()}/image.html#{min(4321, args.n - 1)}",
                "failures.html": (index.parent / "failures.html").as_uri(),
            }
            timings = {name: time_page(driver, url, args.loads) for name, url in pages.items()}
        finally:
            driver.quit()
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)

    print(f"\n{platform.node()} · {platform.processor() or platform.machine()} · Chromium {version} headless · "
          f"{args.loads} loads each")
    print("seconds from navigation start (medians): rendered = the page's data drawn; shown = rendered and every "
          "picture in view loaded; load event = the window's load event")
    print(f"{'page':<20} {'rendered':>9} {'shown':>7} {'max shown':>10} {'load event':>11} {'pictures in view':>17}")
    for name, t in timings.items():
        print(f"{name:<20} {t['ready_s']:>9.3f} {t['shown_s']:>7.3f} {t['max_s']:>10.3f} {t['onload_s']:>11.3f} "
              f"{t['images']:>17}")
    index_s = timings["index.html"]["shown_s"]
    ok = build_s < 60 and index_s < 1
    print(f"\nbuild_s={build_s:.1f} (goal < 60) index_load_s={index_s:.3f} (goal < 1) -> {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
