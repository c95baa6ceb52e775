// kafkatail browser client: live-tails a topic over /ws/tail/<topic>.
// All record data is rendered through textContent / text nodes, never innerHTML.
'use strict';

(() => {
  const MAX_ROWS = 10000;          // rows (records + markers) kept in the DOM
  const FLUSH_MS = 50;             // batch incoming records before touching the DOM
  const BACKOFF_MIN_MS = 500;
  const BACKOFF_MAX_MS = 10000;
  const RATE_WINDOW_MS = 5000;
  const FILTER_DEBOUNCE_MS = 400;
  const PREVIEW_CHARS = 300;
  const FORMATS = ['auto', 'text', 'json', 'base64'];
  const CLOSE_TEXT = {
    1000: 'normal end', 1001: 'server shutdown', 1006: 'connection lost',
    1009: 'frame too large', 1011: 'internal server error', 1013: 'server over capacity',
    4400: 'bad request', 4403: 'forbidden', 4404: 'unknown topic',
  };
  const FROM_HINT = {
    last: 'records per partition, e.g. 100',
    ts: 'ISO time (local) or epoch ms',
    offsets: 'partition:offset,... e.g. 0:120,1:80',
  };
  const FROM_RE = /^(latest|earliest|-[1-9]\d*|ts:.+|offsets:\d+:\d+(,\d+:\d+)*)$/;

  const $ = (id) => document.getElementById(id);
  const ui = {
    form: $('controls'), topic: $('topic'), topicList: $('topic-list'), topicInfo: $('topic-info'),
    partitions: $('partitions'), fromMode: $('from-mode'), fromArg: $('from-arg'),
    filter: $('filter'), regex: $('regex'), format: $('format'),
    start: $('start'), stop: $('stop'), pause: $('pause'), clear: $('clear'),
    conn: $('conn'), detail: $('status-detail'), count: $('count'), rate: $('rate'),
    records: $('records'), jump: $('jump'),
  };

  let knownTopics = new Set();
  let session = null;   // the running tail, or null
  let paused = false;
  let queue = [];       // [kind, payload, time] items waiting to be rendered
  let flushTimer = 0;
  let shown = 0;
  let rateSamples = []; // [time, count] per received batch

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

  function fmtLocal(d) {
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
      `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
  }

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

  // ---------- record rendering ----------

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
    cell.append(fmtLocal(d), ' ', rel);
    return cell;
  }

  function keyCell(rec) {
    const cell = el('span', 'c-key');
    if (rec.key === null || rec.key === undefined) {
      cell.append(el('span', 'muted', '—'));
      return cell;
    }
    if (rec.key_encoding === 'base64') cell.append(badge('b64', 'binary key, base64-encoded'));
    cell.append(String(rec.key));
    cell.title = String(rec.key);
    return cell;
  }

  function jsonDetails(value) {
    const compact = JSON.stringify(value);
    const details = el('details');
    details.append(el('summary', null,
      compact.length > PREVIEW_CHARS ? `${compact.slice(0, PREVIEW_CHARS)}…` : compact));
    // Pretty-print lazily: most rows are never expanded.
    details.addEventListener('toggle', () => {
      details.append(el('pre', null, JSON.stringify(value, null, 2)));
    }, { once: true });
    return details;
  }

  function valueCell(rec) {
    const cell = el('div', 'c-val');
    const v = rec.value;
    switch (rec.encoding) {
      case 'json':
        cell.append(v !== null && typeof v === 'object' ? jsonDetails(v) : el('span', 'json', JSON.stringify(v)));
        break;
      case 'base64':
        cell.append(badge('base64', 'binary value, shown base64-encoded'), el('span', 'b64', String(v)));
        break;
      case 'null':
        cell.append(el('span', 'muted', 'null (tombstone)'));
        break;
      default:
        cell.append(el('span', 'text', v === null || v === undefined ? '' : String(v)));
    }
    if (rec.truncated) cell.append(badge('truncated', 'value was cut by the server'));
    return cell;
  }

  function headersCell(headers) {
    const cell = el('div', 'c-hdrs');
    for (const [name, value] of headers || []) {
      const line = el('div', null, `${name}: ${value ?? ''}`);
      line.title = line.textContent;
      cell.append(line);
    }
    return cell;
  }

  function recordRow(rec) {
    const row = el('div', 'record');
    row.dataset.partition = rec.partition;
    row.dataset.offset = rec.offset;
    row.style.setProperty('--hue', (Number(rec.partition) * 67) % 360);
    row.append(
      el('span', 'c-part', String(rec.partition)),
      el('span', 'c-off', String(rec.offset)),
      timeCell(rec.timestamp),
      keyCell(rec),
      valueCell(rec),
      headersCell(rec.headers),
      el('span', 'c-size', fmtSize(rec.size)),
    );
    return row;
  }

  function markerRow(kind, text, time) {
    const row = el('div', `marker marker-${kind}`);
    row.append(el('span', 'marker-time', fmtLocal(new Date(time))), ' ', text);
    return row;
  }

  // ---------- render queue ----------

  function enqueueRecord(rec) { queue.push(['record', rec, 0]); }

  function enqueueMarker(kind, text) {
    queue.push([kind, text, Date.now()]);
    scheduleFlush();
  }

  function scheduleFlush() {
    if (!flushTimer && !paused) flushTimer = setTimeout(flush, FLUSH_MS);
  }

  const atBottom = () => {
    const r = ui.records;
    return r.scrollTop + r.clientHeight >= r.scrollHeight - 8;
  };

  function flush() {
    flushTimer = 0;
    if (paused || !queue.length) return;
    const items = queue;
    queue = [];
    const stick = atBottom();
    const frag = document.createDocumentFragment();
    // Items older than the last MAX_ROWS would be trimmed immediately: skip building them.
    items.forEach(([kind, payload, time], i) => {
      if (kind === 'record') shown++;
      if (i < items.length - MAX_ROWS) return;
      frag.append(kind === 'record' ? recordRow(payload) : markerRow(kind, payload, time));
    });
    ui.records.append(frag);
    trimRows();
    if (stick) ui.records.scrollTop = ui.records.scrollHeight;
    ui.jump.hidden = atBottom();
    updateStats();
  }

  function trimRows() {
    for (let excess = ui.records.childElementCount - MAX_ROWS; excess > 0; excess--) {
      ui.records.firstElementChild.remove();
    }
  }

  // ---------- status bar ----------

  function setConn(state, detail = session ? session.label : '') {
    ui.conn.textContent = state;
    ui.conn.dataset.state = state;
    ui.detail.textContent = detail;
  }

  function updateStats() {
    const now = performance.now();
    rateSamples = rateSamples.filter(([t]) => now - t < RATE_WINDOW_MS);
    const received = rateSamples.reduce((sum, [, n]) => sum + n, 0);
    const windowMs = session ? Math.max(1000, Math.min(RATE_WINDOW_MS, now - session.startedAt)) : RATE_WINDOW_MS;
    ui.rate.textContent = `${(received * 1000 / windowMs).toFixed(1)}/s`;
    ui.count.textContent = `${plural(shown, 'record')}${queue.length ? ` (+${queue.length} pending)` : ''}`;
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

  function partitionsValue() {
    const parts = ui.partitions.value.split(',').map((p) => p.trim()).filter(Boolean);
    if (parts.some((p) => !/^\d+$/.test(p))) throw new Error('partitions: expected a comma list of numbers, e.g. 0,2');
    return parts.join(',');
  }

  function syncFromArg() {
    const hint = FROM_HINT[ui.fromMode.value];
    ui.fromArg.hidden = !hint;
    ui.fromArg.placeholder = hint || '';
  }

  function writeUrl() {
    const q = new URLSearchParams();
    const put = (key, value, dflt = '') => { if (value && value !== dflt) q.set(key, value); };
    put('topic', ui.topic.value.trim());
    put('from', fromValue(), 'latest');
    put('partitions', ui.partitions.value.replace(/\s+/g, ''));
    put('filter', ui.filter.value);
    put('regex', ui.regex.value);
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
    ui.format.value = FORMATS.includes(q.get('format')) ? q.get('format') : 'auto';
    const from = q.get('from') || 'latest';
    let m;
    if (from === 'earliest') ui.fromMode.value = 'earliest';
    else if ((m = /^-(\d+)$/.exec(from))) [ui.fromMode.value, ui.fromArg.value] = ['last', m[1]];
    else if ((m = /^(ts|offsets):(.*)$/.exec(from))) [ui.fromMode.value, ui.fromArg.value] = [m[1], m[2]];
    syncFromArg();
    return Boolean(ui.topic.value);
  }

  // ---------- the tail session ----------

  function start() {
    let params;
    try {
      const topic = ui.topic.value.trim();
      if (!topic) throw new Error('choose a topic');
      const from = fromValue();
      if (!FROM_RE.test(from)) throw new Error(`start: expected ${FROM_HINT[ui.fromMode.value]}`);
      params = { topic, from, partitions: partitionsValue(), format: ui.format.value };
    } catch (err) {
      setConn('error', err.message);
      return;
    }
    if (session) endSession('stopped');
    writeUrl();
    session = {
      ...params, label: params.topic, cursor: new Map(), ws: null, timer: 0,
      attempt: 0, lost: null, lastError: null, resumeFrom: null, startedAt: performance.now(),
      filter: '', regex: '',
    };
    connect(session);
    updateButtons();
  }

  function connect(s) {
    const resume = s.cursor.size
      ? `offsets:${[...s.cursor].map(([p, o]) => `${p}:${o}`).join(',')}`
      : serverFrom(s.from);
    s.filter = ui.filter.value;
    s.regex = ui.regex.value;
    const q = new URLSearchParams({ from: resume });
    if (s.partitions) q.set('partitions', s.partitions);
    if (s.filter) q.set('filter', s.filter);
    if (s.regex) q.set('regex', s.regex);
    if (s.format !== 'auto') q.set('format', s.format);
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const ws = new WebSocket(`${proto}//${location.host}/ws/tail/${encodeURIComponent(s.topic)}?${q}`);
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
      case 'dropped': enqueueMarker('dropped', droppedText(msg)); break;
      case 'error': s.lastError = { code: msg.code, message: msg.message || '' }; break;
      default: console.warn('kafkatail: unknown frame type', msg.type);
    }
  }

  function onHello(s, msg) {
    const parts = msg.partitions || [];
    // Partitions without any record yet resume from where the server started them.
    for (const p of parts) if (!s.cursor.has(p.partition)) s.cursor.set(p.partition, p.start);
    s.label = `${msg.topic || s.topic} · ${plural(parts.length, 'partition')}`;
    if (s.lost) {
      enqueueMarker('reconnect', `reconnected after ${s.lost} — resumed from ${s.resumeFrom}`);
      s.lost = null;
    }
    s.attempt = 0;
    if (paused) send({ op: 'pause' });
    setConn(paused ? 'paused' : 'live');
  }

  function onMessages(s, recs) {
    let accepted = 0;
    for (const rec of recs) {
      const next = s.cursor.get(rec.partition);
      if (next !== undefined && rec.offset < next) continue; // overlap after a reconnect
      s.cursor.set(rec.partition, rec.offset + 1);
      enqueueRecord(rec);
      accepted++;
    }
    rateSamples.push([performance.now(), accepted]);
    scheduleFlush();
  }

  function onStatus(s, msg) {
    switch (msg.status) {
      case 'filter': {
        // The server's echo of a live filter change: from here on only matching records arrive.
        const desc = [msg.filter && `substring "${msg.filter}"`, msg.regex && `regex /${msg.regex}/`]
          .filter(Boolean).join(' and ');
        enqueueMarker('info', desc ? `filter applied: ${desc}` : 'filter cleared');
        return;
      }
      case 'caught-up':
        if (!paused) setConn('live', `${s.label} · caught up`);
        return;
      case 'end':
        enqueueMarker('info', `tail ended${msg.reason ? `: ${msg.reason}` : ''}`);
        return;
      case 'broker-unavailable':
        enqueueMarker('warn', 'broker unavailable — waiting for it to come back');
        break;
      case 'reconnected':
        enqueueMarker('reconnect', 'broker connection restored');
        setConn(paused ? 'paused' : 'live');
        return;
      default:
    }
    setConn(paused && msg.status === 'live' ? 'paused' : msg.status);
  }

  function droppedText(msg) {
    const ranges = Object.entries(msg.partitions || {}).map(([p, [first, last]]) => `p${p} ${first}–${last}`);
    return `skipped ${plural(msg.count, 'record')} (client fell behind)${ranges.length ? `: ${ranges.join(', ')}` : ''}`;
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
    const code = ev.code === 1006 && err && err.code ? err.code : ev.code;
    const why = describeClose(code, ev.reason || (err ? err.message : ''));
    if (code === 1000 || (code >= 4000 && code < 5000)) {
      const normal = code === 1000;
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
    clearTimeout(s.timer);
    if (s.ws) s.ws.close(1000, 'stopped by user');
    setPaused(false);
    setConn(state, detail);
    updateButtons();
  }

  function setPaused(value) {
    paused = value;
    updateButtons();
    scheduleFlush();
  }

  function togglePause() {
    if (!session) return;
    setPaused(!paused);
    const sent = send({ op: paused ? 'pause' : 'resume' });
    if (sent) setConn(paused ? 'paused' : 'live');
  }

  function applyFilter() {
    writeUrl();
    if (!session) return;
    const filter = ui.filter.value;
    const regex = ui.regex.value;
    if (filter === session.filter && regex === session.regex) return;
    // If the socket is down, the next (re)connect picks the new filter up from the inputs.
    if (!send({ op: 'filter', filter, regex })) return;
    session.filter = filter;
    session.regex = regex;
    // The marker is added when the server echoes the change (status "filter").
  }

  function clearRows() {
    ui.records.replaceChildren();
    queue = [];
    shown = 0;
    ui.jump.hidden = true;
    updateStats();
  }

  // ---------- topics ----------

  async function getJson(url) {
    const res = await fetch(url);
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
      ui.topicInfo.textContent = `topic list unavailable (${err.message})`;
    }
  }

  async function showTopicInfo() {
    const name = ui.topic.value.trim();
    ui.topicInfo.textContent = '';
    ui.topicInfo.title = '';
    if (!name || (knownTopics.size && !knownTopics.has(name))) return;
    try {
      const info = await getJson(`/api/topics/${encodeURIComponent(name)}`);
      if (ui.topic.value.trim() !== name) return; // the user moved on
      const parts = info.partitions || [];
      const retained = parts.reduce((n, p) => n + (p.latest - p.earliest), 0);
      ui.topicInfo.textContent = `${plural(parts.length, 'partition')} · ${retained.toLocaleString()} retained`;
      ui.topicInfo.title = parts.map((p) => `p${p.partition}: ${p.earliest} – ${p.latest}`).join('\n');
    } catch (err) {
      ui.topicInfo.textContent = `no info (${err.message})`;
    }
  }

  // ---------- wiring ----------

  let filterTimer = 0;

  ui.form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const focused = document.activeElement;
    if (session && (focused === ui.filter || focused === ui.regex)) applyFilter();
    else start();
  });
  ui.stop.addEventListener('click', () => { if (session) endSession('stopped'); });
  ui.pause.addEventListener('click', togglePause);
  ui.clear.addEventListener('click', clearRows);
  ui.jump.addEventListener('click', () => {
    ui.records.scrollTop = ui.records.scrollHeight;
  });
  ui.records.addEventListener('scroll', () => { ui.jump.hidden = atBottom(); });
  // Click a row to wrap/unwrap its long cells (but not when selecting text or using <details>).
  ui.records.addEventListener('click', (ev) => {
    const row = ev.target.closest('.record');
    if (row && !ev.target.closest('details') && document.getSelection().isCollapsed) row.classList.toggle('expanded');
  });
  ui.fromMode.addEventListener('change', () => { syncFromArg(); writeUrl(); });
  for (const input of [ui.partitions, ui.fromArg, ui.format]) input.addEventListener('change', writeUrl);
  ui.topic.addEventListener('change', () => { writeUrl(); showTopicInfo(); });
  // Substring filter applies as you type; a regex only on Enter/blur so half-typed patterns are not sent.
  ui.filter.addEventListener('input', () => {
    clearTimeout(filterTimer);
    filterTimer = setTimeout(applyFilter, FILTER_DEBOUNCE_MS);
  });
  ui.regex.addEventListener('change', applyFilter);

  setInterval(updateStats, 1000);
  setInterval(() => {
    for (const rel of ui.records.querySelectorAll('.rel')) rel.textContent = relTime(Number(rel.dataset.ts));
  }, 10000);

  loadTopics();
  if (readUrl()) {
    showTopicInfo();
    start();
  }
  updateButtons();
})();
