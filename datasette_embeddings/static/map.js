/* The collection map: every record of a model as a point on a plain <canvas>.
 *
 * No library: points are written straight into an ImageData buffer (one typed-array
 * loop per frame, see benchmarks/map_page.py), so pan and zoom redraw in one frame without a
 * scatter-plot dependency to ship, update or fetch from a CDN.  A screen-space grid
 * rebuilt on every draw answers "which point is under the pointer?" in a few cells.
 * Points arrive in pages from map.json (compact arrays) and are drawn as they come.
 */
(function () {
  "use strict";
  var root = document.getElementById("emb-map");
  if (!root) return;
  var canvas = document.getElementById("emb-canvas");
  var ctx = canvas.getContext("2d");
  var tip = document.getElementById("emb-tip");
  var boxEl = document.getElementById("emb-box");
  var statusEl = document.getElementById("emb-map-status");
  var legendEl = document.getElementById("emb-legend");
  var selectionEl = document.getElementById("emb-selection");
  var colourSelect = document.getElementById("emb-colour");
  var clusterNames = JSON.parse(document.getElementById("emb-clusters").textContent || "[]");
  var maxSelection = parseInt(root.dataset.maxSelection, 10) || 500;

  var PALETTE = [
    [31, 119, 180], [214, 39, 40], [44, 160, 44], [148, 103, 189], [255, 127, 14], [140, 86, 75],
    [227, 119, 194], [23, 190, 207], [188, 189, 34], [127, 127, 127], [174, 199, 232], [255, 152, 150],
    [152, 223, 138], [197, 176, 213], [255, 187, 120], [196, 156, 148], [247, 182, 210], [158, 218, 229],
    [219, 219, 141], [57, 59, 121]
  ];
  function rgba(c) { return (255 << 24) | (c[2] << 16) | (c[1] << 8) | c[0]; }
  var PACKED = PALETTE.map(rgba);

  // ------------------------------------------------------------ the points
  var n = 0, cap = 0, total = 0;
  var ids, xs, ys, clusters, providers, types, colours;
  var providerNames = [], typeNames = [];
  function grow(need) {
    if (need <= cap) return;
    var size = Math.max(need, cap * 2, 1024);
    function more(Kind, old) { var a = new Kind(size); if (old) a.set(old.subarray(0, n)); return a; }
    ids = more(Float64Array, ids); xs = more(Float32Array, xs); ys = more(Float32Array, ys);
    clusters = more(Int32Array, clusters); providers = more(Int16Array, providers); types = more(Int16Array, types);
    colours = more(Uint32Array, colours);
    cap = size;
  }
  function add(page) {
    var p = page.points, m = page.count, scale = page.scale || 65535;
    providerNames = page.providers; typeNames = page.types; total = page.map.records;
    grow(n + m);
    for (var i = 0; i < m; i++) {
      var j = n + i;
      ids[j] = p.id[i]; xs[j] = p.x[i] / scale; ys[j] = p.y[i] / scale;
      clusters[j] = p.cluster[i] == null ? -1 : p.cluster[i];
      providers[j] = p.provider[i]; types[j] = p.type[i];
    }
    var start = n;
    n += m;
    recolour(start);
  }

  function colourKey(i, mode) { return mode === "cluster" ? clusters[i] : mode === "type" ? types[i] : providers[i]; }
  function recolour(from) {
    var mode = colourSelect.value;
    for (var i = from || 0; i < n; i++) {
      var k = colourKey(i, mode);
      colours[i] = k < 0 ? rgba([120, 120, 120]) : PACKED[k % PACKED.length];
    }
  }
  function legend() {
    var mode = colourSelect.value, names;
    if (mode === "cluster") names = clusterNames.map(function (c) { return "#" + c.cluster + " " + c.label + " (" + c.size + ")"; });
    else names = mode === "type" ? typeNames : providerNames;
    legendEl.textContent = "";
    names.forEach(function (name, k) {
      var li = document.createElement("li"), dot = document.createElement("i");
      var c = PALETTE[k % PALETTE.length];
      dot.style.background = "rgb(" + c[0] + "," + c[1] + "," + c[2] + ")";
      li.appendChild(dot); li.appendChild(document.createTextNode(name));
      legendEl.appendChild(li);
    });
  }

  // ------------------------------------------------------------ view and drawing
  var W = 0, H = 0, dpr = 1, scaleView = 1, ox = 0, oy = 0, fitScale = 1;
  var CELL = 8, cols = 0, rows = 0, head = null, next = null, drawn = 0, pending = false;
  function toScreen(i) { return [xs[i] * scaleView + ox, (1 - ys[i]) * scaleView + oy]; }
  function resize() {
    var r = root.getBoundingClientRect();
    dpr = window.devicePixelRatio || 1;
    var first = W === 0;
    W = Math.max(1, Math.round(r.width)); H = Math.max(1, Math.round(r.height));
    canvas.width = Math.round(W * dpr); canvas.height = Math.round(H * dpr);
    fitScale = Math.min(W, H) * 0.92;
    if (first) reset(); else schedule();
  }
  function reset() {
    scaleView = fitScale; ox = (W - scaleView) / 2; oy = (H - scaleView) / 2;
    schedule();
  }
  function schedule() {
    if (pending) return;
    pending = true;
    requestAnimationFrame(function () { pending = false; draw(); });
  }
  function draw() {
    var cw = canvas.width, ch = canvas.height;
    if (!cw || !ch) return;
    var img = ctx.createImageData(cw, ch);
    var buf = new Uint32Array(img.data.buffer);
    buf.fill(0xffffffff);
    cols = Math.ceil(W / CELL); rows = Math.ceil(H / CELL);
    if (!head || head.length !== cols * rows) head = new Int32Array(cols * rows);
    head.fill(-1);
    if (!next || next.length < cap) next = new Int32Array(cap);
    var zoom = scaleView / fitScale;
    var r = Math.max(1, Math.round(Math.min(6, 2 + Math.log2(Math.max(zoom, 1))) * dpr / 2));
    var count = 0;
    for (var i = 0; i < n; i++) {
      var sx = xs[i] * scaleView + ox, sy = (1 - ys[i]) * scaleView + oy;
      if (sx < 0 || sy < 0 || sx >= W || sy >= H) continue;
      count++;
      var cell = ((sy / CELL) | 0) * cols + ((sx / CELL) | 0);
      next[i] = head[cell]; head[cell] = i;
      var px = (sx * dpr) | 0, py = (sy * dpr) | 0, c = colours[i];
      var x0 = Math.max(0, px - r + 1), x1 = Math.min(cw - 1, px + r), y0 = Math.max(0, py - r + 1), y1 = Math.min(ch - 1, py + r);
      for (var yy = y0; yy <= y1; yy++) { var row = yy * cw; for (var xx = x0; xx <= x1; xx++) buf[row + xx] = c; }
    }
    ctx.putImageData(img, 0, 0);
    drawn = count;
  }
  function nearest(mx, my, radius) {
    if (!head) return -1;
    var best = -1, bestD = radius * radius;
    var cx = (mx / CELL) | 0, cy = (my / CELL) | 0, reach = Math.ceil(radius / CELL);
    for (var gy = cy - reach; gy <= cy + reach; gy++) {
      if (gy < 0 || gy >= rows) continue;
      for (var gx = cx - reach; gx <= cx + reach; gx++) {
        if (gx < 0 || gx >= cols) continue;
        for (var i = head[gy * cols + gx]; i !== -1; i = next[i]) {
          var s = toScreen(i), dx = s[0] - mx, dy = s[1] - my, d = dx * dx + dy * dy;
          if (d <= bestD) { bestD = d; best = i; }
        }
      }
    }
    return best;
  }

  // ------------------------------------------------------------ hover, click, pan, zoom, select
  var cards = new Map();
  function card(id) {
    if (cards.has(id)) return cards.get(id);
    var url = root.dataset.recordsUrl + "?id=" + encodeURIComponent(id);
    var promise = fetch(url).then(function (r) { return r.json(); }).then(function (d) { return (d.records || [])[0] || null; });
    cards.set(id, promise);
    return promise;
  }
  var hovered = -1;
  function showTip(i, mx, my) {
    hovered = i;
    var id = ids[i];
    tip.hidden = false;
    tip.style.left = Math.min(mx + 14, W - 190) + "px";
    tip.style.top = Math.min(my + 14, H - 200) + "px";
    tip.dataset.recordId = String(id);
    tip.textContent = "…";
    card(id).then(function (c) {
      if (hovered !== i || !c) return;
      tip.textContent = "";
      if (c.preview_url) {
        var img = document.createElement("img");
        img.src = c.preview_url; img.alt = c.title || ""; img.referrerPolicy = "no-referrer";
        tip.appendChild(img);
      } else if (c.text) {
        var t = document.createElement("div"); t.className = "emb-tip-text"; t.textContent = c.text; tip.appendChild(t);
      }
      var title = document.createElement("strong"); title.textContent = c.title || String(id); tip.appendChild(title);
      var meta = document.createElement("span"); meta.textContent = c.provider_name + " · " + c.type; tip.appendChild(meta);
    });
  }
  function hideTip() { hovered = -1; tip.hidden = true; }

  var drag = null;
  function local(e) { var r = root.getBoundingClientRect(); return [e.clientX - r.left, e.clientY - r.top]; }
  root.addEventListener("pointerdown", function (e) {
    var p = local(e);
    drag = { x: p[0], y: p[1], ox: ox, oy: oy, select: e.shiftKey, moved: false };
    root.setPointerCapture(e.pointerId);
  });
  root.addEventListener("pointermove", function (e) {
    var p = local(e);
    if (drag) {
      if (Math.abs(p[0] - drag.x) + Math.abs(p[1] - drag.y) > 3) drag.moved = true;
      if (drag.select) {
        boxEl.hidden = false;
        boxEl.style.left = Math.min(p[0], drag.x) + "px"; boxEl.style.top = Math.min(p[1], drag.y) + "px";
        boxEl.style.width = Math.abs(p[0] - drag.x) + "px"; boxEl.style.height = Math.abs(p[1] - drag.y) + "px";
      } else if (drag.moved) {
        ox = drag.ox + p[0] - drag.x; oy = drag.oy + p[1] - drag.y; hideTip(); schedule();
      }
      return;
    }
    var i = nearest(p[0], p[1], 7);
    if (i === -1) hideTip(); else if (i !== hovered) showTip(i, p[0], p[1]);
    root.style.cursor = i === -1 ? "crosshair" : "pointer";
  });
  root.addEventListener("pointerup", function (e) {
    var p = local(e), d = drag;
    drag = null;
    if (!d) return;
    if (d.select && d.moved) { boxEl.hidden = true; select(d.x, d.y, p[0], p[1]); return; }
    boxEl.hidden = true;
    if (!d.moved) {
      var i = nearest(p[0], p[1], 7);
      if (i !== -1) window.location.href = root.dataset.galleryUrl + "/" + ids[i];
    }
  });
  root.addEventListener("pointerleave", function () { if (!drag) hideTip(); });
  root.addEventListener("wheel", function (e) {
    e.preventDefault();
    var p = local(e), factor = Math.exp(-e.deltaY * 0.0015);
    var s = Math.min(Math.max(scaleView * factor, fitScale * 0.2), fitScale * 5000);
    factor = s / scaleView;
    ox = p[0] - (p[0] - ox) * factor; oy = p[1] - (p[1] - oy) * factor; scaleView = s;
    hideTip(); schedule();
  }, { passive: false });
  document.getElementById("emb-reset").addEventListener("click", reset);
  colourSelect.addEventListener("change", function () { recolour(0); legend(); schedule(); });

  function select(ax, ay, bx, by) {
    var x0 = Math.min(ax, bx), x1 = Math.max(ax, bx), y0 = Math.min(ay, by), y1 = Math.max(ay, by);
    var chosen = [];
    for (var i = 0; i < n; i++) {
      var sx = xs[i] * scaleView + ox, sy = (1 - ys[i]) * scaleView + oy;
      if (sx >= x0 && sx <= x1 && sy >= y0 && sy <= y1) chosen.push(ids[i]);
    }
    selectionEl.hidden = false;
    selectionEl.textContent = "";
    var p = document.createElement("p");
    selectionEl.appendChild(p);
    if (!chosen.length) { p.textContent = "No records in that box: drag a larger one."; return; }
    if (chosen.length > maxSelection) {
      p.textContent = chosen.length.toLocaleString() + " records selected: at most " + maxSelection +
        " can be opened at once. Zoom in and select a smaller box.";
      return;
    }
    p.textContent = chosen.length.toLocaleString() + " record" + (chosen.length === 1 ? "" : "s") + " selected.";
    var query = chosen.map(function (id) { return "id=" + id; }).join("&");
    var a = document.createElement("a");
    a.className = "emb-button"; a.id = "emb-more-like-these";
    a.href = root.dataset.similarUrl + "?" + query;
    a.textContent = "Open them, with more like these";
    selectionEl.appendChild(a);
  }

  // ------------------------------------------------------------ loading
  function load(url) {
    fetch(url).then(function (r) {
      if (!r.ok) return r.json().then(function (d) { throw new Error(d.error || r.statusText); });
      return r.json();
    }).then(function (page) {
      add(page);
      if (page.after === 0) legend();
      statusEl.textContent = n.toLocaleString() + " of " + total.toLocaleString() + " points";
      schedule();
      if (page.next_url) load(page.next_url);
      else { root.dataset.loaded = "1"; statusEl.textContent = n.toLocaleString() + " points"; }
    }).catch(function (err) { statusEl.textContent = "Could not load the points: " + err.message; });
  }

  // for tests and benchmarks: where a record is drawn, how many points the last frame drew
  window.embMap = {
    count: function () { return n; },
    drawn: function () { return drawn; },
    screenOf: function (id) { for (var i = 0; i < n; i++) if (ids[i] === id) return toScreen(i); return null; },
    timeDraw: function (times) {
      var best = Infinity;
      for (var t = 0; t < (times || 1); t++) { var s = performance.now(); draw(); best = Math.min(best, performance.now() - s); }
      return best;
    },
    firstVisible: function () { for (var i = 0; i < n; i++) { var s = toScreen(i); if (s[0] > 10 && s[1] > 10 && s[0] < W - 10 && s[1] < H - 10) return [ids[i], s[0], s[1]]; } return null; }
  };
  if (window.ResizeObserver) new ResizeObserver(resize).observe(root);
  resize();
  load(root.dataset.pointsUrl);
})();
