// braid ui: the few live parts of the server-rendered pages. No framework, no network
// but this server. Everything from the store is inserted as text (textContent) or as
// nodes the server rendered and escaped; the content security policy allows no inline
// script.
(function () {
  'use strict';

  // A page region marked [data-region] with [data-live=URL]: on a `change` event from
  // that event stream, fetch this page again and swap each region for its new version.
  function liveRegions() {
    const regions = document.querySelectorAll('[data-live][data-region]');
    if (!regions.length) return;
    const es = new EventSource(regions[0].dataset.live);
    let busy = false;
    let again = false;
    async function refresh() {
      if (busy) { again = true; return; }
      busy = true;
      try {
        const r = await fetch(location.href, { headers: { Accept: 'text/html' } });
        if (r.ok) {
          const doc = new DOMParser().parseFromString(await r.text(), 'text/html');
          document.querySelectorAll('[data-region]').forEach(function (el) {
            const fresh = el.id && doc.getElementById(el.id);
            if (fresh) el.replaceWith(document.importNode(fresh, true));
          });
          document.body.dataset.refreshed = String(Number(document.body.dataset.refreshed || 0) + 1);
        }
      } finally {
        busy = false;
        if (again) { again = false; refresh(); }
      }
    }
    es.addEventListener('change', refresh);
    es.addEventListener('end', function () { es.close(); refresh(); });
  }

  const COLORS = {
    pending: '#c3c9d2', running: '#2f7de1', succeeded: '#1f9d63', failed: '#e0434b',
    lost: '#f0a000', cancelled: '#7d7d85'
  };
  function rgb(hex) {
    return [parseInt(hex.slice(1, 3), 16), parseInt(hex.slice(3, 5), 16), parseInt(hex.slice(5, 7), 16)];
  }

  // The foreach grid: one cell per branch, coloured by status, drawn into a canvas from
  // one compact document (a character per task).
  function grid() {
    const c = document.getElementById('grid');
    if (!c) return;
    const tip = document.getElementById('grid-tip');
    let data = null;
    let size = 4;
    let cols = 1;
    async function load() {
      const t0 = performance.now();
      const r = await fetch(c.dataset.grid);
      if (!r.ok) { tip.textContent = 'cannot load the grid: ' + r.status; return; }
      data = await r.json();
      draw();
      c.dataset.loadMs = String(Math.round(performance.now() - t0));
      c.dataset.count = String(data.count);
    }
    function draw() {
      const n = data.count;
      const width = Math.max(200, (c.parentElement && c.parentElement.clientWidth) || 960);
      size = Math.max(2, Math.min(18, Math.floor(Math.sqrt(width * 420 / Math.max(n, 1)))));
      cols = Math.max(1, Math.floor(width / size));
      const rows = Math.max(1, Math.ceil(n / cols));
      c.width = Math.min(cols, Math.max(n, 1)) * size;
      c.height = rows * size;
      const ctx = c.getContext('2d');
      const img = ctx.createImageData(c.width, c.height);
      const pal = data.legend.map(function (l) { return rgb(COLORS[l] || '#b0b0b0'); });
      const gap = size >= 6 ? 1 : 0;
      const px = img.data;
      for (let i = 0; i < n; i++) {
        const p = pal[parseInt(data.cells[i], 36)] || [176, 176, 176];
        const x0 = (i % cols) * size;
        const y0 = Math.floor(i / cols) * size;
        for (let y = y0; y < y0 + size - gap; y++) {
          let o = (y * c.width + x0) * 4;
          for (let x = 0; x < size - gap; x++) {
            px[o] = p[0]; px[o + 1] = p[1]; px[o + 2] = p[2]; px[o + 3] = 255; o += 4;
          }
        }
      }
      ctx.putImageData(img, 0, 0);
      c.dataset.drawn = String(n);
      // Milliseconds from the start of the page's navigation to the grid on screen.
      if (!c.dataset.drawnAt) c.dataset.drawnAt = String(Math.round(performance.now()));
    }
    function cellAt(ev) {
      const r = c.getBoundingClientRect();
      const x = Math.floor((ev.clientX - r.left) * (c.width / r.width) / size);
      const y = Math.floor((ev.clientY - r.top) * (c.height / r.height) / size);
      if (!data || x < 0 || x >= cols) return -1;
      const i = y * cols + x;
      return i >= 0 && i < data.count ? i : -1;
    }
    function taskOf(i) {
      let k = i;
      for (const [id, index, len] of data.ranges) {
        if (k < len) return { id: id + k, index: index + k };
        k -= len;
      }
      return null;
    }
    c.addEventListener('mousemove', function (ev) {
      const i = cellAt(ev);
      const t = i >= 0 ? taskOf(i) : null;
      if (!t) { tip.textContent = ''; return; }
      const where = data.depth <= 1 ? 'index ' + t.index : 'cell ' + i;
      tip.textContent = where + ' · task ' + t.id + ' · ' + data.legend[parseInt(data.cells[i], 36)];
    });
    c.addEventListener('click', function (ev) {
      const i = cellAt(ev);
      const t = i >= 0 ? taskOf(i) : null;
      if (t) location.href = c.dataset.href + '/' + t.id;
    });
    window.addEventListener('resize', function () { if (data) draw(); });
    load();
    if (c.dataset.live) {
      const es = new EventSource(c.dataset.live);
      es.addEventListener('change', load);
      es.addEventListener('end', function () { es.close(); load(); });
    }
  }

  // A running task: progress bar, ETA, warnings and the log's tail, live.
  function task() {
    const sec = document.getElementById('live-task');
    if (!sec || ['pending', 'running'].indexOf(sec.dataset.status) < 0) return;
    const es = new EventSource(sec.dataset.live + '?after=' + encodeURIComponent(sec.dataset.after || '0'));
    const text = function (id, t) { const el = document.getElementById(id); if (el) el.textContent = t; };
    es.addEventListener('task', function (ev) {
      const d = JSON.parse(ev.data);
      if (d.percent !== null) {
        document.getElementById('progress').value = d.percent;
        text('progress-text', d.text || (d.percent.toFixed(1) + '% ' + (d.message || '')));
      }
      const det = document.getElementById('progress-details');
      if (det && d.details) { det.textContent = d.details; det.hidden = false; }
      text('eta', d.eta);
      text('progress-age', d.age || '-');
      text('task-attempt', String(d.attempt));
      const badge = document.querySelector('#task-status .st');
      if (badge) { badge.textContent = d.status; badge.className = 'st st-' + d.status.replace(/[^a-z_]/g, ''); }
      const ul = document.getElementById('warnings');
      ul.replaceChildren.apply(ul, d.warnings.map(function (w) {
        const li = document.createElement('li');
        li.className = 'warn';
        li.textContent = w.at + ' · attempt ' + w.attempt + ' · ' + w.kind + ': ' + w.message;
        return li;
      }));
    });
    es.addEventListener('log', function (ev) {
      const pre = document.getElementById('log');
      const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
      for (const l of JSON.parse(ev.data)) {
        const s = document.createElement('span');
        s.className = 'line';
        s.textContent = l.at + ' ' + l.level + ' ' + l.line + '\n';
        pre.appendChild(s);
      }
      if (atEnd) pre.scrollTop = pre.scrollHeight;
    });
    es.addEventListener('end', function () { es.close(); setTimeout(function () { location.reload(); }, 300); });
  }

  document.addEventListener('DOMContentLoaded', function () {
    liveRegions();
    grid();
    task();
  });
})();
