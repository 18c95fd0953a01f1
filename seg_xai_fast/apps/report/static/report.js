/* seg-xai report: the dynamic parts of index.html (the thumbnail grid), image.html (one image)
   and failures.html. Pages open from disk (file://), where fetch() of local files is refused, so
   every datum comes from a script under data/ that assigns window.SXD[name] (see build.py). */
(function () {
  "use strict";
  var SXD = (window.SXD = window.SXD || {});
  var SX = (window.SX = {});
  var RUN = SXD.run;

  // ------------------------------------------------------------------ helpers

  var pending = {};
  /* Load data/<file>.js once → a promise of SXD[name]. */
  function data(name, file) {
    if (name in SXD) return Promise.resolve(SXD[name]);
    if (!pending[name]) {
      pending[name] = new Promise(function (resolve, reject) {
        var s = document.createElement("script");
        s.src = "data/" + (file || name) + ".js";
        s.onload = function () {
          s.remove();
          if (name in SXD) resolve(SXD[name]);
          else reject(new Error(s.src + " did not define " + name));
        };
        s.onerror = function () {
          s.remove();
          delete pending[name];
          reject(new Error("could not load " + s.src + " (was the report moved without its data/ folder?)"));
        };
        document.head.appendChild(s);
      });
    }
    return pending[name];
  }

  function forget(name) {
    delete SXD[name];
    delete pending[name];
  }

  function $(id) {
    return document.getElementById(id);
  }

  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    for (var k in attrs || {}) if (attrs[k] !== null && attrs[k] !== undefined) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function clamp(v, lo, hi) {
    return Math.min(Math.max(v, lo), hi);
  }

  /* #p=3 → "3" */
  function hashParam(key) {
    var m = new RegExp("[#&]" + key + "=([^&]*)").exec(location.hash);
    return m ? decodeURIComponent(m[1]) : null;
  }

  function className(c) {
    var names = RUN.header.class_names || [];
    return c >= 0 && c < names.length ? names[c] : "class " + c;
  }

  function fail(err) {
    console.error(err);
    var main = document.querySelector("main");
    main.insertBefore(el("p", { class: "error" }, String(err && err.message ? err.message : err)), main.firstChild);
    document.body.dataset.ready = "error";
  }

  /* A thumbnail that did not load (the input moved since the report was built). */
  function unavailable() {
    this.replaceWith(el("span", { class: "note" }, "image unavailable"));
  }

  /* The predicted classes of an image as chips (or its classes, for a class-agnostic method). */
  function labels(r) {
    var box = el("div", { class: "labels" });
    if (r.predicted === null) {
      box.appendChild(el("span", { class: "note" }, "class-agnostic method: " + r.classes.length + " classes"));
      return box;
    }
    if (!r.predicted.length) box.appendChild(el("span", { class: "note" }, "no explained class predicted"));
    r.predicted.forEach(function (c) {
      box.appendChild(el("span", { class: "chip c" + (c % 10) }, className(c)));
    });
    return box;
  }

  /* « ‹ page [n] of N › » into `box`; `go(n)` changes the page. */
  function pager(box, page, pages, total, size, go, noun) {
    box.textContent = "";
    function link(text, n, title) {
      var a = el("button", { type: "button", title: title }, text);
      if (n < 1 || n > pages || n === page) a.disabled = true;
      else a.onclick = function () { go(n); };
      box.appendChild(a);
    }
    link("«", 1, "first page");
    link("‹", page - 1, "previous page (←)");
    var input = el("input", { type: "number", min: 1, max: pages, value: page, "aria-label": "page" });
    input.onchange = function () { go(clamp(parseInt(input.value, 10) || 1, 1, pages)); };
    box.appendChild(el("span", {}, "page "));
    box.appendChild(input);
    box.appendChild(el("span", {}, " of " + pages.toLocaleString()));
    link("›", page + 1, "next page (→)");
    link("»", pages, "last page");
    var first = total ? (page - 1) * size + 1 : 0;
    box.appendChild(el("span", { class: "count" },
      noun + " " + first.toLocaleString() + "–" + Math.min(page * size, total).toLocaleString() +
      " of " + total.toLocaleString()));
  }

  function pageKeys(go, current, pages) {
    document.addEventListener("keydown", function (e) {
      if (e.target.tagName === "INPUT" || e.target.tagName === "SELECT") return;
      if (e.key === "ArrowLeft" && current() > 1) go(current() - 1);
      if (e.key === "ArrowRight" && current() < pages) go(current() + 1);
    });
  }

  // ------------------------------------------------------------------ maps

  var F16 = null;
  /* IEEE half-precision bits → float, as a table of all 65,536 values. */
  function halfTable() {
    if (F16) return F16;
    F16 = new Float32Array(65536);
    for (var u = 0; u < 65536; u++) {
      var e = (u >> 10) & 31, f = u & 1023, v;
      if (e === 0) v = f * 5.960464477539063e-8; // subnormal: f · 2^-24
      else if (e === 31) v = f ? NaN : Infinity;
      else v = (1 + f / 1024) * Math.pow(2, e - 15);
      F16[u] = u & 0x8000 ? -v : v;
    }
    return F16;
  }

  /* base64 of zlib-compressed float16 byte planes (every low byte, then every high byte) → Promise
     of a Float32Array. */
  function decodeMaps(b64) {
    var bin = atob(b64), bytes = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    var stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
    return new Response(stream).arrayBuffer().then(function (buf) {
      var b = new Uint8Array(buf), n = b.length >> 1, out = new Float32Array(n), table = halfTable();
      for (var i = 0; i < n; i++) out[i] = table[b[i] | (b[n + i] << 8)];
      return out;
    });
  }

  /* Bilinear resize of one map [h*w] → [H*W], align_corners=False (as F.interpolate). */
  function resize(src, h, w, H, W) {
    var out = new Float32Array(H * W), x0 = new Int32Array(W), x1 = new Int32Array(W), lx = new Float64Array(W);
    var sx = w / W, sy = h / H, x, y;
    for (x = 0; x < W; x++) {
      var s = Math.max((x + 0.5) * sx - 0.5, 0), i = Math.min(Math.floor(s), w - 1);
      x0[x] = i;
      x1[x] = Math.min(i + 1, w - 1);
      lx[x] = s - i;
    }
    for (y = 0; y < H; y++) {
      var t = Math.max((y + 0.5) * sy - 0.5, 0), j = Math.min(Math.floor(t), h - 1);
      var r0 = j * w, r1 = Math.min(j + 1, h - 1) * w, ly = t - j, o = y * W;
      for (x = 0; x < W; x++) {
        var a = src[r0 + x0[x]] * (1 - lx[x]) + src[r0 + x1[x]] * lx[x];
        var b = src[r1 + x0[x]] * (1 - lx[x]) + src[r1 + x1[x]] * lx[x];
        out[o + x] = a * (1 - ly) + b * ly;
      }
    }
    return out;
  }

  /* ReLU, then (x - min) / (max - min + 1e-7), in place (as reference.normalize_maps). */
  function normalize(x) {
    var lo = Infinity, hi = -Infinity, i;
    for (i = 0; i < x.length; i++) {
      if (!(x[i] > 0)) x[i] = 0;
      if (x[i] < lo) lo = x[i];
    }
    for (i = 0; i < x.length; i++) {
      x[i] -= lo;
      if (x[i] > hi) hi = x[i];
    }
    var d = hi + 1e-7;
    for (i = 0; i < x.length; i++) x[i] /= d;
    return x;
  }

  /* One stored map [h*w] → the map at the image's size [H*W], as store.expand_maps. */
  SX.expand = function (stored, h, w, mapSize, imageSize) {
    var x = stored, H = h, W = w;
    if (mapSize[0] !== h || mapSize[1] !== w) {
      x = normalize(resize(x, h, w, mapSize[0], mapSize[1]));
      H = mapSize[0];
      W = mapSize[1];
    }
    if (imageSize[0] !== H || imageSize[1] !== W) {
      x = resize(x, H, W, imageSize[0], imageSize[1]);
      for (var i = 0; i < x.length; i++) x[i] = clamp(x[i], 0, 1);
    }
    return x;
  };
  SX.decodeMaps = decodeMaps;

  function lut(name) {
    var hex = RUN.colormaps[name], out = new Uint8Array(768);
    for (var i = 0; i < 768; i++) out[i] = parseInt(hex.substr(2 * i, 2), 16);
    return out;
  }

  // ------------------------------------------------------------------ index: the grid

  function indexPage() {
    var pages = RUN.pages, current = 1;
    function go(n) {
      location.hash = "p=" + n;
    }
    function show() {
      var p = clamp(parseInt(hashParam("p"), 10) || 1, 1, pages);
      current = p;
      document.body.dataset.ready = "";
      data("pages/" + p).then(function (rows) {
        var grid = $("grid"), frag = document.createDocumentFragment();
        rows.forEach(function (r, j) {
          var a = el("a", { class: "tile", href: "image.html#" + ((p - 1) * RUN.page_size + j), title: r.name });
          var box = el("div", { class: "thumb" });
          // loading before src: set first, src would start the load at once (measured: 200 ms per page)
          var img = r.thumb ? el("img", { loading: "lazy", decoding: "async", alt: r.name, src: r.thumb }) : null;
          if (img) img.onerror = unavailable;
          box.appendChild(img || el("span", { class: "note" }, "image unavailable"));
          a.appendChild(box);
          a.appendChild(el("div", { class: "name" }, r.name));
          a.appendChild(el("div", { class: "dims" }, r.size[1] + "×" + r.size[0]));
          a.appendChild(labels(r));
          frag.appendChild(a);
        });
        grid.textContent = "";
        grid.appendChild(frag);
        if (!rows.length) grid.appendChild(el("p", { class: "note" }, "No image has been explained yet."));
        [$("pager"), $("pager-bottom")].forEach(function (box) {
          pager(box, p, pages, RUN.count, RUN.page_size, go, "images");
        });
        if (p > 1) forget("pages/" + (p - 1)); // the data of pages left behind is not kept
        if (p < pages) forget("pages/" + (p + 1));
        document.body.dataset.ready = String(p);
      }).catch(fail);
    }
    pageKeys(go, function () { return current; }, pages);
    window.addEventListener("hashchange", show);
    show();
  }

  // ------------------------------------------------------------------ image page

  // The image's rows of `seg-xai evaluate` (same folder): one row per method and class.
  function scoreTable(rows) {
    var names = Object.keys(rows[0].values);
    var table = el("table", { class: "scores", id: "scores" });
    var head = el("tr");
    ["method", "class"].concat(names).forEach(function (n) { head.appendChild(el("th", {}, n)); });
    table.appendChild(head);
    rows.forEach(function (r) {
      var tr = el("tr");
      tr.appendChild(el("td", {}, r.method));
      tr.appendChild(el("td", {}, r["class"]));
      names.forEach(function (n) {
        var v = r.values[n];
        tr.appendChild(el("td", { class: "num" }, v === null || v === undefined ? "—" : v.toFixed(3)));
      });
      table.appendChild(tr);
    });
    var box = el("div", { class: "scores-box" });
    box.appendChild(el("div", { class: "label-title" }, "evaluation of this image (seg-xai evaluate)"));
    box.appendChild(table);
    return box;
  }

  function imagePage() {
    var header = RUN.header;
    var state = { i: -1, rec: null, stored: null, cache: {}, cls: null, colormap: header.colormap || "jet" };
    var stage = $("stage"), photo = $("photo"), heat = $("heat"), ctx = heat.getContext("2d");
    var select = $("class"), opacity = $("opacity"), overlay = $("overlay"), cmap = $("colormap"), out = $("value");
    var luts = {};

    Object.keys(RUN.colormaps).forEach(function (name) {
      cmap.appendChild(el("option", { value: name }, name));
    });
    cmap.value = state.colormap;
    opacity.value = header.alpha === undefined ? 0.5 : header.alpha;
    function setOpacity() {
      heat.style.opacity = opacity.value;
      $("opacity-value").textContent = Number(opacity.value).toFixed(2);
    }
    function setOverlay() {
      heat.style.visibility = overlay.checked ? "visible" : "hidden";
      stage.classList.toggle("original", !overlay.checked);
    }
    opacity.oninput = setOpacity;
    overlay.onchange = setOverlay;
    select.onchange = function () {
      state.cls = parseInt(select.value, 10);
      draw();
    };
    cmap.onchange = function () {
      state.colormap = cmap.value;
      draw();
    };
    setOpacity();
    setOverlay();

    /* The map of class c at the image's size (the last few are kept). */
    function classMap(c) {
      if (state.cache[c]) return state.cache[c];
      var rec = state.rec, k = rec.classes.indexOf(c), K = rec.shape[0], h = rec.shape[1], w = rec.shape[2];
      var slice = state.stored.subarray(k * h * w, (k + 1) * h * w);
      var keys = Object.keys(state.cache);
      if (keys.length >= 4) delete state.cache[keys[0]];
      state.cache[c] = SX.expand(slice, h, w, rec.map_size, rec.size);
      return state.cache[c];
    }

    function draw() {
      var rec = state.rec, H = rec.size[0], W = rec.size[1], m = classMap(state.cls);
      var table = luts[state.colormap] || (luts[state.colormap] = lut(state.colormap));
      var picture = ctx.createImageData(W, H), d = picture.data;
      for (var p = 0, q = 0; p < m.length; p++, q += 4) {
        var v = m[p];
        var k = (v > 1 ? 255 : v > 0 ? Math.floor(v * 255) : 0) * 3; // truncates like reference.overlay
        d[q] = table[k];
        d[q + 1] = table[k + 1];
        d[q + 2] = table[k + 2];
        d[q + 3] = 255;
      }
      ctx.putImageData(picture, 0, 0);
      var bar = $("colorbar"), bctx = bar.getContext("2d"), strip = bctx.createImageData(256, 1);
      for (var i = 0; i < 256; i++) {
        strip.data.set([table[3 * i], table[3 * i + 1], table[3 * i + 2], 255], 4 * i);
      }
      bctx.putImageData(strip, 0, 0);
      document.body.dataset.cls = String(state.cls);
    }

    stage.addEventListener("mousemove", function (e) {
      if (!state.stored) return;
      var rect = heat.getBoundingClientRect(), H = state.rec.size[0], W = state.rec.size[1];
      var x = clamp(Math.floor(((e.clientX - rect.left) / rect.width) * W), 0, W - 1);
      var y = clamp(Math.floor(((e.clientY - rect.top) / rect.height) * H), 0, H - 1);
      var v = classMap(state.cls)[y * W + x];
      out.textContent = "x " + x + ", y " + y + ": " + className(state.cls) + " " + v.toFixed(3);
      out.dataset.x = x;
      out.dataset.y = y;
      out.dataset.v = v;
    });
    stage.addEventListener("mouseleave", function () {
      out.textContent = "—";
    });

    function show() {
      var n = RUN.count;
      document.body.dataset.ready = "";
      if (!n) {
        $("crumbs").textContent = "No image has been explained yet.";
        document.body.dataset.ready = "empty";
        return;
      }
      var i = clamp(parseInt(location.hash.slice(1), 10) || 0, 0, n - 1), size = RUN.page_size;
      var p = Math.floor(i / size) + 1, row;
      data("pages/" + p)
        .then(function (rows) {
          row = rows[i - (p - 1) * size];
          return data("img/" + row.key, "img/" + row.key.slice(0, 2) + "/" + row.key);
        })
        .then(function (rec) {
          return decodeMaps(rec.maps).then(function (stored) {
            if (state.rec && state.rec.key !== rec.key) forget("img/" + state.rec.key);
            state.i = i;
            state.rec = rec;
            state.stored = stored;
            state.cache = {};
            render(i, p, row, rec);
          });
        })
        .catch(fail);
    }

    function render(i, p, row, rec) {
      var n = RUN.count, H = rec.size[0], W = rec.size[1];
      var crumbs = $("crumbs");
      crumbs.textContent = "";
      crumbs.appendChild(el("a", { href: "index.html#p=" + p }, "‹ images, page " + p));
      crumbs.appendChild(el("a", { href: i > 0 ? "image.html#" + (i - 1) : null, class: i > 0 ? "" : "off",
        title: "previous image (←)" }, "← previous"));
      crumbs.appendChild(el("strong", { title: rec.input }, row.name));
      crumbs.appendChild(el("span", {}, (i + 1).toLocaleString() + " of " + n.toLocaleString()));
      crumbs.appendChild(el("a", { href: i < n - 1 ? "image.html#" + (i + 1) : null, class: i < n - 1 ? "" : "off",
        title: "next image (→)" }, "next →"));
      document.title = row.name + " · seg-xai report";

      var zoom = Math.max(1, Math.floor(512 / Math.max(W, H)));
      stage.style.width = W * zoom + "px";
      stage.style.aspectRatio = W + " / " + H;
      stage.classList.toggle("zoomed", zoom > 1);
      heat.width = W;
      heat.height = H;
      if (rec.url) {
        photo.hidden = false;
        photo.src = rec.url;
      } else {
        photo.hidden = true;
        photo.removeAttribute("src");
      }

      // Keep the chosen class across images when it was explained there; else the first predicted
      // class that is not a background, else the first class.
      var predicted = rec.predicted || rec.classes;
      if (state.cls === null || rec.classes.indexOf(state.cls) < 0) {
        var named = predicted.filter(function (c) { return className(c) !== "background"; });
        state.cls = named.length ? named[0] : predicted.length ? predicted[0] : rec.classes[0];
      }
      select.textContent = "";
      rec.classes.forEach(function (c, k) {
        var suffix = rec.predicted && rec.predicted.indexOf(c) < 0 ? " (not predicted: empty map)" : "";
        select.appendChild(el("option", { value: c }, (k < 9 ? k + 1 + " · " : "") + className(c) + suffix));
      });
      select.value = String(state.cls);

      var box = $("labels");
      box.textContent = "";
      box.appendChild(el("div", { class: "label-title" }, rec.predicted ? "predicted labels" : "classes"));
      box.appendChild(labels(rec));

      var facts = [["input", rec.input], ["size", W + " × " + H]];
      if (rec.map_size[0] !== H || rec.map_size[1] !== W) facts.push(["map size", rec.map_size[1] + " × " + rec.map_size[0]]);
      facts.push(["stored maps", rec.shape.join(" × ") + " float16"], ["key", rec.key]);
      var dl = el("dl");
      facts.forEach(function (f) {
        dl.appendChild(el("dt", {}, f[0]));
        dl.appendChild(el("dd", {}, f[1]));
      });
      var files = el("dd");
      files.appendChild(el("a", { href: rec.maps_file }, rec.maps_member == null ? "maps (.npz)"
        : "maps (.npz of its batch, image " + (rec.maps_member + 1) + ")"));
      rec.overlays.forEach(function (o, k) {
        files.appendChild(document.createTextNode(" · "));
        files.appendChild(el("a", { href: o }, "overlay " + className(rec.classes[k])));
      });
      dl.appendChild(el("dt", {}, "files"));
      dl.appendChild(files);
      if (!rec.url) {
        dl.appendChild(el("dt", {}, "note"));
        dl.appendChild(el("dd", { class: "error" }, "the input could not be read when the report was built"));
      }
      $("facts").textContent = "";
      $("facts").appendChild(dl);
      if (rec.metrics && rec.metrics.length) $("facts").appendChild(scoreTable(rec.metrics));
      out.textContent = "—";
      draw();
      document.body.dataset.ready = String(i);
    }

    document.addEventListener("keydown", function (e) {
      if (e.target.tagName === "INPUT" && e.target.type === "number") return;
      if (e.key === "ArrowLeft" && state.i > 0) location.hash = String(state.i - 1);
      else if (e.key === "ArrowRight" && state.i < RUN.count - 1) location.hash = String(state.i + 1);
      else if (e.key === "o") {
        overlay.checked = !overlay.checked;
        setOverlay();
      } else if (/^[1-9]$/.test(e.key) && state.rec && state.rec.classes.length >= +e.key) {
        select.value = String(state.rec.classes[+e.key - 1]);
        select.onchange();
      }
    });
    window.addEventListener("hashchange", show);
    show();
  }

  // ------------------------------------------------------------------ failures page

  function failuresPage() {
    var pages = RUN.failure_pages, size = RUN.failures_page_size, current = 1;
    var note = $("failures-note");
    note.textContent = RUN.failures
      ? RUN.failures.toLocaleString() + " inputs could not be explained in the last run of seg-xai explain. "
      : RUN.failures_csv ? "No failures in the last run. " : "No failures.csv: the run has not finished yet. ";
    if (RUN.failures_csv) note.appendChild(el("a", { href: RUN.failures_csv }, "failures.csv"));
    function go(n) {
      location.hash = "p=" + n;
    }
    function show() {
      var p = clamp(parseInt(hashParam("p"), 10) || 1, 1, pages);
      current = p;
      document.body.dataset.ready = "";
      data("failures/" + p).then(function (rows) {
        var body = $("rows"), frag = document.createDocumentFragment();
        rows.forEach(function (r, j) {
          var tr = el("tr");
          tr.appendChild(el("td", { class: "n" }, String((p - 1) * size + j + 1)));
          tr.appendChild(el("td", { class: "path" }, r[0]));
          tr.appendChild(el("td", {}, r[1]));
          frag.appendChild(tr);
        });
        body.textContent = "";
        body.appendChild(frag);
        pager($("pager"), p, pages, RUN.failures, size, go, "failures");
        document.body.dataset.ready = String(p);
      }).catch(fail);
    }
    pageKeys(go, function () { return current; }, pages);
    window.addEventListener("hashchange", show);
    show();
  }

  var start = { index: indexPage, image: imagePage, failures: failuresPage }[document.body.dataset.page];
  if (start) {
    if (!RUN) fail(new Error("data/run.js is missing: rebuild the report with seg-xai report"));
    else start();
  }
})();
