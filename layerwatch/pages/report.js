// layerwatch report: draws the run held in the page's JSON block with Canvas2D.
//
// The data format is documented in layerwatch/report.py. Everything the user can write
// (texts, label names, split names, section text) reaches the page through textContent
// only, never as markup. A small read-only hook, window.layerwatchReport, tells tests
// where each row is drawn and what the page shows.
'use strict';
(function () {
  const D = JSON.parse(document.getElementById('layerwatch-data').textContent);
  const $ = (id) => document.getElementById(id);

  // tab10, the palette of the frames (seaborn "tab10"), so colours match the GIFs.
  const TAB10 = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd',
    '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22', '#17becf'];
  const VIRIDIS = [[68, 1, 84], [72, 40, 120], [62, 74, 137], [49, 104, 142], [38, 130, 142],
    [31, 158, 137], [53, 183, 121], [109, 205, 89], [180, 222, 44], [253, 231, 37]];
  const RIGHT = '#7fa7c9', WRONG = '#d7301f', NONE = '#b8b8b8';
  const HOVER = '#111', PIN = '#c2255c';   // rings of the hovered and the pinned row
  const PAD = 6;               // px between a canvas's edge and its plot area
  const Q_SPAN = 1022, Q_MISSING = 1023;
  const PLAY_MS = 800;

  const S = {                  // what the page shows
    split: 0, layer: -1,       // layer: index into the split's layers, -1 = the grid
    snap: 0, colour: 'label',
    hover: null, pinned: null, // row positions (0..rows-1)
    detailLayer: null,         // the panel a row was last pointed at in
    query: '', matches: [], matchFlags: null,
    timer: null,
  };
  const cache = {};            // decoded positions: cache[split][layer][snap], once a split is decoded
  const decoding = {};         // split -> the promise of its decoding
  let panels = [];             // {layer, canvas, ctx, w, h, px}
  let lastDrawMs = 0;
  let readyAt = null, allReadyAt = null;
  let lastPointerMs = 0;        // the last pointer move or click: finding the row, details, redraw
  let lastSearchMs = 0;         // the last search: finding the rows and drawing their highlights

  const sp = () => D.splits[S.split];
  const layerName = (l) => (l === 0 ? 'embeddings' : 'layer ' + l);
  const clamp = (v, lo, hi) => Math.min(hi, Math.max(lo, v));
  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }

  // -- data ------------------------------------------------------------------------
  // (rows * 2) data coordinates of one panel, NaN where the row was not laid out; null
  // while its split is still being decoded (ensureSplit).
  function positions(si, snap, li) {
    const c = cache[si];
    return c ? c[li][snap] : null;
  }
  function bytesOf(b64) {
    if (Uint8Array.fromBase64) return Uint8Array.fromBase64(b64);
    const bin = atob(b64), bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    return bytes;
  }
  // One layer's film (the format is in report.py): inflate, undo the byte planes, the
  // zigzag and the differences between snapshots, and map the codes onto the limits.
  async function decodeFilm(s, li) {
    const stream = new Blob([bytesOf(s.films[li])]).stream().pipeThrough(new DecompressionStream('deflate-raw'));
    const raw = new Uint8Array(await new Response(stream).arrayBuffer());
    const n = 2 * s.rows, lim = s.limits[li], q = new Int32Array(n), out = [];
    const sx = (lim[1] - lim[0]) / Q_SPAN, sy = (lim[3] - lim[2]) / Q_SPAN;
    for (let k = 0; k < s.snapshots.length; k++) {
      const at = 2 * n * k, xy = new Float32Array(n);
      for (let i = 0; i < n; i++) {
        const z = (raw[at + i] << 8) | raw[at + n + i];
        q[i] += (z >>> 1) ^ -(z & 1);
      }
      for (let i = 0; i < n; i += 2) {
        if (q[i] === Q_MISSING || q[i + 1] === Q_MISSING) { xy[i] = NaN; xy[i + 1] = NaN; continue; }
        xy[i] = lim[0] + q[i] * sx;
        xy[i + 1] = lim[2] + q[i + 1] * sy;
      }
      out.push(xy);
    }
    return out;
  }
  // Decode a split's films once (all its layers and snapshots); draw when done.
  function ensureSplit(si) {
    if (!decoding[si]) {
      const s = D.splits[si];
      decoding[si] = Promise.all(s.layers.map((_, li) => decodeFilm(s, li))).then((films) => {
        cache[si] = films;
        if (s.texts && !s.lower) s.lower = s.texts.map((t) => (t || '').toLowerCase());   // the search index
        if (S.split === si) draw();
      }, (err) => {
        // A browser without DecompressionStream('deflate-raw') (before Chrome 103, Firefox 113, Safari 16.4).
        $('panels').replaceChildren(el('p', 'This browser cannot decode the layouts (' + err + '); open the report in a current browser.', 'error'));
        throw err;
      });
    }
    return decoding[si];
  }

  function predictionOf(s, snap, row) {
    const p = s.predictions && s.predictions[snap];
    return p ? p[row] : null;
  }
  function labelText(v) {
    if (v === null || v === undefined) return '—';
    if (D.run.label_kind === 'regression') return Number(v).toPrecision(4);
    return D.label_names && v < D.label_names.length ? D.label_names[v] : String(v);
  }
  function viridis(t) {
    t = clamp(isFinite(t) ? t : 0, 0, 1) * (VIRIDIS.length - 1);
    const i = Math.min(VIRIDIS.length - 2, Math.floor(t)), f = t - i;
    const c = VIRIDIS[i].map((a, k) => Math.round(a + (VIRIDIS[i + 1][k] - a) * f));
    return 'rgb(' + c.join(',') + ')';
  }
  function classColour(c) {
    if (c === null || c === undefined) return NONE;
    const n = D.label_names ? D.label_names.length : 0;
    if (Math.max(n, c + 1) <= TAB10.length) return TAB10[c];
    return 'hsl(' + Math.round((360 * c) / Math.max(n, c + 1)) + ',65%,48%)';
  }
  function labelRange(s) {
    let lo = Infinity, hi = -Infinity;
    for (const v of s.labels) if (v !== null) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
    return [lo, hi > lo ? hi : lo + 1];
  }
  // The colour of every row in the current snapshot and colour mode.
  function colours() {
    const s = sp(), out = new Array(s.rows);
    const range = D.run.label_kind === 'regression' ? labelRange(s) : null;
    for (let i = 0; i < s.rows; i++) {
      const label = s.labels[i], pred = predictionOf(s, S.snap, i);
      if (S.colour === 'prediction') out[i] = classColour(pred);
      else if (S.colour === 'correct') out[i] = pred === null ? NONE : pred === label ? RIGHT : WRONG;
      else out[i] = range ? (label === null ? NONE : viridis((label - range[0]) / (range[1] - range[0]))) : classColour(label);
    }
    return out;
  }
  function metricValue(metric, li, snap) {
    const s = sp();
    for (const m of D.metrics) {
      if (m.split !== s.name || m.metric !== metric) continue;
      const k = m.layers.indexOf(s.layers[li]);
      return k < 0 ? null : m.values[k][snap];
    }
    return null;
  }

  // -- panels ----------------------------------------------------------------------
  function buildPanels() {
    const host = $('panels');
    host.replaceChildren();
    host.classList.toggle('single', S.layer >= 0);
    const shown = S.layer >= 0 ? [S.layer] : sp().layers.map((_, i) => i);
    panels = shown.map((li) => {
      const fig = el('figure', null, 'panel');
      const cap = el('figcaption');
      const canvas = el('canvas');
      canvas.dataset.layer = String(sp().layers[li]);
      // The dots on one canvas, a search's highlights on a second, the hovered and pinned
      // marks on a third over them: a pointer move redraws only the marks, a search only
      // the highlights.
      const found = el('canvas', null, 'marks'), over = el('canvas', null, 'marks'), stack = el('div', null, 'stack');
      stack.append(canvas, found, over);
      fig.append(cap, stack);
      host.append(fig);
      const p = { layer: li, canvas, cap, ctx: canvas.getContext('2d'), over, octx: over.getContext('2d'), found, fctx: found.getContext('2d'), w: 0, h: 0, px: null, grid: null, lit: [] };
      canvas.addEventListener('pointermove', (e) => onPointer(p, e, false));
      canvas.addEventListener('click', (e) => onPointer(p, e, true));
      canvas.addEventListener('pointerleave', () => { if (S.hover !== null) { S.hover = null; showDetails(); drawMarks(); } });
      return p;
    });
    sizePanels();
  }
  function sizePanels() {
    const dpr = window.devicePixelRatio || 1;
    for (const p of panels) {
      const w = Math.max(80, Math.floor(p.canvas.parentElement.parentElement.clientWidth));
      p.w = w; p.h = w;
      p.canvas.style.width = w + 'px'; p.canvas.style.height = w + 'px';
      p.canvas.width = Math.round(w * dpr); p.canvas.height = Math.round(w * dpr);
      p.ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
      p.over.style.width = w + 'px'; p.over.style.height = w + 'px';
      p.over.width = p.canvas.width; p.over.height = p.canvas.height;
      p.found.style.width = w + 'px'; p.found.style.height = w + 'px';
      p.found.width = p.canvas.width; p.found.height = p.canvas.height;
      p.octx.setTransform(dpr, 0, 0, dpr, 0, 0);
    }
  }
  // Data coordinates -> CSS pixels inside the canvas, with the panel's fixed limits.
  function toPixels(p, xy) {
    const lim = sp().limits[p.layer], n = xy.length / 2, out = new Float32Array(xy.length);
    const ax = (p.w - 2 * PAD) / (lim[1] - lim[0]), ay = (p.h - 2 * PAD) / (lim[3] - lim[2]);
    for (let i = 0; i < n; i++) {
      out[2 * i] = PAD + (xy[2 * i] - lim[0]) * ax;
      out[2 * i + 1] = PAD + (lim[3] - xy[2 * i + 1]) * ay;   // y grows upwards in the data
    }
    return out;
  }
  // Dots shrink as rows grow (as the frames' do), within what a pointer can still hit.
  function radius(p) { return clamp((p.w * 0.3) / Math.sqrt(sp().rows), 1.8, 4.5); }

  function draw() {
    const t0 = performance.now();
    const cols = colours();
    for (const p of panels) drawPanel(p, cols);
    drawMarks();
    lastDrawMs = performance.now() - t0;
  }
  // The hovered and pinned rings and the pinned path, on each panel's marks canvas: all
  // that a pointer move redraws.
  function drawMarks() {
    for (const p of panels) {
      p.octx.clearRect(0, 0, p.w, p.h);
      if (!p.px) continue;
      const r = radius(p);
      // On top of the dots, so that it stays visible inside a dense cluster.
      if (S.pinned !== null) drawPath(p, S.pinned);
      for (const [row, colour] of [[S.pinned, PIN], [S.hover, HOVER]]) {
        if (row === null || isNaN(p.px[2 * row])) continue;
        ring(p.octx, p.px[2 * row], p.px[2 * row + 1], r + 4, colour);
      }
    }
  }
  function drawPanel(p, cols) {
    const s = sp(), ctx = p.ctx, n = s.rows;
    const xy = positions(S.split, S.snap, p.layer);
    const knn = metricValue('knn_accuracy', p.layer, S.snap);
    p.cap.textContent = layerName(s.layers[p.layer]) + (knn === null ? '' : '  ·  kNN ' + knn.toFixed(3));
    if (!xy) {
      p.px = null; p.grid = null;
      drawFound(p, cols);
      ctx.clearRect(0, 0, p.w, p.h);
      ctx.fillStyle = '#777'; ctx.font = '13px sans-serif'; ctx.textAlign = 'center';
      ctx.fillText('decoding…', p.w / 2, p.h / 2);
      return;
    }
    const px = (p.px = toPixels(p, xy));
    p.grid = null;   // built at the first pointer move over this picture
    ctx.clearRect(0, 0, p.w, p.h);
    ctx.fillStyle = '#fff'; ctx.fillRect(0, 0, p.w, p.h);
    ctx.strokeStyle = '#d0d7de'; ctx.lineWidth = 1; ctx.strokeRect(0.5, 0.5, p.w - 1, p.h - 1);
    const r = radius(p), alpha = clamp(1.2 - 0.2 * Math.log10(Math.max(n, 10)), 0.35, 0.9);
    // One path per colour: a few fills instead of one per point.
    const groups = new Map();
    let drawn = 0;
    for (let i = 0; i < n; i++) {
      if (isNaN(px[2 * i])) continue;
      drawn++;
      if (!groups.has(cols[i])) groups.set(cols[i], []);
      groups.get(cols[i]).push(i);
    }
    ctx.globalAlpha = alpha;
    for (const [c, rows] of groups) {
      ctx.fillStyle = c;
      ctx.beginPath();
      for (const i of rows) { ctx.moveTo(px[2 * i] + r, px[2 * i + 1]); ctx.arc(px[2 * i], px[2 * i + 1], r, 0, 2 * Math.PI); }
      ctx.fill();
    }
    ctx.globalAlpha = 1;
    drawFound(p, cols);
    if (drawn === 0) {
      ctx.fillStyle = '#b00'; ctx.font = '13px sans-serif'; ctx.textAlign = 'center';
      ctx.fillText('not laid out', p.w / 2, p.h / 2);
    }
  }
  // A search's highlights: a veil over the panel's dots, and each matching row's dot on it
  // in its colour with a dark rim. Written as pixels (one ImageData per panel), not as
  // canvas paths: a search that matches every row of 25 panels of 10,000 rows stays instant.
  const rgbaOf = new Map();
  function rgba(c) {
    let v = rgbaOf.get(c);
    if (v === undefined) {
      const probe = document.createElement('canvas').getContext('2d');
      probe.fillStyle = c;
      probe.fillRect(0, 0, 1, 1);
      const d = probe.getImageData(0, 0, 1, 1).data;
      v = (255 << 24) | (d[2] << 16) | (d[1] << 8) | d[0];   // little-endian RGBA as one word
      rgbaOf.set(c, v);
    }
    return v;
  }
  // The pixel offsets within ``radius`` of a centre and beyond ``inside`` (a disc, or a rim).
  function disc(radius, inside = -1) {
    const out = [], r2 = radius * radius, i2 = inside < 0 ? -1 : inside * inside, R = Math.ceil(radius);
    for (let dy = -R; dy <= R; dy++) {
      for (let dx = -R; dx <= R; dx++) {
        const d2 = dx * dx + dy * dy;
        if (d2 <= r2 && d2 > i2) out.push(dx, dy);
      }
    }
    return out;
  }
  function drawFound(p, cols) {
    const W = p.found.width, H = p.found.height;
    p.lit = [];
    p.fctx.clearRect(0, 0, p.w, p.h);
    if (S.matchFlags === null || !p.px) return;
    const img = p.fctx.createImageData(W, H), pix = new Uint32Array(img.data.buffer);
    pix.fill((224 << 24) | 0xffffff);   // white at 88%: the other dots show through faintly
    const dpr = W / p.w, r = (radius(p) + 1) * dpr, rin = Math.max(r - dpr, 0.5);
    const rim = disc(r, rin), inner = disc(rin), dark = rgba('#111');
    const stamp = (offsets, x, y, v) => {
      for (let k = 0; k < offsets.length; k += 2) {
        const X = x + offsets[k], Y = y + offsets[k + 1];
        if (X >= 0 && Y >= 0 && X < W && Y < H) pix[Y * W + X] = v;
      }
    };
    for (const i of S.matches) {
      if (isNaN(p.px[2 * i])) continue;
      const x = Math.round(p.px[2 * i] * dpr), y = Math.round(p.px[2 * i + 1] * dpr);
      stamp(rim, x, y, dark);
      stamp(inner, x, y, cols.words ? cols.words[i] : rgba(cols[i]));
      p.lit.push(i);
    }
    p.fctx.putImageData(img, 0, 0);
  }
  function drawFoundAll() {
    const cols = colours();
    cols.words = Uint32Array.from(cols, rgba);   // each row's colour as a pixel word, once
    for (const p of panels) drawFound(p, cols);
  }
  function ring(ctx, x, y, r, colour) {
    ctx.strokeStyle = '#fff'; ctx.lineWidth = 4;       // a halo that parts the ring from the dots
    ctx.beginPath(); ctx.arc(x, y, r, 0, 2 * Math.PI); ctx.stroke();
    ctx.strokeStyle = colour; ctx.lineWidth = 2;
    ctx.beginPath(); ctx.arc(x, y, r, 0, 2 * Math.PI); ctx.stroke();
  }
  // The pinned row's way through every snapshot of this panel's layer.
  function drawPath(p, row) {
    const pts = [];
    for (let k = 0; k < sp().snapshots.length; k++) {
      const xy = positions(S.split, k, p.layer);
      if (!xy) return;
      const q = toPixels(p, xy.subarray(2 * row, 2 * row + 2));
      if (!isNaN(q[0])) pts.push([q[0], q[1], k]);
    }
    const ctx = p.octx;
    const line = () => { ctx.beginPath(); pts.forEach(([x, y], j) => (j ? ctx.lineTo(x, y) : ctx.moveTo(x, y))); ctx.stroke(); };
    ctx.lineJoin = 'round';
    ctx.strokeStyle = 'rgba(255,255,255,0.85)'; ctx.lineWidth = 4; line();
    ctx.strokeStyle = PIN; ctx.lineWidth = 1.6; line();
    for (const [x, y, k] of pts) {
      ctx.beginPath(); ctx.arc(x, y, k === 0 ? 3.5 : 2.4, 0, 2 * Math.PI);
      // Hollow where it started, filled after.
      if (k === 0) { ctx.fillStyle = '#fff'; ctx.fill(); ctx.strokeStyle = PIN; ctx.lineWidth = 1.6; ctx.stroke(); } else { ctx.fillStyle = PIN; ctx.fill(); }
    }
  }

  // -- pointer and details ---------------------------------------------------------
  // A grid of CELL-pixel cells over the panel (rows in each, counting sort): a pointer
  // looks at the 3 x 3 cells around it, whatever the number of rows.
  const CELL = 16;
  function gridOf(p) {
    const px = p.px, n = px.length / 2, gw = Math.ceil(p.w / CELL) + 1, gh = Math.ceil(p.h / CELL) + 1;
    const cellOf = new Int32Array(n), start = new Int32Array(gw * gh + 1), rows = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      const x = px[2 * i], y = px[2 * i + 1];
      if (isNaN(x) || isNaN(y)) { cellOf[i] = -1; continue; }
      const c = clamp(Math.floor(y / CELL), 0, gh - 1) * gw + clamp(Math.floor(x / CELL), 0, gw - 1);
      cellOf[i] = c; start[c + 1]++;
    }
    for (let c = 0; c < gw * gh; c++) start[c + 1] += start[c];
    const fill = start.slice(0, gw * gh);
    for (let i = 0; i < n; i++) if (cellOf[i] >= 0) rows[fill[cellOf[i]]++] = i;
    return { gw, gh, start, rows };
  }
  function nearest(p, x, y) {
    const px = p.px, reach = Math.max(8, radius(p) + 4);
    if (!px) return null;
    const g = p.grid || (p.grid = gridOf(p)), span = Math.ceil(reach / CELL);
    const cx = Math.floor(x / CELL), cy = Math.floor(y / CELL);
    let best = null, bestD = reach * reach;
    for (let gy = Math.max(0, cy - span); gy <= Math.min(g.gh - 1, cy + span); gy++) {
      for (let gx = Math.max(0, cx - span); gx <= Math.min(g.gw - 1, cx + span); gx++) {
        const c = gy * g.gw + gx;
        for (let k = g.start[c]; k < g.start[c + 1]; k++) {
          const i = g.rows[k], dx = px[2 * i] - x, dy = px[2 * i + 1] - y, d = dx * dx + dy * dy;
          if (d < bestD || (d === bestD && (best === null || i > best))) { best = i; bestD = d; }
        }
      }
    }
    return best;
  }
  function onPointer(p, e, click) {
    const t0 = performance.now();
    answerPointer(p, e, click);
    lastPointerMs = performance.now() - t0;
  }
  function answerPointer(p, e, click) {
    const rect = p.canvas.getBoundingClientRect();
    const row = nearest(p, e.clientX - rect.left, e.clientY - rect.top);
    if (click) {
      S.pinned = row === null || row === S.pinned ? null : row;   // a tap pins, as a click does
      S.hover = row;
    } else if (row === S.hover) {
      return;
    } else {
      S.hover = row;
    }
    S.detailLayer = p.layer;
    showDetails();
    drawMarks();
  }
  function showDetails() {
    const box = $('details'), s = sp();
    const row = S.hover !== null ? S.hover : S.pinned;
    markFilms();
    box.replaceChildren();
    if (row === null) {
      box.append(el('p', 'Point at a dot to read its row; click to pin it and see its path.', 'hint'));
      return;
    }
    box.append(el('h2', 'row ' + s.indices[row] + (row === S.pinned ? '  (pinned)' : '')));
    const text = s.texts ? s.texts[row] : null;
    box.append(el('p', text === null ? (s.texts ? '(no text stored for this row)' : '(texts not in this report)') : text,
      text === null ? 'text missing' : 'text'));
    const dl = el('dl');
    const pred = predictionOf(s, S.snap, row), label = s.labels[row];
    const add = (k, v, cls) => { dl.append(el('dt', k)); dl.append(el('dd', v, cls)); };
    add('label', labelText(label), 'label');
    if (s.predictions) {
      add('prediction', labelText(pred), 'prediction');
      if (D.run.label_kind !== 'regression' && pred !== null) add('', pred === label ? 'right' : 'wrong', pred === label ? 'right' : 'wrong');
    }
    add('snapshot', s.snapshots[S.snap].title);
    add('split', s.name);
    if (S.detailLayer !== null && S.detailLayer < s.layers.length) add('layer', layerName(s.layers[S.detailLayer]));
    box.append(dl);
    if (row === S.pinned) box.append(el('p', 'Its path through the snapshots is drawn in every panel; click it again or press Esc to unpin.', 'hint'));
  }

  // -- controls --------------------------------------------------------------------
  function setSnapshot(k) {
    S.snap = clamp(k, 0, sp().snapshots.length - 1);
    $('slider').value = String(S.snap);
    $('snapshot').textContent = sp().snapshots[S.snap].title + '  (' + (S.snap + 1) + ' / ' + sp().snapshots.length + ')';
    showDetails();
    draw();
    drawHeatmaps();
    drawFilms();
  }
  function play(on) {
    if (S.timer) { clearInterval(S.timer); S.timer = null; }
    if (on) S.timer = setInterval(() => setSnapshot((S.snap + 1) % sp().snapshots.length), PLAY_MS);
    $('play').textContent = on ? '❚❚' : '▶';
    $('play').setAttribute('aria-label', on ? 'pause' : 'play');
  }
  function fillSelect(sel, options, value) {
    sel.replaceChildren();
    for (const [v, text, disabled] of options) {
      const o = el('option', text); o.value = v; o.disabled = !!disabled; sel.append(o);
    }
    sel.value = value;
  }
  function search(q) {
    const t0 = performance.now();
    S.query = q;
    const s = sp(), needle = q.trim().toLowerCase();
    if (s.texts && !s.lower) s.lower = s.texts.map((t) => (t || '').toLowerCase());
    S.matches = []; S.matchFlags = null;
    if (needle) {
      S.matchFlags = new Uint8Array(s.rows);
      for (let i = 0; i < s.rows; i++) {
        // Without texts a search looks for a dataset row index.
        const hit = s.texts ? s.lower[i].includes(needle) : String(s.indices[i]) === needle;
        if (hit) { S.matchFlags[i] = 1; S.matches.push(i); }
      }
    }
    $('matches').textContent = needle ? (S.matches.length ? S.matches.length + ' match' + (S.matches.length > 1 ? 'es' : '') : 'no match') : '';
    drawFoundAll();
    lastSearchMs = performance.now() - t0;
  }
  function legend() {
    const box = $('legend'), s = sp();
    box.replaceChildren();
    const item = (colour, text) => {
      const span = el('span', null, 'item'), sw = el('i', null, 'swatch');
      sw.style.background = colour;
      span.append(sw, el('span', text));
      box.append(span);
    };
    if (S.colour === 'correct') { item(RIGHT, 'right'); item(WRONG, 'wrong'); return; }
    if (D.run.label_kind === 'regression' && S.colour === 'label') {
      const [lo, hi] = labelRange(s);
      item(viridis(0), lo.toPrecision(3)); item(viridis(0.5), ((lo + hi) / 2).toPrecision(3)); item(viridis(1), hi.toPrecision(3));
      return;
    }
    const ids = new Set(s.labels.filter((v) => v !== null));
    if (s.predictions) for (const p of s.predictions) if (p) for (const v of p) ids.add(v);
    const n = D.label_names ? D.label_names.length : 0;
    for (let c = 0; c < Math.max(n, ...[...ids].map((v) => v + 1)); c++) item(classColour(c), labelText(c));
  }
  function selectSplit(i) {
    S.split = i; S.hover = null; S.pinned = null;
    ensureSplit(i);
    const s = sp();
    S.snap = clamp(S.snap, 0, s.snapshots.length - 1);   // splits may hold different snapshots
    const hasPred = !!s.predictions, classes = D.run.label_kind !== 'regression';
    if (!hasPred || !classes) S.colour = 'label';
    fillSelect($('colour'), [['label', 'label'], ['prediction', 'prediction', !hasPred || !classes],
      ['correct', 'right / wrong', !hasPred || !classes]], S.colour);
    if (S.layer >= s.layers.length) S.layer = -1;
    fillSelect($('layer'), [['-1', 'all layers']].concat(s.layers.map((l, k) => [String(k), layerName(l)])), String(S.layer));
    $('slider').max = String(s.snapshots.length - 1);
    $('search').placeholder = s.texts ? 'text…' : 'row index…';
    buildPanels();
    legend();
    buildHeatmaps();
    search(S.query);
    setSnapshot(S.snap);
  }

  // -- metric heatmaps -------------------------------------------------------------
  let heatmaps = [];
  function buildHeatmaps() {
    const host = $('heatmaps'), s = sp();
    host.replaceChildren();
    const ms = D.metrics.filter((m) => m.split === s.name);
    heatmaps = [];
    if (!ms.length) return;
    host.append(el('h2', 'metrics per layer and snapshot: ' + s.name));
    const readout = el('p', 'Point at a cell to read it; click it to show that snapshot.', 'readout');
    host.append(readout);
    const grid = el('div', null, 'heatgrid');
    host.append(grid);
    for (const m of ms) {
      const fig = el('figure', null, 'heatmap'), canvas = el('canvas');
      canvas.dataset.metric = m.metric;
      fig.append(el('figcaption', m.metric.replace(/_/g, ' ')), canvas);
      grid.append(fig);
      let lo = Infinity, hi = -Infinity;
      for (const row of m.values) for (const v of row) if (v !== null) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
      const h = { m, canvas, lo, hi: hi > lo ? hi : lo + 1e-9, readout, geo: null };
      const cell = (e) => {
        const g = h.geo, r = canvas.getBoundingClientRect();
        const c = Math.floor((e.clientX - r.left - g.left) / g.cw), k = Math.floor((e.clientY - r.top - g.top) / g.ch);
        return c >= 0 && c < g.cols && k >= 0 && k < m.layers.length ? [c, m.layers.length - 1 - k] : null;
      };
      canvas.addEventListener('pointermove', (e) => {
        const c = cell(e);
        if (!c) return;
        const v = m.values[c[1]][c[0]];
        readout.textContent = m.metric + '  ·  ' + layerName(m.layers[c[1]]) + '  ·  ' + s.snapshots[c[0]].title + ':  ' +
          (v === null ? 'no value' : v.toFixed(4));
      });
      canvas.addEventListener('click', (e) => { const c = cell(e); if (c) setSnapshot(c[0]); });
      heatmaps.push(h);
    }
    drawHeatmaps();
  }
  function drawHeatmaps() {
    const dpr = window.devicePixelRatio || 1, s = sp();
    for (const h of heatmaps) {
      const m = h.m, cols = s.snapshots.length, nl = m.layers.length;
      const left = 78, top = 4, bottom = 20;
      const avail = Math.max(160, h.canvas.parentElement.clientWidth) - left - 6;
      const cw = clamp(Math.floor(avail / cols), 8, 56), ch = nl > 1 ? 20 : 24;
      const w = left + cw * cols + 6, hh = top + ch * nl + bottom;
      h.geo = { left, top, cw, ch, cols };
      h.canvas.style.width = w + 'px'; h.canvas.style.height = hh + 'px';
      h.canvas.width = Math.round(w * dpr); h.canvas.height = Math.round(hh * dpr);
      const ctx = h.canvas.getContext('2d');
      ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
      ctx.font = '11px sans-serif'; ctx.textBaseline = 'middle';
      for (let k = 0; k < nl; k++) {
        const y = top + (nl - 1 - k) * ch;        // the top layer at the top, as in the frames
        ctx.fillStyle = '#333'; ctx.textAlign = 'right';
        ctx.fillText(layerName(m.layers[k]), left - 6, y + ch / 2);
        for (let c = 0; c < cols; c++) {
          const v = m.values[k][c];
          ctx.fillStyle = v === null ? '#eee' : viridis((v - h.lo) / (h.hi - h.lo));
          ctx.fillRect(left + c * cw, y, cw - 1, ch - 1);
          if (v !== null && cw >= 34) {
            ctx.fillStyle = (v - h.lo) / (h.hi - h.lo) > 0.6 ? '#111' : '#fff'; ctx.textAlign = 'center';
            ctx.fillText(v.toFixed(2), left + c * cw + cw / 2, y + ch / 2);
          }
        }
      }
      ctx.fillStyle = '#555'; ctx.textAlign = 'right';
      ctx.fillText('snapshot', left - 6, top + ch * nl + 10);
      ctx.textAlign = 'center';
      const every = Math.ceil(24 / cw);
      for (let c = 0; c < cols; c += every) ctx.fillText(String(c + 1), left + c * cw + cw / 2, top + ch * nl + 10);
      ctx.strokeStyle = '#111'; ctx.lineWidth = 2;
      ctx.strokeRect(left + S.snap * cw - 1, top - 1, cw + 1, ch * nl + 1);
    }
  }

  // -- static parts ----------------------------------------------------------------
  function header() {
    $('title').textContent = D.title;
    const r = D.run, bits = [];
    if (r.method) bits.push('layouts: ' + r.method);
    if (r.pooling) bits.push('pooling: ' + r.pooling);
    bits.push(D.splits.map((s) => s.name + ' ' + s.rows + ' rows, ' + s.snapshots.length + ' snapshots').join('; '));
    $('subtitle').textContent = bits.join('  ·  ');
    const gifs = $('gifs');
    for (const s of D.splits) {
      if (!s.gif) continue;
      const a = el('a', s.name + '.gif'); a.setAttribute('href', s.gif);
      gifs.append(a);
    }
  }
  // Text with code spans: what stands between backticks is shown as code, never the
  // backticks themselves (text nodes and <code> elements only, never markup).
  function rich(tag, text, cls) {
    const e = el(tag, null, cls), parts = String(text).split('`');
    // An unpaired backtick is kept as text: an odd count leaves the last part outside code.
    const paired = parts.length % 2 === 1 ? parts.length : parts.length - 1;
    parts.forEach((part, i) => {
      if (i % 2 === 1 && i < paired) e.append(el('code', part));
      else if (part) e.append(document.createTextNode(i >= paired ? '`' + part : part));
    });
    return e;
  }
  function sections() {
    const host = $('sections');
    for (const sec of D.sections) {
      const box = el('section', null, 'extra');
      box.append(el('h2', sec.title));
      if (sec.text) box.append(rich('p', sec.text));
      if (sec.films && sec.films.length) box.append(filmsBox(sec.films));
      const frames = new Map();  // group -> the frames of a picture that follows the slider
      for (const im of sec.images) {
        if (im.snapshot) {
          if (!frames.has(im.group)) frames.set(im.group, []);
          frames.get(im.group).push(im);
          continue;
        }
        const fig = el('figure'), img = el('img');
        img.src = im.src; img.alt = im.caption;
        fig.append(img);
        if (im.caption) fig.append(el('figcaption', im.caption));
        box.append(fig);
      }
      for (const [group, list] of frames) {
        const fig = el('figure', null, 'picture'), img = el('img'), cap = el('figcaption'), note = el('p', null, 'film-note');
        fig.dataset.group = group;
        fig.append(img, cap, note);
        box.append(fig);
        pictures.push({ fig, img, cap, note, list, film: { snapshots: list.map((im) => im.snapshot) }, shown: -1 });
      }
      if (sec.datamap) box.append(dataMap(sec.datamap));
      if (sec.links.length) {
        const ul = el('ul');
        for (const ln of sec.links) { const a = el('a', ln.text); a.setAttribute('href', ln.href); const li = el('li'); li.append(a); ul.append(li); }
        box.append(ul);
      }
      host.append(box);
    }
  }

  // -- section films: a measurement's heatmaps at the slider's snapshot ---------------
  // RdBu_r, the diverging scale of the conductance frames: blue below zero, red above.
  const RDBU = [[5, 48, 97], [33, 102, 172], [67, 147, 195], [146, 197, 222], [209, 229, 240], [247, 247, 247],
    [253, 219, 199], [244, 165, 130], [214, 96, 77], [178, 24, 43], [103, 0, 31]];
  const F_LEVELS = 254, F_MISSING = 255, F_LABEL = 86, F_TOP = 58;
  const films = [];            // {film, fig, canvas, ctx, strip, note, codes, stripCodes, shown, exact, colours, geo}
  function rdbu(t) {
    t = clamp(isFinite(t) ? t : 0.5, 0, 1) * (RDBU.length - 1);
    const i = Math.min(RDBU.length - 2, Math.floor(t)), f = t - i;
    return 'rgb(' + RDBU[i].map((a, k) => Math.round(a + (RDBU[i + 1][k] - a) * f)).join(',') + ')';
  }
  const shorten = (t, n) => (t.length > n ? t.slice(0, n - 1) + '…' : t);
  function codeValue(range, q) { return q === F_MISSING ? null : range[0] + (q * (range[1] - range[0])) / F_LEVELS; }
  function filmsBox(list) {
    const box = el('div', null, 'films'), grid = el('div', null, 'filmgrid');
    const groups = [...new Set(list.map((f) => f.group))];
    const mine = [];
    if (groups.length > 1) {
      const label = el('label', 'show '), pick = el('select');
      label.append(pick);
      fillSelect(pick, groups.map((g) => [g, g]), groups[0]);
      pick.addEventListener('change', () => { for (const F of mine) F.fig.hidden = F.film.group !== pick.value; });
      box.append(label);
    }
    for (const film of list) {
      const fig = el('figure', null, 'film'), canvas = el('canvas'), note = el('p', null, 'film-note');
      fig.dataset.group = film.group;
      fig.hidden = film.group !== groups[0];
      const cap = el('figcaption', film.title);
      fig.append(cap, canvas);
      const F = { film, fig, canvas, ctx: canvas.getContext('2d'), note, strip: null, codes: bytesOf(film.values),
        stripCodes: film.strip ? bytesOf(film.strip.values) : null, shown: -1, exact: false, colours: null, geo: null };
      if (film.strip) { F.strip = el('p', null, 'strip'); fig.append(F.strip); }
      fig.append(note);
      if (film.row !== null) {
        cap.title = 'click to pin this row in the layouts, where it is monitored';
        cap.classList.add('pin');
        cap.addEventListener('click', () => pinRow(film.split, film.row));
      }
      canvas.addEventListener('pointermove', (e) => filmReadout(F, e));
      canvas.addEventListener('pointerleave', () => filmReadout(F, null));
      grid.append(fig);
      films.push(F); mine.push(F);
    }
    box.append(grid);
    return box;
  }
  // Pin a dataset row of a split in the layouts (switching split where needed); false when not monitored.
  function pinRow(split, row) {
    const si = D.splits.findIndex((s) => s.name === split);
    const pos = si < 0 ? -1 : D.splits[si].indices.indexOf(row);
    if (pos < 0) return false;
    if (si !== S.split) { selectSplit(si); fillSelect($('split'), D.splits.map((s, k) => [String(k), s.name]), String(si)); }
    S.pinned = pos; S.hover = null; showDetails(); drawMarks();
    return true;
  }
  // The frame that the slider's snapshot selects: its own, else the latest before it (-1: none).
  function frameAt(film) {
    const now = sp().snapshots[S.snap];
    let best = -1;
    for (let k = 0; k < film.snapshots.length; k++) {
      const f = film.snapshots[k];
      if (f.step === now.step && f.epoch === now.epoch) return [k, true];
      if (f.step < now.step || (f.step === now.step && f.epoch < now.epoch)) best = k;
    }
    return [best, false];
  }
  const pictures = [];         // {fig, img, cap, note, list, film, shown}: pictures that follow the slider
  function drawFilms() { for (const F of films) drawFilm(F); for (const P of pictures) drawPicture(P); }
  function drawPicture(P) {
    const [k, exact] = frameAt(P.film);
    P.shown = k;
    P.fig.dataset.snapshot = k < 0 ? '' : P.film.snapshots[k].title;
    P.img.hidden = k < 0;
    if (k >= 0 && P.img.getAttribute('src') !== P.list[k].src) { P.img.src = P.list[k].src; P.img.alt = P.list[k].caption; }
    P.cap.textContent = k < 0 ? '' : P.list[k].caption;
    P.note.textContent = k < 0 ? 'not measured at or before this snapshot'
      : (exact ? '' : 'latest before this snapshot: ' + P.film.snapshots[k].title);
  }
  function drawFilm(F) {
    const film = F.film, rows = film.ylabels.length, cols = film.xlabels.length;
    [F.shown, F.exact] = frameAt(film);
    const k = F.shown;
    F.fig.dataset.snapshot = k < 0 ? '' : film.snapshots[k].title;
    F.note.textContent = k < 0 ? 'not measured at or before this snapshot'
      : (F.exact ? film.snapshots[k].title : 'latest before this snapshot: ' + film.snapshots[k].title);
    const cw = clamp(Math.floor(560 / Math.max(cols, 1)), 8, 30), ch = clamp(Math.floor(360 / Math.max(rows, 1)), 8, 20);
    const w = F_LABEL + cols * cw + 4, h = F_TOP + rows * ch + 2, dpr = window.devicePixelRatio || 1;
    const c = F.canvas, ctx = F.ctx;
    if (!F.geo || F.geo.w !== w || F.geo.h !== h) {
      c.style.width = w + 'px'; c.style.height = h + 'px';
      c.width = Math.round(w * dpr); c.height = Math.round(h * dpr);
    }
    F.geo = { w, h, cw, ch, left: F_LABEL, top: F_TOP };
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h); ctx.fillStyle = '#fff'; ctx.fillRect(0, 0, w, h);
    ctx.fillStyle = '#333'; ctx.font = '10.5px sans-serif'; ctx.textAlign = 'right'; ctx.textBaseline = 'middle';
    for (let i = 0; i < rows; i++) ctx.fillText(shorten(film.ylabels[i], 14), F_LABEL - 4, F_TOP + (i + 0.5) * ch);
    ctx.textAlign = 'left';
    for (let j = 0; j < cols; j++) {
      ctx.save(); ctx.translate(F_LABEL + (j + 0.5) * cw, F_TOP - 4); ctx.rotate(-Math.PI / 3);
      ctx.fillText(shorten(film.xlabels[j], 10), 0, 0); ctx.restore();
    }
    F.colours = [];
    const scale = film.diverging ? rdbu : viridis;
    for (let i = 0; i < rows; i++) {
      const line = [];
      for (let j = 0; j < cols; j++) {
        const q = k < 0 ? F_MISSING : F.codes[(k * rows + i) * cols + j];
        const colour = q === F_MISSING ? '#eceff1' : scale(q / F_LEVELS);
        ctx.fillStyle = colour;
        ctx.fillRect(F_LABEL + j * cw, F_TOP + i * ch, cw - 1, ch - 1);
        line.push(colour);
      }
      F.colours.push(line);
    }
    if (F.strip) {
      const labels = film.strip.labels, n = labels.length;
      F.strip.replaceChildren();
      labels.forEach((t, j) => {
        const q = k < 0 ? F_MISSING : F.stripCodes[k * n + j], span = el('span', t, 'token');
        if (q !== F_MISSING) span.style.background = rdbu(q / F_LEVELS);
        const v = codeValue(film.strip.range, q);
        span.title = v === null ? 'no value' : v.toPrecision(3);
        F.strip.append(span, document.createTextNode(' '));
      });
    }
  }
  function filmValues(F) {
    const film = F.film, rows = film.ylabels.length, cols = film.xlabels.length, k = F.shown;
    return Array.from({ length: rows }, (_, i) => Array.from({ length: cols },
      (_, j) => (k < 0 ? null : codeValue(film.range, F.codes[(k * rows + i) * cols + j]))));
  }
  function filmReadout(F, e) {
    const g = F.geo, k = F.shown;
    if (!e || !g || k < 0) { drawFilm(F); return; }
    const r = F.canvas.getBoundingClientRect(), x = e.clientX - r.left - g.left, y = e.clientY - r.top - g.top;
    const i = Math.floor(y / g.ch), j = Math.floor(x / g.cw), film = F.film;
    if (x < 0 || y < 0 || i >= film.ylabels.length || j >= film.xlabels.length) return;
    const v = filmValues(F)[i][j];
    F.note.textContent = film.snapshots[k].title + ': ' + film.ylabels[i] + ', ' + film.xlabels[j] + ': '
      + (v === null ? 'no value' : v.toPrecision(3)) + (film.unit ? ' ' + film.unit : '');
  }
  // A film about the pinned row (the same split and dataset row) lights up.
  function markFilms() {
    const s = sp(), row = S.pinned === null ? null : s.indices[S.pinned];
    for (const F of films) F.fig.classList.toggle('pinned', row !== null && F.film.row === row && F.film.split === s.name);
  }

  // -- training dynamics: an interactive data map and the suspects table ------------
  const dataMaps = [];         // {dm, canvas, ctx, w, h, px, hover, pinned, box, order}
  function dmColour(c) {       // correctness 0..1: red, yellow, green (the frames' RdYlGn)
    const t = clamp(isFinite(c) ? c : 0, 0, 1);
    const a = t < 0.5 ? [215, 48, 39] : [254, 224, 139], b = t < 0.5 ? [254, 224, 139] : [26, 152, 80];
    const f = t < 0.5 ? t * 2 : (t - 0.5) * 2;
    return 'rgb(' + a.map((v, k) => Math.round(v + (b[k] - v) * f)).join(',') + ')';
  }
  function dmLabel(dm, v) { return dm.label_names && v >= 0 && v < dm.label_names.length ? dm.label_names[v] : String(v); }
  function dataMap(dm) {
    const wrap = el('div', null, 'datamap');
    const fig = el('figure', null, 'panel'), canvas = el('canvas'), info = el('div', null, 'dm-details');
    canvas.dataset.split = dm.split;
    fig.append(el('figcaption', 'data map of ' + dm.split + (dm.title ? ', ' + dm.title : '') + ' (' + dm.rows.length + ' rows)'), canvas);
    info.append(el('p', 'Point at a dot to read its row; click to pin it.', 'hint'));
    const row = el('div', null, 'dm-row');
    row.append(fig, info);
    wrap.append(row);
    const w = 420, h = 340, dpr = window.devicePixelRatio || 1;
    canvas.style.width = w + 'px'; canvas.style.height = h + 'px';
    canvas.width = Math.round(w * dpr); canvas.height = Math.round(h * dpr);
    const M = { dm, canvas, ctx: canvas.getContext('2d'), w, h, px: null, hover: null, pinned: null, info, order: null, sortKey: 'aum', sortUp: true };
    M.ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    const L = 40, B = 30, T = 8, R = 8;   // plot area inside the canvas
    M.px = new Float32Array(dm.rows.length * 2);
    for (let i = 0; i < dm.rows.length; i++) {
      M.px[2 * i] = L + (clamp(dm.x[i], 0, 0.5) / 0.5) * (w - L - R);
      M.px[2 * i + 1] = T + (1 - clamp(dm.y[i], 0, 1)) * (h - T - B);
    }
    M.draw = () => drawDataMap(M, L, B, T, R);
    canvas.addEventListener('pointermove', (e) => { const r = dmNearest(M, e); if (r !== M.hover) { M.hover = r; dmDetails(M); M.draw(); } });
    canvas.addEventListener('pointerleave', () => { M.hover = null; dmDetails(M); M.draw(); });
    canvas.addEventListener('click', (e) => dmPin(M, dmNearest(M, e)));
    wrap.append(suspectsTable(M));
    dataMaps.push(M);
    M.draw();
    return wrap;
  }
  function drawDataMap(M, L, B, T, R) {
    const { ctx, w, h, dm, px } = M;
    ctx.clearRect(0, 0, w, h); ctx.fillStyle = '#fff'; ctx.fillRect(0, 0, w, h);
    ctx.strokeStyle = '#d0d7de'; ctx.strokeRect(L + 0.5, T + 0.5, w - L - R - 1, h - T - B - 1);
    ctx.fillStyle = '#333'; ctx.font = '11px sans-serif'; ctx.textAlign = 'center';
    ctx.fillText('variability', L + (w - L - R) / 2, h - 6);
    for (const v of [0, 0.1, 0.2, 0.3, 0.4, 0.5]) ctx.fillText(v.toFixed(1), L + (v / 0.5) * (w - L - R), h - B + 14);
    ctx.textAlign = 'right';
    for (const v of [0, 0.25, 0.5, 0.75, 1]) ctx.fillText(v.toFixed(2), L - 4, T + (1 - v) * (h - T - B) + 4);
    ctx.save(); ctx.translate(10, T + (h - T - B) / 2); ctx.rotate(-Math.PI / 2); ctx.textAlign = 'center'; ctx.fillText('confidence', 0, 0); ctx.restore();
    const [ct, vt] = dm.thresholds;
    ctx.strokeStyle = '#aaa'; ctx.setLineDash([4, 3]); ctx.beginPath();
    ctx.moveTo(L, T + (1 - ct) * (h - T - B)); ctx.lineTo(w - R, T + (1 - ct) * (h - T - B));
    ctx.moveTo(L + (vt / 0.5) * (w - L - R), T); ctx.lineTo(L + (vt / 0.5) * (w - L - R), h - B); ctx.stroke(); ctx.setLineDash([]);
    ctx.textAlign = 'left'; ctx.fillStyle = '#555';
    ctx.fillText('easy-to-learn', L + 6, T + 14); ctx.fillText('hard-to-learn', L + 6, h - B - 6);
    ctx.fillText('ambiguous', L + (vt / 0.5) * (w - L - R) + 6, T + (h - T - B) / 2);
    ctx.globalAlpha = 0.7;
    for (let i = 0; i < dm.rows.length; i++) {
      ctx.fillStyle = dmColour(dm.correctness[i]);
      ctx.beginPath(); ctx.arc(px[2 * i], px[2 * i + 1], 2.6, 0, 2 * Math.PI); ctx.fill();
    }
    ctx.globalAlpha = 1;
    for (const [r, c] of [[M.pinned, PIN], [M.hover, HOVER]]) if (r !== null) ring(ctx, px[2 * r], px[2 * r + 1], 6, c);
  }
  function dmNearest(M, e) {
    const r = M.canvas.getBoundingClientRect(), x = e.clientX - r.left, y = e.clientY - r.top;
    let best = null, bestD = 64;
    for (let i = 0; i < M.dm.rows.length; i++) {
      const dx = M.px[2 * i] - x, dy = M.px[2 * i + 1] - y, d = dx * dx + dy * dy;
      if (d <= bestD) { best = i; bestD = d; }
    }
    return best;
  }
  function dmDetails(M) {
    const dm = M.dm, i = M.hover !== null ? M.hover : M.pinned, box = M.info;
    box.replaceChildren();
    if (i === null) { box.append(el('p', 'Point at a dot to read its row; click to pin it.', 'hint')); return; }
    box.append(el('h3', dm.split + ' row ' + dm.rows[i] + (i === M.pinned ? '  (pinned)' : '')));
    const t = dm.texts ? dm.texts[i] : null;
    box.append(t === null ? rich('p', dm.texts ? '(text not in this page; see `layerwatch suspects`)' : '(texts not in this report)', 'text missing') : el('p', t, 'text'));
    const dl = el('dl');
    const add = (k, v, cls) => { dl.append(el('dt', k)); dl.append(el('dd', v, cls)); };
    add('label', dmLabel(dm, dm.label[i]), 'label');
    add('prediction', dmLabel(dm, dm.predicted[i]), 'prediction');
    add('confidence', dm.y[i].toFixed(3), 'confidence');
    add('variability', dm.x[i].toFixed(3), 'variability');
    add('correctness', dm.correctness[i].toFixed(2), 'correctness');
    add('margin (AUM)', dm.aum[i].toFixed(3), 'aum');
    box.append(dl);
    if (i === M.pinned) box.append(el('p', M.inLayouts ? 'Pinned in the layouts above too.' : 'This row is not among the monitored rows of the layouts.', 'hint'));
  }
  // Pin a row on the map and, where it is monitored, in every layer's layout.
  function dmPin(M, i) {
    M.pinned = i === null || i === M.pinned ? null : i;
    M.inLayouts = false;
    if (M.pinned !== null) {
      const si = D.splits.findIndex((s) => s.name === M.dm.split);
      const pos = si < 0 ? -1 : D.splits[si].indices.indexOf(M.dm.rows[M.pinned]);
      if (pos >= 0) {
        if (si !== S.split) { selectSplit(si); fillSelect($('split'), D.splits.map((s, k) => [String(k), s.name]), String(si)); }
        S.pinned = pos; S.hover = null; showDetails(); drawMarks();
        M.inLayouts = true;
      }
    }
    dmDetails(M); M.draw();
    if (M.body) M.fillTable();
  }
  function suspectsTable(M) {
    const dm = M.dm, box = el('div', null, 'suspects');
    const cols = [['rank', 'rank'], ['row', 'row'], ['aum', 'AUM'], ['y', 'confidence'], ['x', 'variability'],
      ['correctness', 'correctness'], ['label', 'label'], ['predicted', 'prediction'], ['text', 'text']];
    const ranked = dm.rows.map((_, i) => i).sort((a, b) => dm.aum[a] - dm.aum[b] || dm.y[a] - dm.y[b] || dm.rows[a] - dm.rows[b]);
    const top = ranked.slice(0, dm.top), rank = new Map(top.map((i, k) => [i, k + 1]));
    const value = (i, k) => (k === 'rank' ? rank.get(i) : k === 'row' ? dm.rows[i] : k === 'text' ? (dm.texts && dm.texts[i]) || ''
      : k === 'label' || k === 'predicted' ? dmLabel(dm, dm[k][i]) : dm[k][i]);
    const head = el('p');
    head.append(el('span', 'The ' + top.length + ' rows with the lowest area under the margin (click a heading to sort). '));
    const dl = el('button', 'download CSV'); dl.type = 'button'; dl.className = 'download';
    head.append(dl);
    const table = el('table', null, 'suspects-table'), thead = el('thead'), tr = el('tr');
    M.body = el('tbody');
    for (const [k, name] of cols) {
      const th = el('th', name); th.dataset.key = k;
      th.addEventListener('click', () => { M.sortUp = M.sortKey === k ? !M.sortUp : true; M.sortKey = k; M.fillTable(); });
      tr.append(th);
    }
    thead.append(tr); table.append(thead, M.body);
    M.sorted = () => {
      const k = M.sortKey === 'rank' ? 'aum' : M.sortKey, dir = M.sortUp ? 1 : -1;
      return top.slice().sort((a, b) => {
        const va = value(a, k), vb = value(b, k);
        return (typeof va === 'string' ? va.localeCompare(vb) : va - vb) * dir || rank.get(a) - rank.get(b);
      });
    };
    M.fillTable = () => {
      M.body.replaceChildren();
      M.order = M.sorted();
      for (const i of M.order) {
        const r = el('tr');
        if (i === M.pinned) r.className = 'pinned';
        for (const [k] of cols) {
          const v = value(i, k);
          r.append(el('td', typeof v === 'number' && !Number.isInteger(v) ? v.toFixed(3) : v));
        }
        r.addEventListener('click', () => dmPin(M, i));
        M.body.append(r);
      }
    };
    const csvCell = (v) => { const t = String(v); return /[",\n]/.test(t) ? '"' + t.replace(/"/g, '""') + '"' : t; };
    M.csv = () => [cols.map(([, n]) => n).join(',')].concat(
      top.map((i) => cols.map(([k]) => csvCell(value(i, k))).join(','))).join('\n') + '\n';
    dl.addEventListener('click', () => {
      const a = el('a');
      a.setAttribute('href', 'data:text/csv;charset=utf-8,' + encodeURIComponent(M.csv()));
      a.setAttribute('download', 'suspects_' + dm.split + '.csv');
      document.body.append(a); a.click(); a.remove();
    });
    M.fillTable();
    box.append(head, table);
    return box;
  }

  // -- start -----------------------------------------------------------------------
  header();
  sections();
  fillSelect($('split'), D.splits.map((s, i) => [String(i), s.name]), '0');
  $('split').addEventListener('change', (e) => selectSplit(Number(e.target.value)));
  $('layer').addEventListener('change', (e) => { S.layer = Number(e.target.value); buildPanels(); draw(); });
  $('colour').addEventListener('change', (e) => { S.colour = e.target.value; legend(); draw(); });
  $('slider').addEventListener('input', (e) => setSnapshot(Number(e.target.value)));
  $('play').addEventListener('click', () => play(!S.timer));
  $('search').addEventListener('input', (e) => search(e.target.value));
  $('search').addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && S.matches.length) { S.pinned = S.matches[0]; showDetails(); drawMarks(); }
  });
  document.addEventListener('keydown', (e) => {
    if (e.key === 'Escape' && S.pinned !== null) { S.pinned = null; showDetails(); drawMarks(); }
  });
  let resizing = false;
  window.addEventListener('resize', () => {
    if (resizing) return;
    resizing = true;
    requestAnimationFrame(() => { resizing = false; sizePanels(); draw(); drawHeatmaps(); drawFilms(); });
  });
  selectSplit(0);

  // -- read-only hook for tests and tools ------------------------------------------
  function panelOf(split, layer) {
    if (D.splits[S.split].name !== split) return null;
    return panels.find((p) => sp().layers[p.layer] === layer) || null;
  }
  window.layerwatchReport = Object.freeze({
    // The CSS pixel (viewport) position where a row is drawn now, or null.
    pointOf(split, layer, row) {
      const p = panelOf(split, layer);
      if (!p || !p.px || isNaN(p.px[2 * row])) return null;
      const r = p.canvas.getBoundingClientRect();
      return { x: r.left + p.px[2 * row], y: r.top + p.px[2 * row + 1] };
    },
    // The plot area of a panel in viewport CSS pixels: its limits map onto this box.
    panelBox(split, layer) {
      const p = panelOf(split, layer);
      if (!p) return null;
      const r = p.canvas.getBoundingClientRect();
      return { left: r.left + PAD, top: r.top + PAD, width: p.w - 2 * PAD, height: p.h - 2 * PAD };
    },
    // The centre of a heatmap cell in viewport CSS pixels, or null.
    cellOf(metric, layer, snapshot) {
      const h = heatmaps.find((x) => x.m.metric === metric);
      const k = h ? h.m.layers.indexOf(layer) : -1;
      if (k < 0 || !h.geo) return null;
      const r = h.canvas.getBoundingClientRect(), g = h.geo;
      return { x: r.left + g.left + (snapshot + 0.5) * g.cw, y: r.top + g.top + (h.m.layers.length - 1 - k + 0.5) * g.ch };
    },
    // The decoded data coordinates of every row of a panel at a snapshot ([x, y] or null
    // where not laid out), or null while that split is not decoded.
    positionsOf(split, layer, snapshot) {
      const si = D.splits.findIndex((s) => s.name === split), s = D.splits[si];
      const li = s ? s.layers.indexOf(layer) : -1, xy = li < 0 ? null : positions(si, snapshot, li);
      if (!xy) return null;
      return Array.from({ length: s.rows }, (_, i) => (isNaN(xy[2 * i]) ? null : [xy[2 * i], xy[2 * i + 1]]));
    },
    colourOf(split, layer, row) { return panelOf(split, layer) ? colours()[row] : null; },
    // The rows a search highlights in a panel (drawn on its highlights layer), in order.
    highlightedOf(split, layer) { const p = panelOf(split, layer); return p ? p.lit.slice() : null; },
    // The colour (r, g, b, a) of the highlights layer at a row's dot centre in a panel.
    highlightPixelOf(split, layer, row) {
      const p = panelOf(split, layer);
      if (!p || !p.px || isNaN(p.px[2 * row])) return null;
      const dpr = p.found.width / p.w;
      return Array.from(p.fctx.getImageData(Math.round(p.px[2 * row] * dpr), Math.round(p.px[2 * row + 1] * dpr), 1, 1).data);
    },
    state() {
      const s = sp();
      return {
        split: s.name, layer: S.layer >= 0 ? s.layers[S.layer] : null, snapshot: S.snap,
        snapshotTitle: s.snapshots[S.snap].title, colour: S.colour, hovered: S.hover, pinned: S.pinned,
        matches: S.matches.slice(), playing: !!S.timer, lastDrawMs, lastPointerMs, lastSearchMs, decoded: !!cache[S.split],
      };
    },
    // Every section film: what it shows now (the snapshot of its frame, exact or the latest
    // before the slider's, its cells' values and colours, its strip), and whether it is lit.
    films() {
      return films.map((F) => ({
        title: F.film.title, group: F.film.group, split: F.film.split, row: F.film.row, visible: !F.fig.hidden,
        snapshot: F.shown < 0 ? null : F.film.snapshots[F.shown], exact: F.exact,
        pinned: F.fig.classList.contains('pinned'), values: filmValues(F), colours: F.colours,
        strip: F.strip ? Array.from(F.strip.querySelectorAll('.token'), (t) => [t.textContent, t.style.background]) : null,
      }));
    },
    // The centre of a film's cell in viewport CSS pixels (its n-th film, 0-based), or null.
    filmCell(n, i, j) {
      const F = films[n];
      if (!F || !F.geo || F.fig.hidden) return null;
      const r = F.canvas.getBoundingClientRect(), g = F.geo;
      return { x: r.left + g.left + (j + 0.5) * g.cw, y: r.top + g.top + (i + 0.5) * g.ch };
    },
    pinRow,
    // When the first picture was drawn (performance.now(), ms from the navigation), null before.
    get readyMs() { return readyAt; },
    // When every split was decoded (ms), null before.
    get allReadyMs() { return allReadyAt; },
  });
  // The data maps (training dynamics), for tests: where a row is drawn, what is shown.
  window.layerwatchDataMap = Object.freeze({
    pointOf(split, row) {
      const M = dataMaps.find((m) => m.dm.split === split), i = M ? M.dm.rows.indexOf(row) : -1;
      if (i < 0) return null;
      const r = M.canvas.getBoundingClientRect();
      return { x: r.left + M.px[2 * i], y: r.top + M.px[2 * i + 1] };
    },
    state(split) {
      const M = dataMaps.find((m) => m.dm.split === split);
      if (!M) return null;
      return {
        hovered: M.hover === null ? null : M.dm.rows[M.hover], pinned: M.pinned === null ? null : M.dm.rows[M.pinned],
        tableRows: M.order.map((i) => M.dm.rows[i]), sortKey: M.sortKey, sortUp: M.sortUp, csv: M.csv(),
        details: M.info.textContent,
      };
    },
  });
  // Ready once the first split is decoded and drawn.
  // The first picture is drawn once the first split is decoded; the page is ready (every
  // split decoded, so that a switch draws at once) after the others.
  ensureSplit(0).then(() => {
    readyAt = performance.now();
    return Promise.all(D.splits.map((_, i) => ensureSplit(i)));
  }).then(() => { allReadyAt = performance.now(); document.body.dataset.ready = '1'; });
})();
