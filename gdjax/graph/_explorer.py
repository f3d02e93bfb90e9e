"""The explorer page's script and style, written for gdjax (no library, no network).

The script reads the graph from ``<script id="gd-data" type="application/json">`` and
draws it as SVG. Layout (redone on every collapse or expand): the visible units are the
nodes and the collapsed groups; a unit's column is its longest path from a source (an
input sits just left of its first use); within a column units are ordered by the mean
row of their neighbours (a few sweeps each way, the barycentre heuristic of Sugiyama et
al., 1981).
"""

CSS = r"""
body{margin:0;font:13px/1.35 system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;
 color:#212529;background:#fff}
#gd-bar{position:sticky;top:0;z-index:2;display:flex;gap:8px;align-items:center;flex-wrap:wrap;
 padding:6px 10px;background:#f8f9fa;border-bottom:1px solid #dee2e6}
#gd-bar h1{font-size:15px;margin:0 8px 0 0}
#gd-bar input{width:14em;padding:2px 6px}
#gd-bar button{padding:2px 8px}
#gd-count{color:#666;min-width:6em}
.gd-legend span{display:inline-block;padding:0 6px;margin-right:3px;border:1px solid #999;
 border-radius:3px;font-size:11px}
#gd-main{display:flex;align-items:flex-start}
#gd-canvas{flex:1;overflow:auto;height:calc(100vh - 44px)}
#gd-detail{width:330px;flex:none;height:calc(100vh - 44px);overflow:auto;padding:8px 10px;
 border-left:1px solid #dee2e6;font-size:12px;background:#fcfcfc}
#gd-detail h2{font-size:14px;margin:4px 0}
#gd-detail table{border-collapse:collapse;font:11px ui-monospace,Menlo,Consolas,monospace}
#gd-detail td,#gd-detail th{border:1px solid #e9ecef;padding:1px 4px;text-align:right}
#gd-detail .gd-k{color:#666}
#gd-summary{padding:4px 10px;background:#fff5f5;border-bottom:1px solid #ffc9c9}
#gd-summary.gd-allok{background:#ebfbee;border-color:#b2f2bb}
svg text{font:11.5px ui-monospace,Menlo,Consolas,monospace;fill:#212529}
.gd-node rect{stroke:#495057;stroke-width:1;rx:6}
.gd-node{cursor:pointer}
.gd-node.gd-fan rect{stroke:#e8590c;stroke-width:2.2}
.gd-node.gd-sel rect{stroke:#1c7ed6;stroke-width:3}
.gd-node.gd-match rect{stroke:#f08c00;stroke-width:3.5}
.gd-dim{opacity:.25}
.gd-node text.gd-name{font-weight:bold}
.gd-node text.gd-fsum{fill:#d9480f}
.gd-node text.gd-why{fill:#c92a2a}
.gd-edge{fill:none;stroke:#868e96;stroke-width:1.2}
.gd-edge.gd-fan{stroke:#e8590c}
.gd-elabel{font-size:10px !important;fill:#495057 !important;stroke:#fff;stroke-width:3px;
 paint-order:stroke}
.gd-elabel.gd-fan{fill:#d9480f !important}
.gd-box{fill:#f1f3f5;fill-opacity:.5;stroke:#adb5bd;stroke-dasharray:4 3}
.gd-toggle{cursor:pointer;font-weight:bold;fill:#364fc7 !important}
.gd-group rect{stroke:#364fc7;stroke-width:1.5;stroke-dasharray:5 2}
.gd-ok rect{fill:#d3f9d8 !important;stroke:#2f9e44 !important;stroke-width:2}
.gd-wrong rect{fill:#ffe3e3 !important;stroke:#e03131 !important;stroke-width:2.5}
.gd-first rect{fill:#ffc9c9 !important;stroke:#c92a2a !important;stroke-width:4.5}
.gd-inherited rect{fill:url(#gd-hatch) !important;stroke:#f08c00 !important;stroke-width:2}
"""

JS = r"""
(function () {
'use strict';
const D = JSON.parse(document.getElementById('gd-data').textContent);
const NS = 'http://www.w3.org/2000/svg';
const W = 225, LH = 15, GAP = 145, VGAP = 16;
const nodes = D.nodes, byName = new Map(nodes.map(n => [n.name, n]));
const groups = new Map(D.groups.map(g => [g.id, g]));
const collapsed = new Set(D.groups.filter(g => g.collapsed).map(g => g.id));
let selected = null, matches = [], scale = 1;
const canvas = document.getElementById('gd-canvas'), detail = document.getElementById('gd-detail');

function el(tag, attrs, parent) {
  const e = document.createElementNS(NS, tag);
  for (const k in attrs) e.setAttribute(k, attrs[k]);
  if (parent) parent.appendChild(e);
  return e;
}
function cut(s, n) { s = String(s); return s.length > n ? s.slice(0, n - 1) + '\u2026' : s; }
function unitOf(n) {
  for (const g of n.groups) if (collapsed.has(g)) return 'g:' + g;
  return 'n:' + n.name;
}
function nodeLines(n) {
  const head = (n.kind === 'input' || n.kind === 'const' || n.expr === n.name)
    ? n.name : n.name + ' = ' + n.expr;
  const L = [[head, 'gd-name']];
  if (n.shape !== '') L.push([n.dtype + '[' + n.shape + ']  ' + n.op, '']);
  L.push(['value ' + n.value, '']);
  if (n.adjoint !== null) L.push(['adjoint ' + n.adjoint, '']);
  else if (n.why) L.push(['adjoint \u2014 (' + n.why + ')', 'gd-why']);
  if (n.fan) L.push(['= ' + n.fan, 'gd-fsum']);
  if (n.check) {
    L.push(['hand ' + n.check.hand + '  ' + n.check.badge, 'gd-why']);
  }
  return L;
}
function groupLines(g) {
  const L = [['\u25b8 ' + g.label, 'gd-toggle'], [g.size + ' nodes (click \u25b8 to expand)', '']];
  const out = byName.get(g.exit);
  if (out) {
    L.push([out.name + ' value ' + out.value, '']);
    if (out.adjoint !== null) L.push(['adjoint ' + out.adjoint, '']);
  }
  return L;
}

function buildUnits() {
  const units = new Map(), order = [];
  nodes.forEach((n, i) => {
    const id = unitOf(n);
    if (!units.has(id)) {
      const g = id.startsWith('g:') ? groups.get(id.slice(2)) : null;
      units.set(id, {id, group: g, node: g ? null : n, first: i, preds: new Set(),
        succs: new Set(), fan: !g && n.fanout});
      order.push(id);
    }
  });
  const edges = [];
  for (const e of D.edges) {
    const s = unitOf(byName.get(e.src)), t = unitOf(byName.get(e.dst));
    if (s === t) continue;
    units.get(s).succs.add(t); units.get(t).preds.add(s);
    edges.push({e, s, t});
  }
  return {units, order, edges};
}

function layout(U) {
  const depth = new Map(), indeg = new Map();
  for (const id of U.order) indeg.set(id, U.units.get(id).preds.size);
  const done = new Set(), topo = [], queue = U.order.filter(id => indeg.get(id) === 0);
  while (done.size < U.order.length) {
    if (!queue.length) queue.push(U.order.find(id => !done.has(id)));  // a cycle: break it
    const id = queue.shift();
    if (done.has(id)) continue;
    done.add(id); topo.push(id);
    const u = U.units.get(id);
    let d = 0;
    for (const p of u.preds) if (depth.has(p)) d = Math.max(d, depth.get(p) + 1);
    depth.set(id, d);
    for (const s of u.succs) {
      indeg.set(s, indeg.get(s) - 1);
      if (indeg.get(s) === 0) queue.push(s);
    }
  }
  for (const id of [...topo].reverse()) {  // as late as possible: just left of the first use
    const u = U.units.get(id);
    if (u.succs.size) depth.set(id, Math.min(...[...u.succs].map(s => depth.get(s))) - 1);
  }
  // an expanded group takes columns of its own: everything it feeds lies to its right
  const topOf = id => {
    const u = U.units.get(id), path = u.node ? u.node.groups : u.group.path.slice(0, -1);
    for (const g of path) if (!collapsed.has(g)) return 'G' + g;
    return id;
  };
  const members = new Map();
  for (const id of U.order) {
    const t = topOf(id);
    (members.get(t) || members.set(t, []).get(t)).push(id);
  }
  for (let it = 0, changed = true; changed && it < 80; it++) {
    changed = false;
    const maxc = new Map([...members].map(([t, ms]) => [t, Math.max(...ms.map(m => depth.get(m)))
    ]));
    for (const x of U.edges) {
      const a = topOf(x.s), b = topOf(x.t);
      const lo = a === b ? depth.get(x.s) + 1 : maxc.get(a) + 1;
      for (const m of (a === b ? [x.t] : members.get(b))) {
        if (depth.get(m) < lo) { depth.set(m, lo); changed = true; }
      }
    }
  }
  for (const id of U.order) {  // a source outside the groups: left of the group it feeds
    const u = U.units.get(id);
    if (u.preds.size || !u.succs.size || topOf(id) !== id) continue;
    const minOf = t => Math.min(...members.get(t).map(m => depth.get(m)));
    const first = Math.min(...[...u.succs].map(s => minOf(topOf(s))));
    depth.set(id, Math.max(0, first - 1));
  }
  const used = [...new Set(U.order.map(id => depth.get(id)))].sort((a, b) => a - b);
  const cols = used.map(d => U.order.filter(id => depth.get(id) === d));  // no empty column
  const rowOf = new Map();
  const setRows = () => cols.forEach(c => c && c.forEach((id, j) => rowOf.set(id, j)));
  setRows();
  const bary = (id, side) => {
    const ns = [...U.units.get(id)[side]];
    return ns.length ? ns.reduce((a, b) => a + rowOf.get(b), 0) / ns.length : rowOf.get(id);
  };
  for (let sweep = 0; sweep < 4; sweep++) {
    const side = sweep % 2 ? 'succs' : 'preds';
    for (const c of (sweep % 2 ? [...cols].reverse() : cols)) {
      if (!c) continue;
      const key = new Map(c.map(id => [id, bary(id, side)]));
      c.sort((a, b) => key.get(a) - key.get(b));
      c.forEach((id, j) => rowOf.set(id, j));
    }
  }
  const pos = new Map();
  let height = 0;
  const heights = cols.map(c => (c || []).reduce((h, id) => h + boxH(U.units.get(id)) + VGAP, 0));
  const tallest = Math.max(0, ...heights);
  cols.forEach((c, d) => {
    let y = 40 + (tallest - heights[d]) / 2;
    for (const id of (c || [])) {
      const h = boxH(U.units.get(id));
      pos.set(id, {x: 30 + d * (W + GAP), y, h});
      y += h + VGAP;
      height = Math.max(height, y);
    }
  });
  return {pos, width: 60 + cols.length * (W + GAP), height: height + 40};
}
function lines(u) { return u.group ? groupLines(u.group) : nodeLines(u.node); }
function boxH(u) { return 10 + LH * lines(u).length; }

function render() {
  const U = buildUnits(), P = layout(U);
  canvas.innerHTML = '';
  const svg = el('svg', {id: 'gd-svg', width: P.width * scale, height: P.height * scale,
    viewBox: '0 0 ' + P.width + ' ' + P.height}, canvas);
  const defs = el('defs', {}, svg);
  const pat = el('pattern', {id: 'gd-hatch', width: 8, height: 8, patternUnits: 'userSpaceOnUse',
    patternTransform: 'rotate(45)'}, defs);
  el('rect', {width: 8, height: 8, fill: '#fff4e6'}, pat);
  el('line', {x1: 0, y1: 0, x2: 0, y2: 8, stroke: '#ffc078', 'stroke-width': 3}, pat);
  const mk = el('marker', {id: 'gd-arrow', viewBox: '0 0 10 10', refX: 10, refY: 5,
    markerWidth: 7, markerHeight: 7, orient: 'auto'}, defs);
  el('path', {d: 'M0,0 L10,5 L0,10 z', fill: '#868e96'}, mk);
  drawBoxes(svg, U, P);
  const layer = el('g', {}, svg);
  drawEdges(layer, U, P);
  for (const id of U.order) drawUnit(svg, U.units.get(id), P.pos.get(id));
  highlight();
}

function drawBoxes(svg, U, P) {
  // every expanded group with a visible member: a dashed box with a header that collapses it
  const ext = new Map();
  for (const id of U.order) {
    const u = U.units.get(id);
    const path = u.node ? u.node.groups : u.group.path.slice(0, -1);
    for (const g of path) {
      if (collapsed.has(g)) continue;
      const p = P.pos.get(id), b = ext.get(g) || {x0: 1e9, y0: 1e9, x1: -1e9, y1: -1e9};
      b.x0 = Math.min(b.x0, p.x); b.y0 = Math.min(b.y0, p.y);
      b.x1 = Math.max(b.x1, p.x + W); b.y1 = Math.max(b.y1, p.y + p.h);
      ext.set(g, b);
    }
  }
  const level = g => groups.get(g).path.length;
  const sorted = [...ext.keys()].sort((a, b) => level(a) - level(b));
  for (const g of sorted) {
    const b = ext.get(g), pad = 14 - 4 * Math.min(groups.get(g).path.length - 1, 2);
    const box = el('g', {class: 'gd-gbox', 'data-group': g}, svg);
    el('rect', {class: 'gd-box', x: b.x0 - pad, y: b.y0 - pad - 14, width: b.x1 - b.x0 + 2 * pad,
      height: b.y1 - b.y0 + 2 * pad + 14, rx: 8}, box);
    const t = el('text', {class: 'gd-toggle', 'data-group': g, x: b.x0 - pad + 6,
      y: b.y0 - pad - 2}, box);
    t.textContent = '\u25be ' + groups.get(g).label;
    t.addEventListener('click', ev => { ev.stopPropagation(); collapsed.add(g); render(); });
  }
}

function drawEdges(layer, U, P) {
  const outs = new Map(), ins = new Map();
  for (const x of U.edges) {
    (outs.get(x.s) || outs.set(x.s, []).get(x.s)).push(x);
    (ins.get(x.t) || ins.set(x.t, []).get(x.t)).push(x);
  }
  const port = new Map();
  for (const [m, side, other] of [[outs, 's', 't'], [ins, 't', 's']]) {
    for (const [id, list] of m) {
      list.sort((a, b) => P.pos.get(a[other]).y - P.pos.get(b[other]).y);
      const p = P.pos.get(id);
      list.forEach((x, k) => port.set(x, Object.assign(port.get(x) || {},
        {[side]: p.y + p.h * (k + 1) / (list.length + 1)})));
    }
  }
  for (const x of U.edges) {
    const a = P.pos.get(x.s), b = P.pos.get(x.t), pt = port.get(x);
    const x1 = a.x + W, y1 = pt.s, x2 = b.x, y2 = pt.t, dx = Math.max(40, (x2 - x1) / 2);
    const fan = byName.get(x.e.src).fanout && U.units.get(x.s).node;
    const cls = 'gd-edge' + (fan ? ' gd-fan' : '');
    el('path', {class: cls, d: `M${x1},${y1} C${x1 + dx},${y1} ${x2 - dx},${y2} ${x2},${y2}`,
      'marker-end': 'url(#gd-arrow)', 'data-src': x.e.src, 'data-dst': x.e.dst}, layer);
    if (x.e.label) {
      const t = el('text', {class: 'gd-elabel' + (fan ? ' gd-fan' : ''), x: x2 - 6,
        y: y2 - 3, 'text-anchor': 'end'}, layer);
      t.textContent = cut(x.e.label, 24);
      if (x.e.label.length > 24) el("title", {}, t).textContent = x.e.label;
    }
  }
}

function drawUnit(svg, u, p) {
  const n = u.node, g = u.group;
  let cls = g ? 'gd-node gd-group' : 'gd-node' + (n.fanout ? ' gd-fan' : '');
  if (n && n.check) cls += ' gd-' + n.check.status;
  const box = el('g', {class: cls, transform: `translate(${p.x},${p.y})`}, svg);
  box.setAttribute(g ? 'data-group' : 'data-name', g ? g.id : n.name);
  el('rect', {width: W, height: p.h, fill: g ? '#edf2ff' : n.fill}, box);
  lines(u).forEach(([s, c], k) => {
    const t = el('text', {x: 7, y: 17 + k * LH, class: c}, box);
    t.textContent = cut(s, 31);
    if (s.length > 31) el('title', {}, t).textContent = s;
    if (g && k === 0) t.setAttribute('data-group', g.id);
  });
  box.addEventListener('click', () => {
    if (g) { collapsed.delete(g.id); render(); return; }
    selected = n.name; show(n); highlight();
  });
}

function highlight() {
  const q = new Set(matches);
  document.querySelectorAll('.gd-node').forEach(e => {
    const name = e.getAttribute('data-name');
    e.classList.toggle('gd-sel', name !== null && name === selected);
    e.classList.toggle('gd-match', q.has(name));
    e.classList.toggle('gd-dim', q.size > 0 && !q.has(name));
  });
}

function arrayTable(a) {
  if (!a) return '<p class="gd-k">no adjoint</p>';
  let h = `<p><span class="gd-k">shape</span> (${a.shape.join(', ')}) ` +
    `<span class="gd-k">${a.dtype}</span><br>`;
  for (const k of ['min', 'max', 'mean', 'norm']) {
    if (k in a) h += `<span class="gd-k">${k}</span> ${a[k]} `;
  }
  h += '</p><table>';
  const cols = a.shape.length >= 2 ? a.shape[a.shape.length - 1]
    : Math.max(1, Math.min(a.values.length, 8));
  for (let i = 0; i < a.values.length; i += cols) {
    h += `<tr><th>${a.shape.length >= 2 ? 'row ' + i / cols : i}</th>` +
      a.values.slice(i, i + cols).map(v => `<td>${v}</td>`).join('') + '</tr>';
  }
  h += '</table>';
  if (a.truncated) h += `<p class="gd-k">first ${a.values.length} of ${a.size} entries</p>`;
  return h;
}
const ESC = {'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;'};
function esc(s) { return String(s).replace(/[&<>"]/g, c => ESC[c]); }
function show(n) {
  const ins = D.edges.filter(e => e.dst === n.name), uses = D.edges.filter(e => e.src === n.name);
  let h = `<h2>${esc(n.name)}</h2><p><span class="gd-k">op</span> ${esc(n.op)}<br>` +
    `<span class="gd-k">computed as</span> ${esc(n.expr)}</p>`;
  if (n.note) h += `<p><i>${esc(n.note)}</i></p>`;
  if (n.check) {
    h += `<p><b>hand-written vs autodiff (${esc(n.check.row)}): ${esc(n.check.badge)}</b><br>` +
      `hand-written ${esc(n.check.hand)}<br>autodiff ${esc(n.adjoint)}`;
    if (n.check.cause) h += `<br>${esc(n.check.cause)}`;
    h += '</p>';
  }
  h += '<h2>value</h2>' + arrayTable(n.detail.value) + '<h2>adjoint dJ/d' + esc(n.name) + '</h2>' +
    arrayTable(n.detail.adjoint);
  if (n.detail.hand) h += '<h2>hand-written adjoint</h2>' + arrayTable(n.detail.hand);
  if (ins.length) {
    h += '<h2>inputs</h2>' + ins.map(e => `${esc(e.src)} ${esc(e.label || '')}`).join('<br>');
  }
  if (uses.length) {
    h += `<h2>uses (${uses.length})</h2>` +
      uses.map(e => `\u2192 ${esc(e.dst)} sends back ${esc(e.back)}`).join('<br>');
  }
  if (n.fan) h += `<p>adjoint = ${esc(n.fan)}</p>`;
  detail.innerHTML = h;
}

function search(text) {
  const q = text.trim().toLowerCase();
  matches = q ? nodes.filter(n => n.name.toLowerCase().includes(q)).map(n => n.name) : [];
  let opened = false;
  if (matches.length) {  // open the groups that hide the first match
    for (const g of byName.get(matches[0]).groups) if (collapsed.delete(g)) opened = true;
  }
  const count = matches.length + ' match' + (matches.length === 1 ? '' : 'es');
  document.getElementById('gd-count').textContent = q ? count : '';
  if (opened) render(); else highlight();
  const first = matches.length &&
    document.querySelector(`.gd-node[data-name="${CSS.escape(matches[0])}"]`);
  if (first) first.scrollIntoView({block: 'center', inline: 'center'});
}

document.getElementById('gd-search').addEventListener('input', ev => search(ev.target.value));
document.getElementById('gd-search').addEventListener('keydown', ev => {
  if (ev.key === 'Enter' && matches.length) {
    selected = matches[0]; show(byName.get(selected)); highlight();
  }
});
document.getElementById('gd-collapse').addEventListener('click', () => {
  D.groups.forEach(g => collapsed.add(g.id)); render();
});
document.getElementById('gd-expand').addEventListener('click', () => {
  collapsed.clear(); render();
});
document.getElementById('gd-zin').addEventListener('click', () => { scale *= 1.25; render(); });
document.getElementById('gd-zout').addEventListener('click', () => { scale /= 1.25; render(); });
render();
const out = byName.get(D.outputs[0]);
if (out) show(out);
})();
"""
