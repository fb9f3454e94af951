// Head view: an example's tokens in two columns, lines from each query token (left) to
// the key tokens (right) as opaque as the attention weight; pickers for example, layer and
// head ("all heads": one colour per head), a slider over the snapshots, and the neuron
// view (query and key vectors, their product, scores and softmax) where data allow.
// Text is only ever set through textContent.
'use strict';
(function () {
  const data = JSON.parse(document.getElementById('layerwatch-data').textContent);
  const SVG_NS = 'http://www.w3.org/2000/svg';
  const ROW = 22;            // px per token row
  const TOP = 12;            // px above the first row
  const LEFT_X = 190;        // right edge of the query column
  const RIGHT_X = 420;       // left edge of the key column
  const GAP = 10;            // px between a token and its lines
  const COLORS = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f',
    '#bcbd22', '#17becf', '#393b79', '#ad494a', '#637939', '#8c6d31', '#7b4173', '#3182bd'];
  const $ = (id) => document.getElementById(id);
  const state = { example: 0, layer: 0, head: 'all', snapshot: 0, hover: null, pinned: null };
  const decoded = new Map();  // example index -> its maps (and vectors) as typed arrays

  // ---- data ----------------------------------------------------------------------------
  function bytesOf(b64) {
    const text = atob(b64);
    const out = new Uint8Array(text.length);
    for (let i = 0; i < text.length; i++) out[i] = text.charCodeAt(i);
    return out;
  }

  function floatsOf(b64) {
    // Written little-endian by numpy ('<f4'); DataView reads it so on any machine.
    const view = new DataView(bytesOf(b64).buffer);
    const out = new Float32Array(view.byteLength / 4);
    for (let i = 0; i < out.length; i++) out[i] = view.getFloat32(4 * i, true);
    return out;
  }

  function example(e) {
    if (!decoded.has(e)) {
      const ex = data.examples[e];
      decoded.set(e, {
        maps: bytesOf(ex.maps),
        q: ex.neuron ? floatsOf(ex.neuron.q) : null,
        k: ex.neuron ? floatsOf(ex.neuron.k) : null,
      });
    }
    return decoded.get(e);
  }

  // The weight of query i on key j, as stored: maps[snapshot][layer][head][i][j] / levels.
  function weight(e, head, i, j) {
    const n = data.examples[e].tokens.length;
    const at = (((state.snapshot * data.layers + state.layer) * data.heads + head) * n + i) * n + j;
    return example(e).maps[at] / data.levels;
  }

  function shownHeads() {
    return state.head === 'all' ? [...Array(data.heads).keys()] : [Number(state.head)];
  }

  function activeQuery() {
    return state.hover !== null ? state.hover : state.pinned;
  }

  // ---- helpers -------------------------------------------------------------------------
  function svg(tag, attrs, parent) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
    if (parent) parent.appendChild(node);
    return node;
  }

  function option(select, value, text) {
    const node = document.createElement('option');
    node.value = String(value);
    node.textContent = text;
    select.appendChild(node);
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  const rowY = (i) => TOP + i * ROW + ROW / 2;

  // ---- head view -----------------------------------------------------------------------
  function drawTokens() {
    const root = $('attention');
    clear(root);
    const tokens = data.examples[state.example].tokens;
    root.setAttribute('width', RIGHT_X + 200);
    root.setAttribute('height', TOP * 2 + tokens.length * ROW);
    svg('g', { id: 'highlights' }, root);
    svg('g', { id: 'lines' }, root);
    tokens.forEach((token, i) => {
      for (const side of ['left', 'right']) {
        const text = svg('text', {
          class: 'token ' + side, 'data-index': i, x: side === 'left' ? LEFT_X : RIGHT_X, y: rowY(i),
          'text-anchor': side === 'left' ? 'end' : 'start', 'dominant-baseline': 'middle',
        }, root);
        text.textContent = token;
        if (side === 'left') {
          text.addEventListener('mouseenter', () => { state.hover = i; drawQuery(); });
          text.addEventListener('mouseleave', () => { state.hover = null; drawQuery(); });
          text.addEventListener('click', () => { state.pinned = state.pinned === i ? null : i; drawQuery(); });
        }
      }
    });
  }

  // Lines of every query, one group per query, so that hovering only hides groups
  // (thousands of lines in "all heads" mode are built once per picker change).
  function drawLines() {
    const root = $('lines');
    clear(root);
    const n = data.examples[state.example].tokens.length;
    const heads = shownHeads();
    for (let i = 0; i < n; i++) {
      const group = svg('g', { class: 'query', 'data-query': i }, root);
      for (const head of heads) {
        for (let j = 0; j < n; j++) {
          const w = weight(state.example, head, i, j);
          if (w === 0) continue;  // below 1/510: invisible, and a long page stays light
          svg('line', {
            x1: LEFT_X + GAP, y1: rowY(i), x2: RIGHT_X - GAP, y2: rowY(j),
            stroke: COLORS[head % COLORS.length], 'stroke-width': 2, 'stroke-opacity': w.toFixed(4),
            'data-query': i, 'data-key': j, 'data-head': head, 'data-weight': w.toFixed(4),
          }, group);
        }
      }
    }
  }

  // With a query selected (hovered or clicked), only its lines show.
  function showQuery() {
    const query = activeQuery();
    for (const group of $('lines').children) {
      const shown = query === null || Number(group.dataset.query) === query;
      if (shown) group.removeAttribute('display'); else group.setAttribute('display', 'none');
    }
  }

  // Behind the key tokens, the selected query's weights (mean over the shown heads).
  function drawHighlights() {
    const group = $('highlights');
    clear(group);
    const query = activeQuery();
    for (const node of document.querySelectorAll('#attention text.left')) {
      node.classList.toggle('active', Number(node.dataset.index) === query);
    }
    if (query === null) return;
    const heads = shownHeads();
    const color = heads.length === 1 ? COLORS[heads[0] % COLORS.length] : '#555';
    for (const node of document.querySelectorAll('#attention text.right')) {
      const j = Number(node.dataset.index);
      const w = heads.reduce((sum, h) => sum + weight(state.example, h, query, j), 0) / heads.length;
      svg('rect', {
        x: RIGHT_X - 3, y: rowY(j) - ROW / 2 + 2, width: node.getComputedTextLength() + 6, height: ROW - 4,
        fill: color, 'fill-opacity': w.toFixed(4), 'data-key': j, 'data-weight': w.toFixed(4),
      }, group);
    }
  }

  function drawLegend() {
    const legend = $('legend');
    clear(legend);
    for (const head of shownHeads()) {
      const item = document.createElement('span');
      item.className = 'swatch';
      item.style.backgroundColor = COLORS[head % COLORS.length];
      item.textContent = 'head ' + (head + 1);
      legend.appendChild(item);
    }
  }

  // ---- neuron view ---------------------------------------------------------------------
  function cellFill(value, scale) {
    // Blue for positive, orange for negative, deeper with magnitude.
    return { fill: value >= 0 ? '#1f77b4' : '#ff7f0e', 'fill-opacity': Math.min(1, Math.abs(value) / scale).toFixed(3) };
  }

  function vectorCells(parent, values, x, y, cell, scale, kind) {
    values.forEach((v, c) => svg('rect', {
      x: x + c * cell, y: y, width: cell, height: ROW - 6, class: kind, ...cellFill(v, scale),
    }, parent));
  }

  function drawNeuron() {
    const root = $('neuron');
    const note = $('neuron-note');
    clear(root);
    root.setAttribute('width', 0);
    root.setAttribute('height', 0);
    const ex = data.examples[state.example];
    if (!ex.neuron) { note.textContent = 'No query and key vectors were stored for this example.'; return; }
    const slot = ex.neuron.snapshots.indexOf(state.snapshot);
    if (slot < 0) {
      note.textContent = 'Query and key vectors were stored for: ' +
        ex.neuron.snapshots.map((s) => data.snapshots[s]).join(', ') + '.';
      return;
    }
    if ((ex.damaged || []).some(([s, l]) => s === state.snapshot && l === state.layer)) {
      note.textContent = 'This layer holds non-finite values (NaN or infinity) at this snapshot.';
      return;
    }
    if (state.head === 'all') { note.textContent = 'Pick one head to see how its attention is computed.'; return; }
    const query = activeQuery();
    if (query === null) { note.textContent = 'Hover over or click a token on the left.'; return; }
    const head = Number(state.head);
    const n = ex.tokens.length;
    const d = ex.neuron.d;
    const vectors = example(state.example);
    const vector = (array, token) => {
      const start = (((slot * data.layers + state.layer) * data.heads + head) * n + token) * d;
      return Array.from(array.subarray(start, start + d));
    };
    const q = vector(vectors.q, query);
    const keys = [...Array(n).keys()].map((j) => vector(vectors.k, j));
    const products = keys.map((k) => k.map((v, c) => v * q[c]));
    const scores = products.map((p) => p.reduce((a, b) => a + b, 0) / Math.sqrt(d));
    const top = Math.max(...scores);
    const exps = scores.map((s) => Math.exp(s - top));
    const total = exps.reduce((a, b) => a + b, 0);
    const softmax = exps.map((v) => v / total);

    note.textContent = 'Query "' + ex.tokens[query] + '", head ' + (head + 1) + ', layer ' + (state.layer + 1) +
      ': score = q\u00b7k/\u221a' + d + ', attention = softmax of the scores.';
    const cell = Math.max(2, Math.min(8, Math.floor(256 / d)));
    const width = d * cell;
    const x0 = 130, xProduct = x0 + width + 20, xScore = xProduct + width + 20;
    const vecScale = Math.max(1e-9, ...q.map(Math.abs), ...keys.flat().map(Math.abs));
    const productScale = Math.max(1e-9, ...products.flat().map(Math.abs));
    root.setAttribute('width', xScore + 200);
    root.setAttribute('height', TOP + (n + 3) * ROW);
    const header = (x, text) => { svg('text', { x: x, y: TOP + ROW / 2, class: 'header' }, root).textContent = text; };
    header(x0, 'query q / key k');
    header(xProduct, 'q \u00d7 k (elementwise)');
    header(xScore, 'q\u00b7k/\u221ad');
    header(xScore + 80, 'softmax');
    const label = (y, text) => {
      svg('text', { x: x0 - 8, y: y + ROW / 2 - 3, 'text-anchor': 'end', 'dominant-baseline': 'middle', class: 'token' },
        root).textContent = text;
    };
    const yQuery = TOP + ROW;
    label(yQuery, ex.tokens[query]);
    vectorCells(root, q, x0, yQuery, cell, vecScale, 'query');
    keys.forEach((k, j) => {
      const y = TOP + (j + 2.5) * ROW;
      label(y, ex.tokens[j]);
      vectorCells(root, k, x0, y, cell, vecScale, 'key');
      vectorCells(root, products[j], xProduct, y, cell, productScale, 'product');
      svg('text', { x: xScore, y: y + ROW / 2 - 3, 'dominant-baseline': 'middle', class: 'score', 'data-key': j,
        'data-score': scores[j].toFixed(6) }, root).textContent = scores[j].toFixed(2);
      const bar = svg('g', { class: 'softmax', 'data-key': j, 'data-softmax': softmax[j].toFixed(6) }, root);
      svg('rect', { x: xScore + 80, y: y, width: Math.max(1, 60 * softmax[j]), height: ROW - 6, fill: '#1f77b4' }, bar);
      svg('text', { x: xScore + 145, y: y + ROW / 2 - 3, 'dominant-baseline': 'middle' }, bar).textContent =
        softmax[j].toFixed(3);
    });
  }

  // ---- wiring --------------------------------------------------------------------------
  function drawQuery() {
    showQuery();
    drawHighlights();
    drawNeuron();
  }

  // A layer whose weights were not finite (NaN or infinity) at a snapshot: named in its
  // picker option and in a note, and drawn without lines.
  function drawDamage() {
    const damaged = data.examples[state.example].damaged || [];
    const at = (layer) => damaged.filter(([, l]) => l === layer).map(([s]) => s);
    for (const node of $('layer').options) {
      const layer = Number(node.value);
      node.textContent = 'layer ' + (layer + 1) + (at(layer).length ? ' (non-finite)' : '');
    }
    const here = at(state.layer).includes(state.snapshot);
    $('damaged').textContent = here
      ? 'Layer ' + (state.layer + 1) + ' holds non-finite attention weights (NaN or infinity) at this snapshot, ' +
        'as when the forward pass overflows; no lines are drawn for it. The other layers are as stored.'
      : '';
    $('attention').dataset.damaged = here ? '1' : '0';
  }

  function drawAll() {
    const ex = data.examples[state.example];
    $('example-label').textContent = 'label: ' + ex.label;
    drawDamage();
    $('snapshot-title').textContent = data.snapshots[state.snapshot];
    drawLegend();
    drawTokens();
    drawLines();
    drawQuery();
    document.body.dataset.ready = '1';
  }

  $('title').textContent = data.title;
  data.examples.forEach((ex, e) => option($('example'), e, (e + 1) + ': ' + ex.label));
  for (let l = 0; l < data.layers; l++) option($('layer'), l, 'layer ' + (l + 1));
  option($('head'), 'all', 'all heads');
  for (let h = 0; h < data.heads; h++) option($('head'), h, 'head ' + (h + 1));
  $('snapshot').max = String(data.snapshots.length - 1);

  $('example').addEventListener('change', (event) => {
    state.example = Number(event.target.value);
    state.hover = state.pinned = null;
    drawAll();
  });
  $('layer').addEventListener('change', (event) => { state.layer = Number(event.target.value); drawAll(); });
  $('head').addEventListener('change', (event) => { state.head = event.target.value; drawAll(); });
  $('snapshot').addEventListener('input', (event) => { state.snapshot = Number(event.target.value); drawAll(); });
  drawAll();
})();
