// kafkatail browser client: live-tails a topic over /ws/tail/<topic>, the protocol's reference client.
// All record data is rendered through textContent / text nodes, never innerHTML.
'use strict';

(() => {
  const FLUSH_MS = 50;             // batch incoming records before touching the DOM
  const BACKOFF_MIN_MS = 500;
  const BACKOFF_MAX_MS = 10000;
  const RATE_WINDOW_MS = 5000;
  const FILTER_DEBOUNCE_MS = 400;
  const LAG_REFRESH_MS = 5000;     // how often the high watermarks are asked for while visible
  const OVERVIEW_REFRESH_MS = 5000; // how often the topic overview is asked for while shown
  const PREVIEW_CHARS = 300;       // of a value, in its one-line row
  const DETAIL_CHARS = 20000;      // of a value, in the record pane before "show all"
  const HEX_BYTES = 4096;          // of a binary value, in hex before "show all"
  const OVERSCAN = 20;             // rows built above and below the visible ones
  const MAX_BYTES = 64 * 1024 * 1024; // record bytes kept in the list, whatever the row limit
  const ROWS_MIN = 100;
  const ROWS_MAX = 200000;
  const SETTINGS_KEY = 'kafkatail.settings';
  const DEFAULTS = { maxRows: 10000, autoPause: true, theme: 'system', highlights: [] };
  const THEMES = ['system', 'light', 'dark'];
  const PALETTE = ['#ffd33d', '#ff8c8c', '#8cd17d', '#7fb3ff', '#d9a3ff', '#ffb86b']; // new highlight rules
  const FORMATS = ['auto', 'text', 'json', 'base64'];
  // Encodings of a key or value the server decoded through the Schema Registry; a value in one
  // of them is JSON, spliced into the frame like an "encoding": "json" one.
  const SCHEMA_ENCODINGS = new Set(['avro', 'protobuf', 'json-schema']);
  const SCHEMA_RETRY_MS = 30000;   // a failed schema look-up that may pass later, asked again after
  const CLOSE_TEXT = {
    1000: 'normal end', 1001: 'server shutdown', 1006: 'connection lost',
    1009: 'frame too large', 1011: 'internal server error', 1013: 'server over capacity',
    4400: 'bad request', 4401: 'unauthorized', 4403: 'forbidden', 4404: 'unknown topic',
  };
  const FROM_HINT = {
    last: 'records per partition, e.g. 100',
    ts: 'a local date and time',
    offsets: 'partition:offset,... e.g. 0:120,1:80',
  };
  const FROM_RE = /^(latest|earliest|-[1-9]\d*|ts:.+|offsets:\d+:\d+(,\d+:\d+)*)$/;

  const TOKEN_KEY = 'kafkatail.token';
  // Everything is addressed relative to where the page is served, so a host app may mount
  // kafkatail under a URL prefix.
  const BASE = location.pathname.replace(/\/[^/]*$/, '');

  const $ = (id) => document.getElementById(id);
  const ui = {
    form: $('controls'), topic: $('topic'), topicList: $('topic-list'), topicInfo: $('topic-info'),
    partitions: $('partitions'), fromMode: $('from-mode'), fromArg: $('from-arg'), tsQuick: $('ts-quick'),
    untilBox: $('until-box'), untilArg: $('until-arg'), untilClear: $('until-clear'),
    filter: $('filter'), regex: $('regex'), where: $('where'), whereError: $('where-error'),
    whereHelp: $('where-help'), format: $('format'),
    start: $('start'), stop: $('stop'), pause: $('pause'), clear: $('clear'), download: $('download'),
    downloadCsv: $('download-csv'), rangePop: $('range-pop'), rangeSummary: $('range-summary'),
    rangeNdjson: $('range-ndjson'), rangeCsv: $('range-csv'), rangeCancel: $('range-cancel'),
    rangeStatus: $('range-status'),
    conn: $('conn'), detail: $('status-detail'), count: $('count'), rate: $('rate'),
    shown: $('shown'), dropped: $('dropped'), lag: $('lag'),
    records: $('records'), rows: $('rows'), jump: $('jump'), list: $('list'),
    overview: $('overview'), ovSearch: $('ov-search'), ovInfo: $('ov-info'), ovRows: $('ov-rows'),
    ovEmpty: $('ov-empty'), ovHead: document.querySelector('#ov-table thead'),
    pane: $('detail'), paneTitle: $('detail-title'), paneBody: $('detail-body'),
    copy: $('copy'), paneClose: $('detail-close'),
    settings: $('settings'), openSettings: $('open-settings'), setMax: $('set-max'),
    setAutoPause: $('set-autopause'), setTheme: $('set-theme'), setToken: $('set-token'),
    flame: $('flame'),
    hlList: $('hl-list'), hlTerm: $('hl-term'), hlColor: $('hl-color'), hlAdd: $('hl-add'),
  };

  const WHERE_TITLE = ui.where.title; // its examples; a refusal's message replaces it meanwhile
  const settings = loadSettings();
  let knownTopics = new Set();
  let session = null;   // the running tail, or null
  let paused = false;
  let autoPaused = false; // paused because the tab was hidden; showing it again resumes
  let queue = [];       // items received but not yet in the list
  let flushTimer = 0;
  let rateSamples = []; // [time, count] per received batch
  let seq = 0;

  // The list: records ({seq, rec}) and markers ({seq, kind, text, time}), oldest first, bounded by
  // settings.maxRows and MAX_BYTES. Only the rows in and near the viewport exist in the DOM.
  const list = { items: [], records: 0, bytes: 0 };
  const nodes = new Map(); // seq -> row element in the DOM
  let follow = true;       // keep the newest row in view; off once the user scrolls up
  let unseen = 0;          // rows added below while not following
  let selected = null;     // the record item shown in the pane
  let renderQueued = false;
  const rowHeight = parseFloat(getComputedStyle(document.documentElement).getPropertyValue('--row-h')) || 21;

  // ---------- settings ----------

  function clampRows(n) {
    const v = Math.round(Number(n));
    return Number.isFinite(v) ? Math.min(ROWS_MAX, Math.max(ROWS_MIN, v)) : DEFAULTS.maxRows;
  }

  function loadSettings() {
    let saved = {};
    try {
      saved = JSON.parse(localStorage.getItem(SETTINGS_KEY)) || {};
    } catch {
      saved = {};
    }
    const s = { ...DEFAULTS, ...saved };
    return {
      maxRows: clampRows(s.maxRows),
      autoPause: s.autoPause !== false,
      theme: THEMES.includes(s.theme) ? s.theme : 'system',
      highlights: Array.isArray(s.highlights)
        ? s.highlights.filter((h) => h && typeof h.term === 'string' && h.term && /^#[0-9a-f]{6}$/i.test(h.color))
        : [],
    };
  }

  function saveSettings() {
    try {
      localStorage.setItem(SETTINGS_KEY, JSON.stringify(settings));
    } catch {
      // storage disabled: the settings last until the page is closed
    }
  }

  const systemDark = matchMedia('(prefers-color-scheme: dark)');

  function applyTheme() {
    const dark = settings.theme === 'dark' || (settings.theme === 'system' && systemDark.matches);
    document.documentElement.dataset.theme = dark ? 'dark' : 'light';
  }
  systemDark.addEventListener('change', applyTheme);

  // ---------- small DOM helpers ----------

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function badge(text, title) {
    const b = el('span', 'badge', text);
    if (title) b.title = title;
    return b;
  }

  const pad = (n, w = 2) => String(n).padStart(w, '0');
  const fmtDate = (d) => `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
  const fmtClock = (d) => `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
  const fmtLocal = (d) => `${fmtDate(d)} ${fmtClock(d)}`;

  function relTime(ts) {
    const s = Math.round((Date.now() - ts) / 1000);
    if (s <= 0) return 'now';
    if (s < 60) return `${s}s ago`;
    if (s < 3600) return `${Math.floor(s / 60)}m ago`;
    if (s < 86400) return `${Math.floor(s / 3600)}h ago`;
    return `${Math.floor(s / 86400)}d ago`;
  }

  function fmtSize(n) {
    if (!Number.isFinite(n)) return '';
    if (n < 1024) return `${n} B`;
    if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
    return `${(n / 1024 / 1024).toFixed(1)} MB`;
  }

  const plural = (n, word) => `${n} ${word}${n === 1 ? '' : 's'}`;
  const clip = (text, n) => (text.length > n ? `${text.slice(0, n)}…` : text);

  const isJson = (encoding) => encoding === 'json' || SCHEMA_ENCODINGS.has(encoding);

  function valueText(rec) {
    if (isJson(rec.encoding)) return JSON.stringify(rec.value);
    return rec.value === null || rec.value === undefined ? '' : String(rec.value);
  }

  // ---------- highlight rules ----------

  let hlPattern = null;     // one case-insensitive RegExp of every term, or null
  let hlColors = new Map(); // lower-cased term -> colour

  function compileHighlights() {
    const rules = settings.highlights;
    hlColors = new Map();
    for (const { term, color } of rules) if (!hlColors.has(term.toLowerCase())) hlColors.set(term.toLowerCase(), color);
    hlPattern = rules.length
      ? new RegExp([...hlColors.keys()].map((t) => t.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('|'), 'gi')
      : null;
  }

  // The colour of the first rule whose term the record contains, or null.
  function highlightOf(item) {
    if (!hlPattern) return null;
    if (item.hay === undefined) {
      const rec = item.rec;
      item.hay = [rec.key ?? '', valueText(rec), ...(rec.headers || []).map(([n, v]) => `${n}: ${v ?? ''}`)]
        .join('\n').toLowerCase();
    }
    for (const { term, color } of settings.highlights) if (item.hay.includes(term.toLowerCase())) return color;
    return null;
  }

  // Append text to parent with every highlight term wrapped in a <mark> (text nodes only).
  function appendMarked(parent, text) {
    if (!hlPattern) {
      parent.append(text);
      return;
    }
    let at = 0;
    for (const m of text.matchAll(hlPattern)) {
      if (!m[0]) continue;
      parent.append(text.slice(at, m.index));
      const mark = el('mark', null, m[0]);
      mark.style.backgroundColor = hlColors.get(m[0].toLowerCase()) || '';
      parent.append(mark);
      at = m.index + m[0].length;
    }
    parent.append(text.slice(at));
  }

  // ---------- rows ----------

  function timeCell(ts) {
    const cell = el('span', 'c-time');
    if (!Number.isFinite(ts) || ts < 0) {
      cell.textContent = '—';
      return cell;
    }
    const d = new Date(ts);
    cell.title = `${d.toISOString()} (${ts})`;
    const rel = el('span', 'rel', relTime(ts));
    rel.dataset.ts = ts;
    cell.append(el('span', 'date', `${fmtDate(d)} `), fmtClock(d), ' ', rel);
    return cell;
  }

  function keyCell(rec) {
    const cell = el('span', 'c-key');
    if (rec.key === null || rec.key === undefined) {
      cell.append(el('span', 'muted', '—'));
      return cell;
    }
    // The column is narrow: a framed key gets one badge, its format's alone if it is decoded.
    const schema = keySchema(rec);
    if (schema) cell.append(schemaBadge(schema, true));
    else if (rec.key_encoding === 'base64') cell.append(badge('b64', 'binary key, base64-encoded'));
    appendMarked(cell, clip(String(rec.key), PREVIEW_CHARS));
    return cell;
  }

  // A key or value in the Confluent wire format (magic byte 0, 4-byte schema id): {what, id,
  // format (avro, protobuf or json-schema) if the server decoded it, else error (why not)}.
  function keySchema(rec) {
    if (rec.key_schema_id == null) return null;
    const format = SCHEMA_ENCODINGS.has(rec.key_encoding) ? rec.key_encoding : null;
    return { what: 'key', id: rec.key_schema_id, format, error: format ? null : rec.key_decode_error || null };
  }

  function valueSchema(rec) {
    if (rec.value_schema_id == null) return null;
    const format = SCHEMA_ENCODINGS.has(rec.encoding) ? rec.encoding : null;
    return { what: 'value', id: rec.value_schema_id, format, error: format ? null : rec.decode_error || null };
  }

  // Why a framed key or value is shown undecoded: the server's reason, or what it is.
  const undecodedWhy = (s) => s.error ||
    `${s.what} in the Schema Registry wire format (schema id ${s.id}), shown undecoded`;

  function schemaBadge(s, short = false) {
    if (s.format) {
      const b = badge(short ? s.format : `${s.format} · schema ${s.id}`,
        `${s.what} decoded through the Schema Registry: ${s.format}, schema id ${s.id}`);
      b.classList.add('schema');
      return b;
    }
    const b = badge(`schema ${s.id} · undecoded`, undecodedWhy(s));
    b.classList.add('undecoded');
    return b;
  }

  function valueCell(item) {
    const rec = item.rec;
    const cell = el('span', 'c-val');
    const schema = valueSchema(rec);
    if (schema) cell.append(schemaBadge(schema));
    if (item.preview === undefined) item.preview = clip(valueText(rec), PREVIEW_CHARS);
    switch (rec.encoding) {
      case 'base64':
        cell.append(badge('base64', 'binary value, shown base64-encoded'));
        appendMarked(cell.appendChild(el('span', 'b64')), item.preview);
        break;
      case 'null':
        cell.append(el('span', 'muted', 'null (tombstone)'));
        break;
      default:
        appendMarked(cell.appendChild(el('span', isJson(rec.encoding) ? 'json' : 'text')), item.preview);
    }
    if (rec.truncated) cell.append(badge('truncated', 'value was cut by the server'));
    return cell;
  }

  function headersCell(headers) {
    const cell = el('span', 'c-hdrs');
    for (const [name, value] of headers || []) appendMarked(cell.appendChild(el('span')), `${name}: ${value ?? ''}`);
    return cell;
  }

  function recordRow(item) {
    const rec = item.rec;
    const row = el('div', 'record');
    row.dataset.seq = item.seq;
    row.dataset.partition = rec.partition;
    row.dataset.offset = rec.offset;
    row.style.setProperty('--hue', (Number(rec.partition) * 67) % 360);
    const color = highlightOf(item);
    if (color) {
      row.classList.add('hl');
      row.style.setProperty('--hl', color);
    }
    if (item === selected) row.classList.add('selected');
    row.append(
      el('span', 'c-part', String(rec.partition)),
      el('span', 'c-off', String(rec.offset)),
      timeCell(rec.timestamp),
      keyCell(rec),
      valueCell(item),
      headersCell(rec.headers),
      el('span', 'c-size', fmtSize(rec.size)),
    );
    return row;
  }

  function markerRow(item) {
    const row = el('div', `marker marker-${item.kind}`);
    row.dataset.seq = item.seq;
    row.title = item.text;
    row.append(el('span', 'marker-time', fmtClock(new Date(item.time))), ' ', item.text);
    return row;
  }

  // ---------- the virtual list ----------

  const atBottom = () => {
    const r = ui.records;
    return r.scrollTop + r.clientHeight >= r.scrollHeight - rowHeight / 2;
  };

  // Build the rows in and near the viewport, reusing the ones already there, and drop the rest.
  function render(trimmed = 0) {
    const items = list.items;
    const view = ui.records;
    ui.rows.style.height = `${items.length * rowHeight}px`;
    if (follow) view.scrollTop = view.scrollHeight;
    else if (trimmed) view.scrollTop = Math.max(0, view.scrollTop - trimmed * rowHeight);
    const first = Math.max(0, Math.floor(view.scrollTop / rowHeight) - OVERSCAN);
    const last = Math.min(items.length, Math.ceil((view.scrollTop + view.clientHeight) / rowHeight) + OVERSCAN);
    const keep = new Set();
    for (let i = first; i < last; i++) keep.add(items[i].seq);
    for (const [key, node] of nodes) {
      if (!keep.has(key)) {
        node.remove();
        nodes.delete(key);
      }
    }
    let next = ui.rows.firstChild;
    for (let i = first; i < last; i++) {
      const item = items[i];
      let node = nodes.get(item.seq);
      if (node === next) {
        next = node.nextSibling;
      } else {
        node = node || (item.rec ? recordRow(item) : markerRow(item));
        nodes.set(item.seq, node);
        ui.rows.insertBefore(node, next);
      }
      node.style.top = `${i * rowHeight}px`;
    }
    if (follow) unseen = 0;
    ui.jump.hidden = follow;
    ui.jump.textContent = unseen ? `↓ latest (+${unseen})` : '↓ latest';
  }

  function scheduleRender() {
    if (renderQueued) return;
    renderQueued = true;
    requestAnimationFrame(() => {
      renderQueued = false;
      render();
    });
  }

  function rebuildRows() {
    for (const node of nodes.values()) node.remove();
    nodes.clear();
    render();
  }

  // Drop the oldest items beyond the row and byte limits; returns how many went.
  function trim() {
    const items = list.items;
    let cut = 0;
    const drop = () => {
      const rec = items[cut++].rec;
      if (rec) {
        list.records--;
        list.bytes -= rec.size || 0;
      }
    };
    while (items.length - cut > settings.maxRows) drop();
    while (list.bytes > MAX_BYTES && items.length - cut > 1) drop();
    if (cut) items.splice(0, cut);
    return cut;
  }

  function jumpToLatest() {
    follow = true;
    render();
  }

  // ---------- render queue ----------

  function enqueueRecord(rec) { queue.push({ seq: ++seq, rec }); }

  function enqueueMarker(kind, text) {
    queue.push({ seq: ++seq, kind, text, time: Date.now() });
    scheduleFlush();
  }

  function scheduleFlush() {
    if (!flushTimer && !paused) flushTimer = setTimeout(flush, FLUSH_MS);
  }

  function flush() {
    flushTimer = 0;
    if (paused || !queue.length) return;
    const items = queue;
    queue = [];
    // Items older than the last maxRows would be trimmed at once: skip them.
    for (const item of items.slice(-settings.maxRows)) {
      list.items.push(item);
      if (item.rec) {
        list.records++;
        list.bytes += item.rec.size || 0;
      }
    }
    if (!follow) unseen += items.length;
    render(trim());
    updateStats();
  }

  function clearRows() {
    list.items = [];
    list.records = 0;
    list.bytes = 0;
    queue = [];
    closePane();
    follow = true;
    rebuildRows();
    updateStats();
  }

  // ---------- the record pane ----------

  function section(title, ...content) {
    const box = el('section');
    box.append(el('h4', null, title), ...content);
    return box;
  }

  // A long text in a <pre>, cut at `limit` characters with a button that shows all of it.
  function longText(text, limit = DETAIL_CHARS) {
    const pre = el('pre', null, clip(text, limit));
    if (text.length <= limit) return pre;
    const more = el('button', 'more', `show all (${text.length.toLocaleString()} characters)`);
    more.type = 'button';
    more.addEventListener('click', () => {
      pre.textContent = text;
      more.remove();
    });
    const box = el('div');
    box.append(pre, more);
    return box;
  }

  // A collapsible JSON tree; levels below `open` are built when first expanded.
  function jsonTree(value, depth = 0, open = 2) {
    if (value === null || typeof value !== 'object') {
      return el('span', `j-${value === null ? 'null' : typeof value}`, JSON.stringify(value));
    }
    const isArray = Array.isArray(value);
    const entries = isArray ? value.map((v, i) => [i, v]) : Object.entries(value);
    const details = el('details', 'jt');
    const brackets = isArray ? ['[', ']'] : ['{', '}'];
    details.append(el('summary', null, `${brackets[0]} ${plural(entries.length, isArray ? 'item' : 'key')} ${brackets[1]}`));
    const fill = () => {
      const body = el('div', 'jt-body');
      for (const [k, v] of entries) {
        const line = el('div', 'jt-entry');
        if (!isArray) line.append(el('span', 'j-key', `${JSON.stringify(k)}: `));
        line.append(jsonTree(v, depth + 1, open));
        body.append(line);
      }
      details.append(body);
    };
    if (depth < open) {
      details.open = true;
      fill();
    } else {
      details.addEventListener('toggle', fill, { once: true });
    }
    return details;
  }

  function hexDump(b64, limit) {
    let bin;
    try {
      bin = atob(b64);
    } catch {
      return 'not valid base64';
    }
    const n = Math.min(bin.length, limit);
    const lines = [];
    for (let off = 0; off < n; off += 16) {
      const bytes = [];
      let ascii = '';
      for (let i = off; i < Math.min(off + 16, n); i++) {
        const c = bin.charCodeAt(i);
        bytes.push(c.toString(16).padStart(2, '0'));
        ascii += c >= 0x20 && c < 0x7f ? bin[i] : '.';
      }
      lines.push(`${off.toString(16).padStart(8, '0')}  ${bytes.join(' ').padEnd(47)}  |${ascii}|`);
    }
    if (bin.length > n) lines.push(`… ${bin.length - n} more bytes`);
    return lines.join('\n');
  }

  // Two or more views of one value behind a small toggle: [[label, build], ...].
  function switchable(views) {
    const box = el('div', 'views');
    const bar = el('div', 'view-bar');
    const slot = el('div');
    const show = (i) => {
      [...bar.children].forEach((b, j) => b.setAttribute('aria-pressed', String(i === j)));
      slot.replaceChildren(views[i][1]());
    };
    views.forEach(([label], i) => {
      const b = el('button', 'view', label);
      b.type = 'button';
      b.addEventListener('click', () => show(i));
      bar.append(b);
    });
    box.append(bar, slot);
    show(0);
    return box;
  }

  // A JSON document: a tree or its indented text for an object or array, else its one line.
  function jsonView(v) {
    if (v === null || typeof v !== 'object') return longText(JSON.stringify(v));
    return switchable([
      ['tree', () => jsonTree(v)],
      ['text', () => longText(JSON.stringify(v, null, 2))],
    ]);
  }

  function valueView(rec) {
    const v = rec.value;
    if (isJson(rec.encoding)) return jsonView(v);
    switch (rec.encoding) {
      case 'base64': {
        const hex = () => {
          const box = el('div');
          const pre = el('pre', 'hex', hexDump(String(v), HEX_BYTES));
          box.append(pre);
          if (String(v).length * 3 / 4 > HEX_BYTES) {
            const more = el('button', 'more', 'show all');
            more.type = 'button';
            more.addEventListener('click', () => {
              pre.textContent = hexDump(String(v), Infinity);
              more.remove();
            });
            box.append(more);
          }
          return box;
        };
        return switchable([['base64', () => longText(String(v))], ['hex', hex]]);
      }
      case 'null':
        return el('p', 'muted', 'null (tombstone)');
      default:
        return longText(v === null || v === undefined ? '' : String(v));
    }
  }

  function showPane(item) {
    const rec = item.rec;
    ui.paneTitle.textContent = `p${rec.partition} · offset ${rec.offset}`;
    const parts = [];
    if (Number.isFinite(rec.timestamp) && rec.timestamp >= 0) {
      const d = new Date(rec.timestamp);
      parts.push(section('timestamp', el('p', null, `${fmtLocal(d)} · ${d.toISOString()} · ${relTime(rec.timestamp)}`)));
    }
    parts.push(keySection(rec));
    if (rec.headers && rec.headers.length) {
      const table = el('table', 'hdrs');
      for (const [name, value, enc] of rec.headers) {
        const tr = el('tr');
        tr.append(el('th', null, String(name)), el('td', null, `${value ?? ''}${enc === 'base64' ? ' (base64)' : ''}`));
        table.append(tr);
      }
      parts.push(section(plural(rec.headers.length, 'header'), table));
    }
    const schema = valueSchema(rec);
    const title = `value · ${rec.encoding || 'text'}${schemaTitle(schema)} · ${fmtSize(rec.size)}` +
      `${rec.truncated ? ' · truncated by the server' : ''}`;
    parts.push(section(title, ...schemaLines(schema), valueView(rec)));
    ui.paneBody.replaceChildren(...parts);
    ui.pane.hidden = false;
  }

  function keySection(rec) {
    const schema = keySchema(rec);
    if (rec.key === null || rec.key === undefined) return section('key', el('p', 'muted', 'none'));
    let view = null;
    if (schema && schema.format) {
      // A decoded key arrives as the text of its JSON document.
      try {
        view = jsonView(JSON.parse(rec.key));
      } catch {
        view = null;
      }
    }
    const title = schema && schema.format ? `key · ${schema.format}${schemaTitle(schema)}`
      : rec.key_encoding === 'base64' ? `key · base64${schemaTitle(schema)}` : 'key';
    return section(title, ...schemaLines(schema), view || longText(String(rec.key)));
  }

  const schemaTitle = (s) => (!s ? '' : s.format ? ` · schema ${s.id}` : ` · schema ${s.id}, undecoded`);

  // Under a framed key's or value's title: why it is not decoded, and the subjects and versions
  // that hold its schema (asked of the server once per schema id; filled in when they come).
  function schemaLines(s) {
    if (!s) return [];
    const lines = [];
    if (!s.format) lines.push(el('p', 'decode-error', `not decoded: ${undecodedWhy(s)}`));
    const info = el('p', 'schema-info muted', `looking up the subject of schema ${s.id}…`);
    lines.push(info);
    schemaSubjects(s.id).then((text) => { info.textContent = text; });
    return lines;
  }

  // ---------- schema ids' subjects ----------

  // schema id -> {done: Promise of the text to show, until: when a failure that may pass (the
  // registry unreachable, the server busy) is asked again}. Answers and failures are kept, so
  // opening records never repeats a request that cannot succeed now.
  const schemaCache = new Map();

  function schemaSubjects(id) {
    const cached = schemaCache.get(id);
    if (cached && cached.until > Date.now()) return cached.done;
    const entry = { done: null, until: Infinity };
    entry.done = fetchSubjects(id).catch((err) => {
      if (err.transient) entry.until = Date.now() + SCHEMA_RETRY_MS;
      return `subject unknown: ${err.message}`;
    });
    schemaCache.set(id, entry);
    return entry.done;
  }

  async function fetchSubjects(id) {
    let res;
    try {
      res = await authFetch(`/api/schemas/${encodeURIComponent(id)}`);
    } catch (err) {
      throw Object.assign(new Error(err.message || 'network error'), { transient: true });
    }
    let body = null;
    try {
      body = await res.json();
    } catch {
      body = null;
    }
    if (!res.ok) {
      const why = body && typeof body.error === 'string' ? body.error : `HTTP ${res.status}`;
      throw Object.assign(new Error(why), { transient: res.status >= 500 || res.status === 429 });
    }
    const subjects = body && Array.isArray(body.subjects) ? body.subjects : [];
    if (!subjects.length) return `subject unknown: no subject you may see holds schema ${id}`;
    return subjects.map((v) => `subject ${v.subject} · version ${v.version}`).join(', ');
  }

  function select(item) {
    selected = item;
    for (const node of nodes.values()) node.classList.toggle('selected', Number(node.dataset.seq) === (item && item.seq));
    if (item) showPane(item);
    else ui.pane.hidden = true;
  }

  function closePane() {
    if (selected || !ui.pane.hidden) select(null);
  }

  // ---------- copy and download ----------

  async function copyText(text) {
    try {
      await navigator.clipboard.writeText(text);
      return true;
    } catch {
      // No async clipboard (plain http on another host): the old way, through a hidden textarea.
      const area = el('textarea');
      area.value = text;
      area.setAttribute('readonly', '');
      area.className = 'offscreen';
      document.body.append(area);
      area.select();
      const ok = document.execCommand('copy');
      area.remove();
      return ok;
    }
  }

  async function copyRecord() {
    if (!selected) return;
    const ok = await copyText(JSON.stringify(selected.rec, null, 2));
    ui.copy.textContent = ok ? 'Copied' : 'Copy failed';
    setTimeout(() => { ui.copy.textContent = 'Copy JSON'; }, 1500);
  }

  // A file name for a download: the topic and the local time now.
  function downloadName(topic, ext) {
    const d = new Date();
    const stamp = `${fmtDate(d)}T${pad(d.getHours())}${pad(d.getMinutes())}${pad(d.getSeconds())}`;
    return `${(topic || 'kafkatail').replace(/[^\w.-]/g, '_')}-${stamp}.${ext}`;
  }

  function saveBlob(blob, name) {
    const a = el('a');
    a.href = URL.createObjectURL(blob);
    a.download = name;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 60000);
  }

  const listTopic = () => (session && session.topic) || ui.topic.value.trim();

  function downloadRecords() {
    const lines = [];
    for (const item of list.items) if (item.rec) lines.push(`${JSON.stringify(item.rec)}\n`);
    saveBlob(new Blob(lines, { type: 'application/x-ndjson' }), downloadName(listTopic(), 'ndjson'));
  }

  // The server's export columns (kafkatail/web/export.py), in its order.
  const CSV_COLUMNS = ['partition', 'offset', 'timestamp', 'key', 'key_encoding', 'value', 'encoding', 'headers'];

  // One CSV cell (RFC 4180: quoted when it holds a comma, a quote or a line break; quotes doubled).
  // Formula-injection guard (OWASP "CSV Injection"): a spreadsheet runs a cell that starts with
  // =, +, - or @ (or a tab or carriage return) as a formula, so such a text cell gets a leading
  // apostrophe: `=HYPERLINK(...)` becomes `'=HYPERLINK(...)`, and a text or JSON value -5 becomes
  // '-5. The number columns (partition, offset, timestamp) are written as they are.
  function csvCell(v, text = true) {
    let s = v === null || v === undefined ? '' : String(v);
    if (text && /^[=+\-@\t\r]/.test(s)) s = `'${s}`;
    return /[",\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
  }

  function csvLine(rec) {
    const value = isJson(rec.encoding) ? JSON.stringify(rec.value)
      : rec.value === null || rec.value === undefined ? '' : String(rec.value);
    const headers = rec.headers && rec.headers.length ? JSON.stringify(rec.headers) : '';
    return [
      csvCell(rec.partition, false), csvCell(rec.offset, false), csvCell(rec.timestamp, false),
      csvCell(rec.key), csvCell(rec.key_encoding), csvCell(value), csvCell(rec.encoding), csvCell(headers),
    ].join(',');
  }

  function downloadCsv() {
    const lines = [`${CSV_COLUMNS.join(',')}\r\n`];
    for (const item of list.items) if (item.rec) lines.push(`${csvLine(item.rec)}\r\n`);
    saveBlob(new Blob(lines, { type: 'text/csv' }), downloadName(listTopic(), 'csv'));
  }

  // ---------- download a range (the server's export) ----------

  // GET /api/topics/<topic>/export with the form's start, until, partitions and filters. It is
  // fetched (a plain link could not carry the Authorization header) and saved as a Blob.
  const range = { controller: null };

  function rangeQuery(format) {
    const topic = ui.topic.value.trim();
    if (!topic) throw new Error('choose a topic');
    if (ui.fromMode.value === 'latest') {
      throw new Error('choose a start other than "live": a range from now to now is empty');
    }
    const from = fromValue();
    if (!FROM_RE.test(from)) throw new Error(`start: expected ${FROM_HINT[ui.fromMode.value]}`);
    const until = untilFor(from);
    const q = new URLSearchParams({ from: serverFrom(from) });
    if (until) q.set('until', until);
    const partitions = partitionsValue();
    if (partitions) q.set('partitions', partitions);
    for (const [key, input] of [['filter', ui.filter], ['regex', ui.regex], ['where', ui.where]]) {
      if (input.value.trim()) q.set(key, input.value);
    }
    q.set('format', format);
    return { topic, q };
  }

  function describeRange() {
    let text;
    try {
      const { topic, q } = rangeQuery('ndjson');
      const parts = [`${topic}`, `from ${timeText(q.get('from'))}`,
        q.has('until') ? `until ${timeText(q.get('until'))}` : 'to its end offsets now'];
      if (q.has('partitions')) parts.push(`partitions ${q.get('partitions')}`);
      if (q.has('filter')) parts.push(`substring "${q.get('filter')}"`);
      if (q.has('regex')) parts.push(`regex /${q.get('regex')}/`);
      if (q.has('where')) parts.push(`where ${q.get('where')}`);
      text = parts.join(' · ');
      ui.rangeSummary.classList.remove('bad');
    } catch (err) {
      text = err.message;
      ui.rangeSummary.classList.add('bad');
    }
    ui.rangeSummary.textContent = text;
    syncRangeButtons();
  }

  // ts:<ms> as a local time; anything else as it is.
  function timeText(v) {
    const m = /^ts:(\d+)$/.exec(v);
    return m ? fmtLocal(new Date(Number(m[1]))) : v;
  }

  function syncRangeButtons() {
    const busy = Boolean(range.controller);
    const bad = ui.rangeSummary.classList.contains('bad');
    ui.rangeNdjson.disabled = busy || bad;
    ui.rangeCsv.disabled = busy || bad;
    ui.rangeCancel.hidden = !busy;
  }

  function setRangeStatus(text, bad = false) {
    ui.rangeStatus.textContent = text;
    ui.rangeStatus.classList.toggle('bad', bad);
  }

  async function downloadRange(format) {
    if (range.controller) return;
    let query;
    try {
      query = rangeQuery(format);
    } catch (err) {
      setRangeStatus(err.message, true);
      return;
    }
    const { topic, q } = query;
    const controller = new AbortController();
    range.controller = controller;
    syncRangeButtons();
    setRangeStatus('exporting…');
    try {
      const res = await authFetch(`/api/topics/${encodeURIComponent(topic)}/export?${q}`,
                                  { signal: controller.signal });
      if (!res.ok) {
        let body = null;
        try {
          body = await res.json();
        } catch {
          body = null;
        }
        const why = body && typeof body.error === 'string'
          ? `${body.error}${typeof body.reason === 'string' ? `: ${body.reason}` : ''}` : `HTTP ${res.status}`;
        throw new Error(why);
      }
      // Read as it streams, to show how far it got.
      const reader = res.body.getReader();
      const chunks = [];
      let size = 0;
      let lines = 0;
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        chunks.push(value);
        size += value.length;
        for (let i = value.indexOf(10); i >= 0; i = value.indexOf(10, i + 1)) lines++;
        setRangeStatus(`exporting… ${fmtSize(size)}`);
      }
      const blob = new Blob(chunks, { type: format === 'csv' ? 'text/csv' : 'application/x-ndjson' });
      saveBlob(blob, downloadName(topic, format));
      setRangeStatus(`downloaded ${fmtSize(blob.size)}${format === 'ndjson' ? await ndjsonSummary(blob, lines) : ''}`);
    } catch (err) {
      if (controller.signal.aborted) setRangeStatus('cancelled');
      else setRangeStatus(`export failed: ${err.message}`, true);
    } finally {
      range.controller = null;
      syncRangeButtons();
    }
  }

  // An NDJSON export of `lines` lines ends with {"type": "end", "reason": ...}: how many records
  // it holds, and why it ended.
  async function ndjsonSummary(blob, lines) {
    const tail = (await blob.slice(Math.max(0, blob.size - 4096)).text()).trimEnd();
    try {
      const last = JSON.parse(tail.slice(tail.lastIndexOf('\n') + 1));
      if (last && last.type === 'end') {
        return ` · ${plural(lines - 1, 'record')}${last.reason ? ` (${last.reason})` : ''}`;
      }
    } catch {
      // no end line: the export was cut short
    }
    return ` · ${plural(lines, 'record')}, cut short`;
  }

  // ---------- status bar ----------

  function setConn(state, detail = session ? session.label : '') {
    ui.conn.textContent = state;
    ui.conn.dataset.state = state;
    ui.detail.textContent = detail;
  }

  // Per partition: how far the next offset to show is behind the best known end offset.
  function lagByPartition(s) {
    const out = [];
    for (const [p, end] of [...s.ends].sort((a, b) => a[0] - b[0])) {
      const next = s.cursor.has(p) ? s.cursor.get(p) : end;
      out.push([p, Math.max(0, end - next), next, end]);
    }
    return out;
  }

  function updateLag() {
    const s = session;
    if (!s || !s.ends.size) {
      ui.lag.hidden = true;
      return;
    }
    const lag = lagByPartition(s);
    const total = lag.reduce((n, [, l]) => n + l, 0);
    ui.lag.hidden = false;
    ui.lag.dataset.total = total;
    ui.lag.textContent = lag.length <= 4
      ? `lag ${lag.map(([p, l]) => `p${p} ${l}`).join(' · ')}`
      : `lag ${total} (${plural(lag.length, 'partition')})`;
    ui.lag.title = 'records behind the high watermark, per partition' +
      `${s.applied.filter || s.applied.regex || s.applied.where ? ' (filtered-out records count as behind)' : ''}\n` +
      lag.map(([p, l, next, end]) => `p${p}: ${l} (next ${next}, end ${end})`).join('\n');
  }

  function updateStats() {
    const now = performance.now();
    rateSamples = rateSamples.filter(([t]) => now - t < RATE_WINDOW_MS);
    const received = rateSamples.reduce((sum, [, n]) => sum + n, 0);
    const windowMs = session ? Math.max(1000, Math.min(RATE_WINDOW_MS, now - session.startedAt)) : RATE_WINDOW_MS;
    ui.rate.textContent = `${(received * 1000 / windowMs).toFixed(1)}/s`;
    const total = session ? session.received : lastTotals.received;
    const dropped = session ? session.dropped : lastTotals.dropped;
    ui.count.textContent = `${plural(total, 'record')}${queue.length ? ` (+${queue.length} pending)` : ''}`;
    ui.shown.textContent = `${list.records} shown`;
    ui.dropped.textContent = `${dropped} dropped`;
    ui.dropped.dataset.count = dropped;
    ui.download.disabled = !list.records;
    ui.downloadCsv.disabled = !list.records;
    updateLag();
    syncOverview();
  }

  function updateButtons() {
    ui.start.textContent = session ? 'Restart' : 'Start';
    ui.stop.disabled = !session;
    ui.pause.disabled = !session;
    ui.pause.textContent = paused ? 'Resume' : 'Pause';
  }

  // ---------- form state <-> URL ----------

  function fromValue() {
    const arg = ui.fromArg.value.trim();
    switch (ui.fromMode.value) {
      case 'last': return `-${arg}`;
      case 'ts': return `ts:${arg}`;
      case 'offsets': return `offsets:${arg.replace(/\s+/g, '')}`;
      default: return ui.fromMode.value;
    }
  }

  // The page URL keeps the time as typed; the server gets unambiguous epoch ms
  // (a bare ISO time is interpreted in the browser's local zone).
  function serverFrom(from) {
    if (!from.startsWith('ts:')) return from;
    const arg = from.slice(3);
    const ms = /^\d+$/.test(arg) ? NaN : Date.parse(arg);
    return Number.isNaN(ms) ? from : `ts:${ms}`;
  }

  // The end of a "between" tail, as typed (until=ts:<local time>), or ''.
  function untilValue() {
    const arg = ui.untilArg.value.trim();
    return ui.fromMode.value === 'ts' && arg ? `ts:${arg}` : '';
  }

  // The until= to send with a start `from`: ts:<epoch ms>, or '' for none; throws if it is not
  // a time after the start.
  function untilFor(from) {
    const until = untilValue();
    if (!until) return '';
    const end = serverFrom(until);
    if (!/^ts:\d+$/.test(end)) throw new Error('until: expected a local date and time');
    const start = serverFrom(from);
    if (/^ts:\d+$/.test(start) && Number(end.slice(3)) <= Number(start.slice(3))) {
      throw new Error('until: must be later than the start');
    }
    return end;
  }

  function partitionsValue() {
    const parts = ui.partitions.value.split(',').map((p) => p.trim()).filter(Boolean);
    if (parts.some((p) => !/^\d+$/.test(p))) throw new Error('partitions: expected a comma list of numbers, e.g. 0,2');
    return parts.join(',');
  }

  function syncFromArg() {
    const hint = FROM_HINT[ui.fromMode.value];
    const ts = ui.fromMode.value === 'ts';
    if (ts !== (ui.fromArg.type === 'datetime-local')) {
      ui.fromArg.value = '';
      ui.fromArg.type = ts ? 'datetime-local' : 'text';
      ui.fromArg.step = ts ? '1' : '';
    }
    ui.fromArg.hidden = !hint;
    ui.tsQuick.hidden = !ts;
    ui.untilBox.hidden = !ts; // "between": an end time only for a start time
    ui.fromArg.placeholder = hint || '';
  }

  // A time as the value of a datetime-local input: local, to the second.
  const localInput = (d) => `${fmtDate(d)}T${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;

  function writeUrl() {
    const q = new URLSearchParams();
    const put = (key, value, dflt = '') => { if (value && value !== dflt) q.set(key, value); };
    put('topic', ui.topic.value.trim());
    put('from', fromValue(), 'latest');
    put('partitions', ui.partitions.value.replace(/\s+/g, ''));
    put('filter', ui.filter.value);
    put('regex', ui.regex.value);
    put('where', ui.where.value);
    put('until', untilValue());
    put('format', ui.format.value, 'auto');
    const qs = q.toString();
    history.replaceState(null, '', qs ? `?${qs}` : location.pathname);
  }

  function readUrl() {
    const q = new URLSearchParams(location.search);
    ui.topic.value = q.get('topic') || '';
    ui.partitions.value = q.get('partitions') || '';
    ui.filter.value = q.get('filter') || '';
    ui.regex.value = q.get('regex') || '';
    ui.where.value = q.get('where') || '';
    ui.format.value = FORMATS.includes(q.get('format')) ? q.get('format') : 'auto';
    const from = q.get('from') || 'latest';
    let m;
    let [mode, arg] = ['latest', ''];
    if (from === 'earliest') mode = 'earliest';
    else if ((m = /^-(\d+)$/.exec(from))) [mode, arg] = ['last', m[1]];
    else if ((m = /^(ts|offsets):(.*)$/.exec(from))) [mode, arg] = [m[1], m[2]];
    if (mode === 'ts') {
      // Epoch ms or any parseable time, shown in the picker as local time.
      const ms = /^\d+$/.test(arg) ? Number(arg) : Date.parse(arg);
      arg = Number.isNaN(ms) ? '' : localInput(new Date(ms));
    }
    ui.fromMode.value = mode;
    syncFromArg();
    ui.fromArg.value = arg;
    ui.untilArg.value = '';
    const until = /^ts:(.+)$/.exec(q.get('until') || '');
    if (until && mode === 'ts') {
      const ms = /^\d+$/.test(until[1]) ? Number(until[1]) : Date.parse(until[1]);
      if (!Number.isNaN(ms)) ui.untilArg.value = localInput(new Date(ms));
    }
    return Boolean(ui.topic.value);
  }

  // ---------- the tail session ----------

  let lastTotals = { received: 0, dropped: 0 }; // of the last session, shown after it ends

  function start() {
    let params;
    try {
      const topic = ui.topic.value.trim();
      if (!topic) throw new Error('choose a topic');
      const from = fromValue();
      if (!FROM_RE.test(from)) throw new Error(`start: expected ${FROM_HINT[ui.fromMode.value]}`);
      params = { topic, from, until: untilFor(from), partitions: partitionsValue(), format: ui.format.value };
    } catch (err) {
      setConn('error', err.message);
      return;
    }
    clearFilterError();
    if (session) endSession('stopped');
    clearRows(); // a new tail: old rows would repeat or interleave with its records
    writeUrl();
    session = {
      ...params, label: params.topic, cursor: new Map(), ends: new Map(), ws: null, timer: 0,
      attempt: 0, lost: null, lastError: null, resumeFrom: null, startedAt: performance.now(),
      // The filters the server has (confirmed by its hello or echo), those sent and not yet
      // answered (oldest first), and the last it refused.
      applied: { filter: '', regex: '', where: '' }, sent: [], rejected: null,
      received: 0, dropped: 0, serverStatus: null,
    };
    connect(session);
    updateButtons();
    updateStats();
  }

  function connect(s) {
    const resume = s.cursor.size
      ? `offsets:${[...s.cursor].map(([p, o]) => `${p}:${o}`).join(',')}`
      : serverFrom(s.from);
    // The filters as typed, unless the server refused just those: then the ones it had.
    const typed = filterInputs();
    const filters = s.rejected && sameFilters(typed, s.rejected) ? s.applied : typed;
    s.sent = [];
    s.connecting = filters;
    s.endReason = null;
    const q = new URLSearchParams({ from: resume });
    if (s.until) q.set('until', s.until);
    if (s.partitions) q.set('partitions', s.partitions);
    for (const key of ['filter', 'regex', 'where']) if (filters[key]) q.set(key, filters[key]);
    if (s.format !== 'auto') q.set('format', s.format);
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const token = bearerToken();
    const ws = new WebSocket(`${proto}//${location.host}${BASE}/ws/tail/${encodeURIComponent(s.topic)}?${q}`,
      token ? [`kafkatail.bearer.${token}`, 'kafkatail'] : []);
    s.ws = ws;
    s.resumeFrom = resume;
    setConn(s.lost ? 'reconnecting' : 'connecting');
    // Handlers ignore events from sockets that are no longer the session's current one.
    ws.onmessage = (ev) => { if (session === s && s.ws === ws) onFrame(s, ev.data); };
    ws.onclose = (ev) => { if (session === s && s.ws === ws) onClose(s, ev); };
  }

  function send(msg) {
    const ws = session && session.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return false;
    ws.send(JSON.stringify(msg));
    return true;
  }

  function onFrame(s, data) {
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      console.warn('kafkatail: ignoring non-JSON frame');
      return;
    }
    // An error frame only explains the close right after it; any later frame means the tail went on.
    if (msg.type !== 'error') s.lastError = null;
    switch (msg.type) {
      case 'hello': onHello(s, msg); break;
      case 'messages': onMessages(s, msg.messages || []); break;
      case 'status': onStatus(s, msg); break;
      case 'dropped':
        s.dropped += Number(msg.count) || 0;
        if (msg.reason === 'retention') skipDeleted(s, msg.partitions || {});
        enqueueMarker('dropped', droppedText(msg));
        break;
      case 'ends':
        for (const [p, end] of Object.entries(msg.partitions || {})) {
          const part = Number(p);
          if (s.ends.has(part) && end > s.ends.get(part)) s.ends.set(part, end);
        }
        s.endsAt = performance.now();
        updateLag();
        break;
      case 'error':
        // A refused filter change: the tail goes on with the filters it had.
        if (s.sent.length && msg.code === 4400 && s.ws && s.ws.readyState === WebSocket.OPEN) {
          filterRefused(s, msg.message || '');
          break;
        }
        s.lastError = { code: msg.code, message: msg.message || '' };
        break;
      default: console.warn('kafkatail: unknown frame type', msg.type);
    }
  }

  function onHello(s, msg) {
    const parts = msg.partitions || [];
    for (const p of parts) {
      // Partitions without any record yet resume from where the server started them.
      if (!s.cursor.has(p.partition)) s.cursor.set(p.partition, p.start);
      if (Number.isFinite(p.end)) s.ends.set(p.partition, Math.max(p.end, s.ends.get(p.partition) || 0));
    }
    s.label = `${msg.topic || s.topic} · ${plural(parts.length, 'partition')}`;
    // The filters in the URL it opened with were accepted.
    if (s.connecting) {
      s.applied = s.connecting;
      s.connecting = null;
      if (!s.sent.length) clearFilterError();
    }
    if (s.lost) {
      enqueueMarker('reconnect', `reconnected after ${s.lost} — resumed from ${s.resumeFrom}`);
      s.lost = null;
    }
    s.attempt = 0;
    if (paused) send({ op: 'pause' });
    setConn(paused ? 'paused' : 'live', pausedDetail());
    updateStats();
  }

  function onMessages(s, recs) {
    let accepted = 0;
    for (const rec of recs) {
      const next = s.cursor.get(rec.partition);
      if (next !== undefined && rec.offset < next) continue; // overlap after a reconnect
      s.cursor.set(rec.partition, rec.offset + 1);
      if (rec.offset + 1 > (s.ends.get(rec.partition) || 0)) s.ends.set(rec.partition, rec.offset + 1);
      enqueueRecord(rec);
      accepted++;
    }
    s.received += accepted;
    rateSamples.push([performance.now(), accepted]);
    scheduleFlush();
  }

  function onStatus(s, msg) {
    s.serverStatus = msg.status;
    switch (msg.status) {
      case 'filter': {
        // The server's echo of a live filter change: from here on only matching records arrive.
        const sent = s.sent.shift();
        if (sent) s.applied = sent;
        s.rejected = null;
        if (!s.sent.length) clearFilterError();
        const desc = [msg.filter && `substring "${msg.filter}"`, msg.regex && `regex /${msg.regex}/`,
          msg.where && `where ${msg.where}`].filter(Boolean).join(' and ');
        enqueueMarker('info', desc ? `filter applied: ${desc}` : 'filter cleared');
        return;
      }
      case 'caught-up':
        if (!paused) setConn('live', `${s.label} · caught up`);
        return;
      case 'end':
        // The server closes with 1000 next ("max reached", "until reached").
        s.endReason = msg.reason || 'ended';
        enqueueMarker('info', `tail ended${msg.reason ? `: ${msg.reason}` : ''}`);
        return;
      case 'denied':
        enqueueMarker('error', msg.reason);
        return;
      case 'broker-unavailable':
        enqueueMarker('warn', msg.reason ? `broker unavailable: ${msg.reason}`
                                         : 'broker unavailable — waiting for it to come back');
        break;
      case 'reconnected':
        enqueueMarker('reconnect', 'broker connection restored');
        setConn(paused ? 'paused' : 'live', pausedDetail());
        return;
      case 'paused':
      case 'live':
        // The server confirms our own pause or resume; the page's state is already set.
        setConn(paused ? 'paused' : 'live', pausedDetail());
        return;
      default:
    }
    setConn(msg.status);
  }

  // Records retention deleted can never come back: a later resume starts after them, not at them.
  function skipDeleted(s, partitions) {
    for (const [p, [, last]] of Object.entries(partitions)) {
      const part = Number(p);
      if (!(s.cursor.get(part) > last)) s.cursor.set(part, last + 1);
    }
  }

  function droppedText(msg) {
    const ranges = Object.entries(msg.partitions || {}).map(([p, [first, last]]) => `p${p} ${first}–${last}`);
    const why = msg.reason === 'retention' ? 'deleted by retention' : 'client fell behind';
    return `skipped ${plural(msg.count, 'record')} (${why})${ranges.length ? `: ${ranges.join(', ')}` : ''}`;
  }

  function describeClose(code, reason) {
    const text = CLOSE_TEXT[code] || 'closed';
    if (reason && reason.startsWith(text)) return `${code} ${reason}`;
    return `${code} ${text}${reason ? `: ${reason}` : ''}`;
  }

  function onClose(s, ev) {
    s.ws = null;
    // The server sends an error frame just before an error close. If the close frame itself got
    // lost (1006: the connection dropped without one), the error frame's code is the real reason.
    const err = s.lastError;
    s.lastError = null;
    // Likewise a normal end: Chromium reports 1006 when the server drops the connection right
    // after its close frame, and the "end" status before it says the tail is over.
    const ended = ev.code === 1006 && !err && s.endReason ? s.endReason : '';
    s.endReason = null;
    const code = ev.code === 1006 && err && err.code ? err.code : ended ? 1000 : ev.code;
    const why = describeClose(code, ev.reason || (err ? err.message : ended));
    if (code === 1000 || (code >= 4000 && code < 5000)) {
      const normal = code === 1000;
      // A where (or regex, or filter) in the URL the server refused: shown at its box too.
      if (code === 4400) showFilterError((err && err.message) || ev.reason || '', s.connecting || filterInputs());
      enqueueMarker(normal ? 'info' : 'error', `closed: ${why}`);
      endSession(normal ? 'ended' : 'closed', why);
      return;
    }
    s.lost = why;
    const delay = Math.min(BACKOFF_MIN_MS * 2 ** s.attempt, BACKOFF_MAX_MS);
    s.attempt++;
    setConn('reconnecting', `${why} — retrying in ${(delay / 1000).toFixed(1)}s`);
    s.timer = setTimeout(() => connect(s), delay);
  }

  function endSession(state, detail = '') {
    const s = session;
    session = null;
    lastTotals = { received: s.received, dropped: s.dropped };
    clearTimeout(s.timer);
    if (s.ws) s.ws.close(1000, 'stopped by user');
    paused = false;
    autoPaused = false;
    scheduleFlush();
    setConn(state, detail);
    updateButtons();
    updateStats();
  }

  const pausedDetail = () => (session ? `${session.label}${autoPaused ? ' · tab hidden' : ''}` : '');

  // Pause stops rendering and asks the server to stop fetching; resume continues from the cursor.
  function setPaused(value, auto = false) {
    if (!session || paused === value) return;
    paused = value;
    autoPaused = value && auto;
    updateButtons();
    if (send({ op: value ? 'pause' : 'resume' })) setConn(value ? 'paused' : 'live', pausedDetail());
    scheduleFlush();
    updateStats();
  }

  function onVisibility() {
    syncOverview(); // stops the overview's refresh while hidden, resumes it when shown
    if (document.hidden) {
      if (settings.autoPause && session && !paused) setPaused(true, true);
    } else if (autoPaused) {
      setPaused(false);
    }
  }

  const filterInputs = () => ({ filter: ui.filter.value, regex: ui.regex.value, where: ui.where.value });
  const sameFilters = (a, b) => a.filter === b.filter && a.regex === b.regex && a.where === b.where;

  // One control frame carries all three: the server replaces them together, or refuses the lot.
  function applyFilter() {
    writeUrl();
    if (!session) return;
    const want = filterInputs();
    const last = session.sent.length ? session.sent[session.sent.length - 1] : session.applied;
    if (sameFilters(want, last)) return;
    // If the socket is down, the next (re)connect picks the new filter up from the inputs.
    if (!send({ op: 'filter', ...want })) return;
    session.sent.push(want);
    // The marker is added when the server echoes the change (status "filter"); a refusal comes
    // as an error frame (filterRefused).
  }

  function filterRefused(s, message) {
    s.rejected = s.sent.shift() || filterInputs();
    enqueueMarker('error', `filter not applied, the previous one still is: ${message}`);
    showFilterError(message, s.rejected);
  }

  // ---------- filter errors, at their boxes ----------

  const FILTER_FIELDS = { filter: 'filter', regex: 'regex', where: 'where' };

  // A refusal ("where: line 1, column 17: Syntax error: ...") marks the box it names; a where's
  // is spelled out under its box, with a caret under the column, until the next accepted filter.
  function showFilterError(message, sent) {
    clearFilterError();
    const m = /^(filter|regex|where):/.exec(message);
    if (!m) return;
    const input = ui[FILTER_FIELDS[m[1]]];
    input.setAttribute('aria-invalid', 'true');
    input.dataset.error = message;
    input.title = message;
    if (m[1] !== 'where') return;
    const parts = [el('span', 'msg', message)];
    const pos = /line (\d+), column (\d+)/.exec(message);
    const source = sent ? sent.where : ui.where.value;
    if (pos && source) {
      const line = source.split('\n')[Number(pos[1]) - 1];
      if (line !== undefined) parts.push(caretLine(line, Number(pos[2]) - 1));
    }
    ui.whereError.replaceChildren(...parts);
    ui.whereError.hidden = false;
  }

  // The expression's line with a ^ under column `col` (0-based), cut to ~60 characters around it.
  function caretLine(line, col) {
    const width = 60;
    const start = Math.max(0, Math.min(col - width / 2, line.length - width));
    let text = line.slice(start, start + width);
    let at = Math.max(0, col - start);
    if (start > 0) {
      text = `…${text}`;
      at++;
    }
    if (start + width < line.length) text = `${text}…`;
    return el('pre', 'caret', `${text}\n${' '.repeat(at)}^`);
  }

  function clearFilterError() {
    for (const input of [ui.filter, ui.regex, ui.where]) {
      if (!input.hasAttribute('aria-invalid')) continue;
      input.removeAttribute('aria-invalid');
      delete input.dataset.error;
      input.title = input === ui.where ? WHERE_TITLE : '';
    }
    ui.whereError.hidden = true;
    ui.whereError.replaceChildren();
  }

  // The server sends fresh end offsets ('ends' frames) while its consumer fetches. While paused
  // (the feed may have stopped fetching) or when none come, and the tab is visible, ask for them
  // now and then: that is when the lag grows.
  let endsInFlight = false;

  async function refreshEnds() {
    const s = session;
    if (!s || document.hidden || endsInFlight || !s.ends.size) return;
    if (!paused && s.endsAt && performance.now() - s.endsAt < 2 * LAG_REFRESH_MS) return;
    if (!s.ws || s.ws.readyState !== WebSocket.OPEN) return;
    endsInFlight = true;
    try {
      const info = await getJson(`/api/topics/${encodeURIComponent(s.topic)}`);
      for (const { partition, latest } of info.partitions || []) {
        if (s.ends.has(partition) && latest > s.ends.get(partition)) s.ends.set(partition, latest);
      }
      updateLag();
    } catch {
      // the next refresh tries again; the lag shown is a lower bound meanwhile
    } finally {
      endsInFlight = false;
    }
  }

  // ---------- topics ----------

  function bearerToken() {
    try {
      return sessionStorage.getItem(TOKEN_KEY) || '';
    } catch {
      return '';
    }
  }

  function authFetch(path, init = {}) {
    const token = bearerToken();
    return fetch(BASE + path, token ? { ...init, headers: { Authorization: `Bearer ${token}` } } : init);
  }

  async function getJson(url) {
    const res = await authFetch(url);
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    return res.json();
  }

  async function loadTopics() {
    try {
      const { topics } = await getJson('/api/topics');
      knownTopics = new Set(topics.map((t) => t.name));
      ui.topicList.replaceChildren(...topics.map((t) => {
        const opt = el('option');
        opt.value = t.name;
        opt.label = `${t.name} (${plural(t.partitions, 'partition')})`;
        return opt;
      }));
    } catch (err) {
      setTopicInfo(`topic list unavailable (${err.message})`);
    }
  }

  // The slot has a fixed width (style.css), so filling it never reflows the header and moves the
  // rows under the pointer; the title carries what does not fit.
  function setTopicInfo(text, detail = '') {
    ui.topicInfo.textContent = text;
    ui.topicInfo.title = detail ? `${text}\n${detail}` : text;
  }

  async function showTopicInfo() {
    const name = ui.topic.value.trim();
    setTopicInfo('');
    if (!name || (knownTopics.size && !knownTopics.has(name))) return;
    try {
      const info = await getJson(`/api/topics/${encodeURIComponent(name)}`);
      if (ui.topic.value.trim() !== name) return; // the user moved on
      const parts = info.partitions || [];
      const retained = parts.reduce((n, p) => n + (p.latest - p.earliest), 0);
      setTopicInfo(`${plural(parts.length, 'partition')} · ${retained.toLocaleString()} retained`,
                   parts.map((p) => `p${p.partition}: ${p.earliest} – ${p.latest}`).join('\n'));
    } catch (err) {
      setTopicInfo(`no info (${err.message})`);
    }
  }

  // ---------- the topic overview ----------

  // While no tail runs and the list is empty: every topic this caller may read, from
  // /api/overview (the server measures them every few seconds, once for all callers), asked again
  // every OVERVIEW_REFRESH_MS while the tab is visible, never while a tail runs. The search box
  // filters the rows as you type; a click on a row tails its topic, as typing its name would.
  const overview = { data: null, error: '', at: 0, timer: 0, inFlight: false, sort: 'name', desc: false };
  let overviewSync = 0;

  const overviewWanted = () => !session && !list.items.length && !queue.length;

  // Deferred a turn: start() empties the list before it sets the session, and the overview must
  // not flash up (nor be asked for) on the way.
  function syncOverview() {
    if (!overviewSync) overviewSync = setTimeout(applyOverview, 0);
  }

  function applyOverview() {
    overviewSync = 0;
    const want = overviewWanted();
    ui.overview.hidden = !want;
    ui.list.hidden = want;
    if (!want || document.hidden) {
      clearTimeout(overview.timer);
      overview.timer = 0;
    } else if (!overview.timer && !overview.inFlight) {
      const wait = Math.max(0, OVERVIEW_REFRESH_MS - (Date.now() - overview.at));
      overview.timer = setTimeout(refreshOverview, wait);
    }
  }

  async function refreshOverview() {
    overview.timer = 0;
    if (!overviewWanted() || document.hidden) return;
    overview.inFlight = true;
    const token = bearerToken();
    try {
      overview.data = await getJson('/api/overview');
      overview.error = '';
    } catch (err) {
      overview.error = err.message; // the last answer, if any, stays on show
    } finally {
      overview.inFlight = false;
      // Asked with a token since changed: the answer may list other topics; ask again at once.
      overview.at = bearerToken() === token ? Date.now() : 0;
    }
    renderOverview();
    applyOverview(); // the next refresh, if the overview is still wanted
  }

  function overviewRows() {
    const topics = (overview.data && overview.data.topics) || [];
    const term = ui.ovSearch.value.trim().toLowerCase();
    const shown = term ? topics.filter((t) => t.name.toLowerCase().includes(term)) : topics.slice();
    const { sort, desc } = overview;
    const key = (t) => (sort === 'name' ? t.name : t[sort] ?? -1); // unknown sorts lowest
    shown.sort((a, b) => {
      const [x, y] = [key(a), key(b)];
      const c = x < y ? -1 : x > y ? 1 : 0;
      return desc ? -c : c;
    });
    return shown;
  }

  function fmtRate(rate) {
    if (typeof rate !== 'number' || !Number.isFinite(rate)) return '—';
    return rate < 10 ? rate.toFixed(1) : Math.round(rate).toLocaleString();
  }

  function overviewRow(t) {
    const tr = el('tr');
    tr.dataset.topic = t.name;
    const name = el('button', 'ov-name', t.name);
    name.type = 'button';
    name.title = `tail ${t.name}`;
    const topic = el('td', 'ov-topic');
    topic.append(name);
    const last = el('td', 'ov-last', '—');
    if (Number.isFinite(t.last_record) && t.last_record >= 0) {
      const d = new Date(t.last_record);
      last.textContent = relTime(t.last_record);
      last.title = `${fmtLocal(d)} · ${d.toISOString()}`;
    }
    tr.append(topic, el('td', 'num', String(t.partitions)),
      el('td', 'num', Number(t.retained).toLocaleString()), el('td', 'num ov-rate', fmtRate(t.rate)), last);
    return tr;
  }

  function renderOverview() {
    const data = overview.data;
    const shown = overviewRows();
    const total = data ? data.topics.length : 0;
    const term = ui.ovSearch.value.trim();
    ui.ovRows.replaceChildren(...shown.map(overviewRow));
    for (const th of ui.ovHead.querySelectorAll('th[data-sort]')) {
      const on = th.dataset.sort === overview.sort;
      th.setAttribute('aria-sort', on ? (overview.desc ? 'descending' : 'ascending') : 'none');
    }
    const info = [];
    if (data) {
      info.push(term ? `${shown.length} of ${plural(total, 'topic')}` : plural(total, 'topic'));
      if (data.truncated) info.push(`the first ${total} of the ${data.total} you may read`);
      info.push(`as of ${new Date(overview.at).toLocaleTimeString()}`);
    }
    if (overview.error) info.push(`overview unavailable (${overview.error})`);
    ui.ovInfo.textContent = info.join(' · ');
    const empty = !data ? (overview.error ? '' : 'loading the topics…')
      : !total ? 'no topics you may read' : !shown.length ? `no topic matches "${term}"` : '';
    ui.ovEmpty.textContent = empty;
    ui.ovEmpty.hidden = !empty;
  }

  function tailTopic(name) {
    ui.topic.value = name;
    showTopicInfo();
    start();
  }

  function sortOverview(ev) {
    const th = ev.target.closest('th[data-sort]');
    if (!th) return;
    const key = th.dataset.sort;
    // A new column sorts the busiest (largest, newest) first; its name A to Z.
    overview.desc = key === overview.sort ? !overview.desc : key !== 'name';
    overview.sort = key;
    renderOverview();
  }

  // Enter in the search box tails the topic it names exactly, or the only one it matches.
  function searchEnter(ev) {
    if (ev.key !== 'Enter') return;
    const shown = overviewRows();
    const term = ui.ovSearch.value.trim();
    const pick = shown.find((t) => t.name === term) || (shown.length === 1 ? shown[0] : null);
    if (pick) tailTopic(pick.name);
  }

  // ---------- settings dialog ----------

  function renderHighlightList() {
    ui.hlList.replaceChildren(...settings.highlights.map((rule, i) => {
      const li = el('li');
      const swatch = el('span', 'swatch');
      swatch.style.backgroundColor = rule.color;
      const remove = el('button', null, 'remove');
      remove.type = 'button';
      remove.addEventListener('click', () => {
        settings.highlights.splice(i, 1);
        highlightsChanged();
      });
      li.append(swatch, el('span', 'term', rule.term), remove);
      return li;
    }));
  }

  function highlightsChanged() {
    saveSettings();
    compileHighlights();
    for (const item of list.items) delete item.hay;
    renderHighlightList();
    rebuildRows();
  }

  function openSettings() {
    ui.setMax.value = settings.maxRows;
    ui.setAutoPause.checked = settings.autoPause;
    ui.setTheme.value = settings.theme;
    ui.hlColor.value = PALETTE[settings.highlights.length % PALETTE.length];
    renderHighlightList();
    ui.settings.showModal();
  }

  function addHighlight() {
    const term = ui.hlTerm.value.trim();
    if (!term) return;
    settings.highlights.push({ term, color: ui.hlColor.value });
    ui.hlTerm.value = '';
    ui.hlColor.value = PALETTE[settings.highlights.length % PALETTE.length];
    highlightsChanged();
  }

  // ---------- keyboard ----------

  function onKey(ev) {
    if (ev.ctrlKey || ev.metaKey || ev.altKey || ev.isComposing || ui.settings.open) return;
    const t = ev.target;
    const typing = t instanceof HTMLElement && (t.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(t.tagName));
    if (ev.key === 'Escape') {
      ev.preventDefault(); // a search field would clear itself, and with it the live filter
      if (typing) t.blur();
      else closePane();
      return;
    }
    if (typing) return;
    switch (ev.key) {
      case ' ': setPaused(!paused); break; // also on a focused button: space never restarts the tail
      case '/': {
        const field = ui.overview.hidden ? ui.filter : ui.ovSearch;
        field.focus();
        field.select();
        break;
      }
      case 'g': jumpToLatest(); break;
      case 'c': copyRecord(); break;
      default: return;
    }
    ev.preventDefault();
  }

  // ---------- wiring ----------

  let filterTimer = 0;

  ui.form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const focused = document.activeElement;
    if (session && (focused === ui.filter || focused === ui.regex || focused === ui.where)) applyFilter();
    else start();
  });
  ui.stop.addEventListener('click', () => { if (session) endSession('stopped'); });
  ui.pause.addEventListener('click', () => setPaused(!paused));
  ui.clear.addEventListener('click', clearRows);
  ui.download.addEventListener('click', downloadRecords);
  ui.downloadCsv.addEventListener('click', downloadCsv);
  ui.rangePop.addEventListener('toggle', (ev) => { if (ev.newState === 'open') describeRange(); });
  ui.rangeNdjson.addEventListener('click', () => downloadRange('ndjson'));
  ui.rangeCsv.addEventListener('click', () => downloadRange('csv'));
  ui.rangeCancel.addEventListener('click', () => { if (range.controller) range.controller.abort(); });
  ui.jump.addEventListener('click', jumpToLatest);
  ui.records.addEventListener('scroll', () => {
    follow = atBottom();
    scheduleRender();
  });
  window.addEventListener('resize', scheduleRender);
  ui.records.addEventListener('click', (ev) => {
    const row = ev.target.closest('.record');
    if (!row || !document.getSelection().isCollapsed) return;
    const item = list.items.find((i) => i.seq === Number(row.dataset.seq));
    select(item && item !== selected ? item : null);
  });
  ui.copy.addEventListener('click', copyRecord);
  ui.paneClose.addEventListener('click', closePane);
  ui.fromMode.addEventListener('change', () => { syncFromArg(); writeUrl(); });
  ui.tsQuick.addEventListener('click', (ev) => {
    const minutes = Number(ev.target.dataset.minutes);
    if (!minutes) return;
    ui.fromArg.value = localInput(new Date(Date.now() - minutes * 60000));
    writeUrl();
    if (ui.topic.value.trim()) start();
  });
  for (const input of [ui.partitions, ui.fromArg, ui.untilArg, ui.format]) input.addEventListener('change', writeUrl);
  ui.untilClear.addEventListener('click', () => {
    ui.untilArg.value = '';
    writeUrl();
  });
  ui.topic.addEventListener('change', () => { writeUrl(); showTopicInfo(); });
  // Substring filter applies as you type; a regex only on Enter/blur so half-typed patterns are not sent.
  ui.filter.addEventListener('input', () => {
    clearTimeout(filterTimer);
    filterTimer = setTimeout(applyFilter, FILTER_DEBOUNCE_MS);
  });
  ui.regex.addEventListener('change', applyFilter);
  // A where, like a regex, only on Enter/blur: a half-typed expression would not compile.
  ui.where.addEventListener('change', applyFilter);
  ui.whereHelp.addEventListener('click', (ev) => {
    const example = ev.target.closest('button.example');
    if (!example) return;
    ui.where.value = example.textContent;
    ui.whereHelp.hidePopover();
    ui.where.focus();
    applyFilter();
  });
  document.addEventListener('keydown', onKey);
  document.addEventListener('visibilitychange', onVisibility);

  ui.openSettings.addEventListener('click', openSettings);
  ui.setMax.addEventListener('change', () => {
    if (ui.setMax.value.trim() === '') return; // emptied on the way to a new number
    settings.maxRows = clampRows(ui.setMax.value);
    ui.setMax.value = settings.maxRows;
    saveSettings();
    render(trim());
    updateStats();
  });
  ui.setToken.value = bearerToken();
  ui.setToken.addEventListener('change', () => {
    try {
      sessionStorage.setItem(TOKEN_KEY, ui.setToken.value.trim());
    } catch {
      // storage disabled: no token
    }
    schemaCache.clear(); // what the registry showed may depend on who asks
    loadTopics();
    overview.at = 0; // and which topics there are to show: ask again now
    clearTimeout(overview.timer);
    overview.timer = 0;
    syncOverview();
  });
  // The profile may need the token too, which a plain link cannot send: fetch it, then show it.
  ui.flame.addEventListener('click', async (ev) => {
    if (!bearerToken()) return;
    ev.preventDefault();
    const tab = window.open('', '_blank');
    const res = await authFetch('/debug/profile?seconds=5&format=svg');
    const body = res.ok ? await res.blob() : new Blob([`HTTP ${res.status}`], { type: 'text/plain' });
    if (tab) tab.location = URL.createObjectURL(body);
  });
  ui.setAutoPause.addEventListener('change', () => {
    settings.autoPause = ui.setAutoPause.checked;
    saveSettings();
  });
  ui.setTheme.addEventListener('change', () => {
    settings.theme = THEMES.includes(ui.setTheme.value) ? ui.setTheme.value : 'system';
    saveSettings();
    applyTheme();
  });
  ui.hlAdd.addEventListener('click', addHighlight);
  ui.ovSearch.addEventListener('input', renderOverview);
  ui.ovSearch.addEventListener('keydown', searchEnter);
  ui.ovHead.addEventListener('click', sortOverview);
  ui.ovRows.addEventListener('click', (ev) => {
    const row = ev.target.closest('tr[data-topic]');
    if (row && document.getSelection().isCollapsed) tailTopic(row.dataset.topic);
  });
  ui.hlTerm.addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter') {
      ev.preventDefault();
      addHighlight();
    }
  });

  setInterval(updateStats, 1000);
  setInterval(refreshEnds, LAG_REFRESH_MS);
  setInterval(() => {
    for (const rel of ui.rows.querySelectorAll('.rel')) rel.textContent = relTime(Number(rel.dataset.ts));
  }, 10000);

  // Read-only views for the browser console and the browser tests.
  window.kafkatail = Object.freeze({
    rows: () => list.items.filter((i) => i.rec).map((i) => [i.rec.partition, i.rec.offset]),
    records: () => list.items.filter((i) => i.rec).map((i) => i.rec),
    markers: () => list.items.filter((i) => !i.rec).map((i) => i.text),
    overview: () => (overview.data ? JSON.parse(JSON.stringify(overview.data)) : null),
    state: () => ({
      conn: ui.conn.dataset.state,
      paused,
      autoPaused,
      follow,
      rows: list.items.length,
      records: list.records,
      pending: queue.length,
      received: session ? session.received : lastTotals.received,
      dropped: session ? session.dropped : lastTotals.dropped,
      serverStatus: session ? session.serverStatus : null,
      lag: session ? Object.fromEntries(lagByPartition(session).map(([p, l]) => [p, l])) : {},
      settings: JSON.parse(JSON.stringify(settings)),
    }),
  });

  applyTheme();
  compileHighlights();
  loadTopics();
  if (readUrl()) {
    showTopicInfo();
    start();
  }
  updateButtons();
  updateStats();
})();
