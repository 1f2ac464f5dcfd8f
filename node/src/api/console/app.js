// The chorus web console: reads the daemon's API (read-only) and draws it.
// Plain JavaScript, no build step: the daemon embeds this file as is.
//
// Every value shown comes from the cluster, so text goes into the page only
// as text nodes (textContent, append): never through innerHTML.
'use strict';

(() => {
  const TOKEN_KEY = 'chorus.console.token';
  // Grades are not on the change feed: they are polled.
  const POLL_MS = 1500;
  // Every room is re-read this often even without a change event (a
  // replayed or missed event says only "something changed").
  const ROOMS_FULL_MS = 5000;
  // A console is for people: past this many rooms, only the first are read.
  const ROOM_DETAILS_MAX = 200;
  const ROOM_READS_PARALLEL = 4;
  const INCIDENT_PAGE = 1000; // the API's page maximum
  const INCIDENT_PAGES_PER_POLL = 20;
  // Enough for the default journal (10 000 entries) and the failover in it.
  const INCIDENTS_KEPT = 20000;
  const INCIDENTS_SHOWN = 300;
  const CALLS_SHOWN_PER_NODE = 200;
  const MOVES_CHARTED = 40;
  const FEED_MOVES_KEPT = 5000;
  const BACKOFF_MIN_MS = 500;
  const BACKOFF_MAX_MS = 15000;
  // A feed connection that lasted this long was healthy: the next
  // reconnect starts from the shortest wait again.
  const FEED_HEALTHY_MS = 10000;
  const SSE_LINE_BYTES_MAX = 4 * 1024 * 1024;
  const SVG_NS = 'http://www.w3.org/2000/svg';

  class AuthError extends Error {}

  const state = {
    token: null,
    tokenWaiters: [],
    cluster: null,
    nodes: null,
    incidents: [],
    lastAt: null,
    roomList: [],
    rooms: new Map(),
    dirty: new Set(),
    roomsReadAt: 0,
    roomsTruncated: false,
    // Calls seen moving on the change feed (moves made by peers are in
    // their journals, not this replica's): "room/session" -> move.
    feedMoves: new Map(),
    lastEventId: null,
    events: 0,
  };

  // ---------- DOM helpers (text only) ----------

  const $ = (id) => document.getElementById(id);

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    setAttrs(node, attrs);
    node.append(...children.filter((c) => c !== null && c !== undefined).map(asChild));
    return node;
  }

  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG_NS, tag);
    setAttrs(node, attrs);
    node.append(...children.map(asChild));
    return node;
  }

  function setAttrs(node, attrs) {
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      node.setAttribute(key, String(value));
    }
  }

  function asChild(child) {
    return child instanceof Node ? child : document.createTextNode(String(child));
  }

  function short(id) {
    const text = String(id || '');
    return text.length > 14 ? '…' + text.slice(-8) : text;
  }

  // For the chart, where a full id does not fit.
  function shortNode(id) {
    if (state.cluster && id === state.cluster.peer_id) return state.cluster.name;
    return short(id);
  }

  function nodeLabel(id) {
    if (state.cluster && id === state.cluster.peer_id) return `${state.cluster.name} (this node)`;
    return id;
  }

  // ---------- time ----------

  // `wall_ms-logical-actor` in hex: the wall clock is the first field.
  function stampMs(stamp) {
    if (typeof stamp !== 'string') return null;
    const wall = parseInt(stamp.split('-')[0], 16);
    return Number.isFinite(wall) ? wall : null;
  }

  function utc(ms) {
    if (ms === null || !Number.isFinite(ms)) return '?';
    return new Date(ms).toISOString().replace('T', ' ').replace('Z', '');
  }

  function span(ms) {
    if (ms < 1000) return `${Math.round(ms)} ms`;
    if (ms < 120000) return `${(ms / 1000).toFixed(ms < 10000 ? 2 : 1)} s`;
    return `${Math.round(ms / 60000)} min`;
  }

  // ---------- the token ----------

  function storeToken(token) {
    state.token = token;
    try {
      sessionStorage.setItem(TOKEN_KEY, token);
    } catch (_) {
      // Storage disabled: the token lives in this page only.
    }
  }

  // `#token=...` wins over a stored token; it is removed from the address
  // at once so that it does not stay in the history or get copied along.
  function takeToken() {
    const params = new URLSearchParams(location.hash.replace(/^#/, ''));
    const given = params.get('token');
    if (given !== null) {
      params.delete('token');
      const rest = params.toString();
      history.replaceState(null, '', location.pathname + location.search + (rest ? '#' + rest : ''));
      if (usableToken(given)) storeToken(given.trim());
    }
    if (state.token === null) {
      try {
        state.token = sessionStorage.getItem(TOKEN_KEY);
      } catch (_) {
        state.token = null;
      }
    }
  }

  // fetch refuses header values outside printable ASCII.
  function usableToken(text) {
    return /^[\x20-\x7e]+$/.test(text.trim()) && text.trim().length > 0;
  }

  function askForToken(message) {
    const form = $('token-form');
    form.hidden = false;
    $('token-error').textContent = message;
    $('token-input').focus();
    return new Promise((resolve) => state.tokenWaiters.push(resolve));
  }

  function setupTokenForm() {
    $('token-form').addEventListener('submit', (event) => {
      event.preventDefault();
      const text = $('token-input').value;
      if (!usableToken(text)) {
        $('token-error').textContent = 'A token is printable ASCII.';
        return;
      }
      storeToken(text.trim());
      $('token-input').value = '';
      $('token-form').hidden = true;
      $('token-error').textContent = '';
      const waiters = state.tokenWaiters.splice(0);
      waiters.forEach((resolve) => resolve());
    });
  }

  // ---------- the API ----------

  function headers(extra) {
    const h = Object.assign({ Accept: 'application/json' }, extra || {});
    if (state.token) h.Authorization = 'Bearer ' + state.token;
    return h;
  }

  async function api(path) {
    const res = await fetch(path, { headers: headers(), cache: 'no-store', credentials: 'omit' });
    if (res.status === 401) throw new AuthError('the API wants a valid token');
    if (!res.ok) {
      let why = `${res.status}`;
      try {
        const body = await res.json();
        why = `${res.status} ${body.code}: ${body.message}`;
      } catch (_) {
        // Not the API's error shape: the status says enough.
      }
      const error = new Error(`${path}: ${why}`);
      error.status = res.status;
      throw error;
    }
    return res.json();
  }

  async function readIncidents() {
    for (let page = 0; page < INCIDENT_PAGES_PER_POLL; page++) {
      const after = state.lastAt ? `&after=${encodeURIComponent(state.lastAt)}` : '';
      const entries = await api(`/v1/incidents?limit=${INCIDENT_PAGE}${after}`);
      if (!Array.isArray(entries) || entries.length === 0) return;
      state.incidents.push(...entries);
      state.lastAt = entries[entries.length - 1].at;
      if (state.incidents.length > INCIDENTS_KEPT) {
        state.incidents.splice(0, state.incidents.length - INCIDENTS_KEPT);
      }
      if (entries.length < INCIDENT_PAGE) return;
    }
  }

  async function readRooms() {
    const full = Date.now() - state.roomsReadAt >= ROOMS_FULL_MS;
    if (!full && state.dirty.size === 0) return;
    const list = await api('/v1/rooms');
    state.roomList = Array.isArray(list) ? list : [];
    const ids = state.roomList.map((r) => r.id).slice(0, ROOM_DETAILS_MAX);
    state.roomsTruncated = state.roomList.length > ids.length;
    const wanted = new Set(ids);
    for (const id of state.rooms.keys()) if (!wanted.has(id)) state.rooms.delete(id);
    const due = ids.filter((id) => full || state.dirty.has(id) || !state.rooms.has(id));
    state.dirty.clear();
    let next = 0;
    const worker = async () => {
      while (next < due.length) {
        const id = due[next++];
        try {
          state.rooms.set(id, await api(`/v1/rooms/${encodeURIComponent(id)}`));
        } catch (error) {
          if (error instanceof AuthError) throw error;
          // Purged between the list and the read: gone.
          if (error.status === 404) state.rooms.delete(id);
          else throw error;
        }
      }
    };
    await Promise.all(Array.from({ length: ROOM_READS_PARALLEL }, worker));
    if (full) state.roomsReadAt = Date.now();
  }

  // ---------- polling ----------

  let polling = false;
  let pollAgain = false;
  let pollTimer = null;
  let pollAt = Infinity;

  // Brings the next poll forward, never back: a stream of change events
  // must not keep pushing it away.
  function pollSoon(delayMs) {
    const at = Date.now() + delayMs;
    if (pollTimer !== null && pollAt <= at) return;
    clearTimeout(pollTimer);
    pollAt = at;
    pollTimer = setTimeout(poll, delayMs);
  }

  async function poll() {
    clearTimeout(pollTimer);
    pollTimer = null;
    pollAt = Infinity;
    if (polling) {
      pollAgain = true;
      return;
    }
    polling = true;
    try {
      const [cluster, nodes] = await Promise.all([api('/v1/cluster'), api('/v1/nodes')]);
      state.cluster = cluster;
      state.nodes = nodes;
      await readIncidents();
      await readRooms();
      showError(null);
      $('updated').textContent = `updated ${new Date().toISOString().slice(11, 19)} UTC`;
      render();
    } catch (error) {
      if (error instanceof AuthError) {
        await askForToken(state.token ? 'That token was refused.' : 'This API needs a token.');
        state.roomsReadAt = 0;
      } else {
        showError(`Cannot read the API: ${error.message}`);
      }
    } finally {
      polling = false;
    }
    pollSoon(pollAgain ? 50 : POLL_MS);
    pollAgain = false;
  }

  function showError(message) {
    const p = $('error');
    p.hidden = message === null;
    p.textContent = message || '';
  }

  // ---------- the change feed ----------

  // EventSource cannot send an Authorization header, so the stream is read
  // with fetch and parsed here (the text/event-stream format).
  async function readEvents(body, dispatch) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = '';
    let data = [];
    let type = '';
    let id = null;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      for (;;) {
        const end = buffer.search(/\r\n|\r|\n/);
        if (end < 0) break;
        // A lone CR at the end may be the first half of a CRLF.
        if (buffer[end] === '\r' && end === buffer.length - 1) break;
        const line = buffer.slice(0, end);
        buffer = buffer.slice(end + (buffer.startsWith('\r\n', end) ? 2 : 1));
        if (line === '') {
          if (data.length > 0) dispatch({ type: type || 'message', data: data.join('\n'), id });
          data = [];
          type = '';
          continue;
        }
        if (line.startsWith(':')) continue; // a comment (keep-alive)
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        let text = colon < 0 ? '' : line.slice(colon + 1);
        if (text.startsWith(' ')) text = text.slice(1);
        if (field === 'data') data.push(text);
        else if (field === 'event') type = text;
        else if (field === 'id' && !text.includes('\0')) id = text;
      }
      if (buffer.length > SSE_LINE_BYTES_MAX) throw new Error('an event line too long');
    }
  }

  function onEvent(event) {
    state.events += 1;
    if (event.id) state.lastEventId = event.id;
    if (event.type === 'reset') {
      state.roomsReadAt = 0;
    } else {
      let change;
      try {
        change = JSON.parse(event.data);
      } catch (_) {
        return;
      }
      if (change && typeof change.room === 'string') state.dirty.add(change.room);
      for (const c of (change && Array.isArray(change.changes) ? change.changes : [])) {
        if (c.kind !== 'owner_changed' || !c.owner || !c.previous || c.previous === c.owner.node) continue;
        const key = `${change.room}/${c.session}`;
        state.feedMoves.delete(key);
        state.feedMoves.set(key, {
          room: change.room,
          session: c.session,
          from: c.previous,
          to: c.owner.node,
          epoch: c.owner.epoch,
          atMs: stampMs(event.id) ?? Date.now(),
          origin: change.origin,
        });
        if (state.feedMoves.size > FEED_MOVES_KEPT) {
          state.feedMoves.delete(state.feedMoves.keys().next().value);
        }
      }
    }
    // A change often comes with grade and journal news: read them now.
    pollSoon(150);
  }

  function setFeed(feedState, text) {
    const badge = $('feed');
    badge.dataset.state = feedState;
    badge.textContent = `feed: ${text}`;
  }

  async function follow() {
    let backoff = BACKOFF_MIN_MS;
    for (;;) {
      const opened = Date.now();
      try {
        const extra = { Accept: 'text/event-stream' };
        if (state.lastEventId) extra['Last-Event-ID'] = state.lastEventId;
        const res = await fetch('/v1/changes', { headers: headers(extra), cache: 'no-store', credentials: 'omit' });
        if (res.status === 401) {
          setFeed('down', 'needs a token');
          await askForToken(state.token ? 'That token was refused.' : 'This API needs a token.');
          continue;
        }
        if (res.status === 400 && state.lastEventId) {
          // An id this daemon does not take (another replica answers at
          // this address now): start over, re-reading every room.
          state.lastEventId = null;
          state.roomsReadAt = 0;
          continue;
        }
        if (!res.ok || !res.body) throw new Error(`status ${res.status}`);
        setFeed('live', 'live');
        await readEvents(res.body, onEvent);
        setFeed('down', 'ended; reconnecting');
      } catch (error) {
        setFeed('down', `lost (${error.message}); reconnecting`);
      }
      if (Date.now() - opened >= FEED_HEALTHY_MS) backoff = BACKOFF_MIN_MS;
      // Jittered, so that many consoles do not come back at once.
      await new Promise((r) => setTimeout(r, backoff * (0.5 + Math.random())));
      backoff = Math.min(backoff * 2, BACKOFF_MAX_MS);
    }
  }

  // ---------- the last failover, from the journal ----------

  // Journal details start with the node they are about: "<node>: ...".
  function subject(detail) {
    const colon = String(detail).indexOf(':');
    return colon < 0 ? String(detail) : String(detail).slice(0, colon);
  }

  const MOVED = /^([A-Za-z0-9._-]+)\/([A-Za-z0-9._-]+): ([A-Za-z0-9._-]+) -> ([A-Za-z0-9._-]+) \(epoch (\d+), (\w+)\)$/;
  const COMPLETE = /^([A-Za-z0-9._-]+): failover complete; (\d+) calls moved here$/;

  function lastFailover() {
    const list = state.incidents;
    let at = -1;
    for (let i = list.length - 1; i >= 0; i--) {
      if (list[i].kind === 'convicted') {
        at = i;
        break;
      }
    }
    if (at < 0) return null;
    const conviction = list[at];
    const node = subject(conviction.detail);
    const convictedMs = stampMs(conviction.at);
    const marks = [{ label: 'convicted', ms: convictedMs, entry: conviction }];
    // Detection: the first suspicion (and the connection lost) since the
    // node was last refuted, convicted or back.
    let suspected = null;
    let lost = null;
    for (let i = at - 1; i >= 0; i--) {
      const e = list[i];
      if (subject(e.detail) !== node) continue;
      if (['refuted', 'convicted', 'graded', 'rejoined'].includes(e.kind)) break;
      if (e.kind === 'suspected') suspected = e;
      if (e.kind === 'peer_down') lost = e;
    }
    if (lost) marks.push({ label: 'connection lost', ms: stampMs(lost.at), entry: lost });
    if (suspected) marks.push({ label: 'suspected', ms: stampMs(suspected.at), entry: suspected });
    const moves = new Map();
    let complete = null;
    for (let i = at + 1; i < list.length; i++) {
      const e = list[i];
      if (e.kind === 'convicted' && subject(e.detail) === node) break;
      if (e.kind === 'rehomed') {
        const m = MOVED.exec(e.detail);
        if (m && m[3] === node) {
          moves.set(`${m[1]}/${m[2]}`, {
            room: m[1], session: m[2], from: m[3], to: m[4], epoch: Number(m[5]),
            atMs: stampMs(e.at), by: 'this replica',
          });
        }
        const c = COMPLETE.exec(e.detail);
        if (c && c[1] === node && !complete) {
          complete = e;
          marks.push({ label: 'failover complete', ms: stampMs(e.at), entry: e });
        }
      }
      if (e.kind === 'rollback' && subject(e.detail) === node) {
        marks.push({ label: 'rollback', ms: stampMs(e.at), entry: e });
      }
    }
    // Calls moved by peers: seen on the feed while this page was open.
    const since = suspected ? stampMs(suspected.at) : convictedMs;
    for (const [key, m] of state.feedMoves) {
      if (m.from !== node || moves.has(key) || (since !== null && m.atMs < since)) continue;
      moves.set(key, Object.assign({}, m, { by: m.origin === 'local' ? 'this replica' : 'a peer (seen on the feed)' }));
    }
    const sorted = [...moves.values()].sort((a, b) => (a.atMs ?? 0) - (b.atMs ?? 0));
    marks.sort((a, b) => (a.ms ?? 0) - (b.ms ?? 0));
    return { node, conviction, suspected, complete, marks, moves: sorted };
  }

  function renderFailover() {
    const f = lastFailover();
    const summary = $('failover-summary');
    const chart = $('failover-chart');
    const list = $('failover-moves');
    if (!f) {
      summary.textContent = "No failover in this replica's journal.";
      chart.replaceChildren();
      list.replaceChildren();
      return;
    }
    const convictedMs = stampMs(f.conviction.at);
    const detectedMs = f.suspected ? stampMs(f.suspected.at) : convictedMs;
    const parts = [`${nodeLabel(f.node)} convicted ${utc(convictedMs)} UTC`];
    if (f.suspected) parts.push(`${span(convictedMs - detectedMs)} after it was suspected`);
    parts.push(`${f.moves.length} call${f.moves.length === 1 ? '' : 's'} moved`);
    if (f.moves.length > 0) {
      const last = f.moves[f.moves.length - 1].atMs;
      parts.push(`the last ${span(Math.max(0, last - convictedMs))} after conviction`);
    }
    parts.push(f.complete ? 'complete' : 'in progress or done by peers');
    summary.textContent = parts.join('; ') + '.';
    summary.dataset.node = f.node;
    const drawn = failoverChart(f);
    chart.replaceChildren(...(drawn ? [drawn] : []));
    list.replaceChildren(
      ...f.moves.map((m) =>
        el('li', { class: 'move', 'data-call': `${m.room}/${m.session}`, 'data-to': m.to },
          el('span', { class: 'mono' }, `${m.room}/${m.session}`),
          ` moved from ${short(m.from)} to `,
          el('span', { class: 'mono', title: m.to }, nodeLabel(m.to)),
          ` (epoch ${m.epoch}) at +${span(Math.max(0, (m.atMs ?? convictedMs) - detectedMs))}, by ${m.by}`),
      ),
    );
  }

  function failoverChart(f) {
    const times = [...f.marks.map((m) => m.ms), ...f.moves.map((m) => m.atMs)].filter((t) => Number.isFinite(t));
    // Nothing to place on an axis: no chart rather than NaN coordinates.
    if (times.length === 0) return null;
    const t0 = Math.min(...times);
    const t1 = Math.max(...times, t0 + 1);
    const charted = f.moves.slice(0, MOVES_CHARTED);
    const left = 230;
    const right = 860;
    const top = 56;
    const row = 16;
    const height = top + charted.length * row + 24;
    const x = (t) => left + ((t - t0) / (t1 - t0)) * (right - left);
    const root = svg('svg', { viewBox: `0 0 900 ${height}`, class: 'timeline', role: 'img', 'aria-label': 'the last failover' });
    root.append(svg('line', { x1: left, y1: top - 8, x2: right, y2: top - 8, class: 'axis' }));
    for (let i = 0; i <= 4; i++) {
      const t = t0 + ((t1 - t0) * i) / 4;
      const anchor = i === 0 ? 'start' : i === 4 ? 'end' : 'middle';
      root.append(svg('text', { x: x(t), y: height - 6, class: 'tick', 'text-anchor': anchor }, `+${span(t - t0)}`));
    }
    f.marks.forEach((m, i) => {
      if (m.ms === null) return;
      root.append(svg('line', { x1: x(m.ms), y1: 14, x2: x(m.ms), y2: height - 20, class: `mark mark-${m.label.replace(/\W+/g, '-')}` }));
      // Labels near the right end run leftwards, so that they stay in view.
      const late = x(m.ms) > right - 120;
      root.append(svg('text', { x: x(m.ms) + (late ? -3 : 3), y: 12 + (i % 3) * 13, class: 'mark-label', 'text-anchor': late ? 'end' : 'start' }, m.label));
    });
    charted.forEach((m, i) => {
      const y = top + i * row + 4;
      root.append(svg('text', { x: left - 8, y: y + 4, class: 'call-label', 'text-anchor': 'end' }, `${m.room}/${m.session} → ${shortNode(m.to)}`));
      if (m.atMs !== null) root.append(svg('circle', { cx: x(m.atMs), cy: y, r: 4, class: m.by === 'this replica' ? 'dot here' : 'dot peer' }));
    });
    if (f.moves.length > charted.length) {
      root.append(svg('text', { x: left - 8, y: height - 6, class: 'tick', 'text-anchor': 'end' }, `+${f.moves.length - charted.length} more below`));
    }
    root.append(svg('circle', { cx: 8, cy: 20, r: 4, class: 'dot here' }));
    root.append(svg('text', { x: 16, y: 24, class: 'tick' }, 'moved by this replica'));
    root.append(svg('circle', { cx: 8, cy: 36, r: 4, class: 'dot peer' }));
    root.append(svg('text', { x: 16, y: 40, class: 'tick' }, 'moved by a peer (seen on the feed)'));
    return root;
  }

  // ---------- rendering ----------

  function liveCalls() {
    const calls = [];
    for (const room of state.rooms.values()) {
      for (const [session, s] of Object.entries(room.sessions || {})) {
        if (s.state === 'left') continue;
        calls.push({ room: room.id, session, s });
      }
    }
    return calls;
  }

  function render() {
    const c = state.cluster;
    const n = state.nodes;
    if (c) {
      $('node-name').textContent = c.name;
      $('node-id').textContent = c.peer_id;
      document.title = `chorus · ${c.name}`;
    }
    if (n) {
      const badge = $('majority');
      badge.textContent = n.majority ? 'sees a majority' : 'no majority: failovers held';
      badge.dataset.ok = String(Boolean(n.majority));
    }
    const calls = liveCalls();
    const byOwner = new Map();
    for (const call of calls) {
      const owner = call.s.owner ? call.s.owner.node : '?';
      if (!byOwner.has(owner)) byOwner.set(owner, []);
      byOwner.get(owner).push(call);
    }
    renderNodes(byOwner);
    renderFailover();
    renderRooms(calls, byOwner);
    renderIncidents();
  }

  function renderNodes(byOwner) {
    const n = state.nodes;
    if (!n) return;
    const peers = new Map(((state.cluster && state.cluster.peers) || []).map((p) => [p.peer_id, p]));
    const drains = new Map((n.drains || []).map((d) => [d.node, d]));
    const rows = [...(n.nodes || [])].sort((a, b) =>
      (b.node === n.this_node) - (a.node === n.this_node) || String(a.node).localeCompare(String(b.node)));
    $('nodes').tBodies[0].replaceChildren(
      ...rows.map((node) => {
        const report = node.report || {};
        const app = report.app || {};
        const peer = peers.get(node.node);
        const link = node.node === n.this_node ? 'self'
          : !peer ? 'not dialled'
            : peer.cut_by_drill ? 'cut by a drill'
              : peer.connected ? 'connected' : 'disconnected';
        const drain = drains.get(node.node);
        return el('tr', { 'data-node': node.node, 'data-grade': node.grade },
          el('td', { class: 'mono' }, nodeLabel(node.node)),
          el('td', {}, el('span', { class: 'grade', 'data-grade': node.grade }, node.grade)),
          el('td', {}, node.reason || ''),
          el('td', {}, report.region || ''),
          el('td', {}, report.capacity ?? ''),
          el('td', {}, app.load_permille === undefined ? '' : `${(app.load_permille / 10).toFixed(0)} %`),
          el('td', {}, node.draining ? `draining${drain ? `, ${drain.rate_per_s}/s` : ''}` : ''),
          el('td', { 'data-link': link }, link),
          el('td', {}, String((byOwner.get(node.node) || []).length)));
      }),
    );
    $('moves').replaceChildren(
      ...(n.moves || []).map((m) =>
        el('p', { class: 'move-progress' },
          `${m.kind} of `, el('span', { class: 'mono' }, nodeLabel(m.node)),
          `: ${m.calls_left} of ${m.calls_at_start} calls left, ${m.rate_per_s} calls/s, started ${span(m.started_ago_ms)} ago`)),
    );
  }

  function renderRooms(calls, byOwner) {
    const ended = state.roomList.filter((r) => r.lifecycle === 'ended').length;
    $('rooms-summary').textContent =
      `${state.roomList.length} room${state.roomList.length === 1 ? '' : 's'} (${ended} ended), ` +
      `${calls.length} live call${calls.length === 1 ? '' : 's'}` +
      (state.roomsTruncated ? `; only the first ${ROOM_DETAILS_MAX} rooms are read` : '') + '.';
    const grades = new Map(((state.nodes && state.nodes.nodes) || []).map((x) => [x.node, x.grade]));
    const owners = [...byOwner.keys()].sort();
    $('rooms').replaceChildren(
      ...owners.map((owner) => {
        const list = byOwner.get(owner).sort((a, b) => `${a.room}/${a.session}`.localeCompare(`${b.room}/${b.session}`));
        const shown = list.slice(0, CALLS_SHOWN_PER_NODE);
        return el('div', { class: 'owner', 'data-owner': owner },
          el('h3', {}, el('span', { class: 'mono' }, nodeLabel(owner)), ' ',
            el('span', { class: 'grade', 'data-grade': grades.get(owner) || 'unknown' }, grades.get(owner) || 'unknown'),
            ` ${list.length} call${list.length === 1 ? '' : 's'}`),
          el('table', { class: 'calls' },
            el('thead', {}, el('tr', {}, ...['room', 'session', 'user', 'role', 'state', 'epoch', 'region', 'tracks'].map((h) => el('th', {}, h)))),
            el('tbody', {}, ...shown.map(({ room, session, s }) =>
              el('tr', { 'data-call': `${room}/${session}` },
                el('td', { class: 'mono' }, room),
                el('td', { class: 'mono' }, session),
                el('td', {}, s.user ?? ''),
                el('td', {}, s.role ?? ''),
                el('td', {}, s.state ?? ''),
                el('td', {}, s.owner ? s.owner.epoch : ''),
                el('td', {}, s.region ?? ''),
                el('td', {}, String(Object.keys(s.tracks || {}).length)))))),
          list.length > shown.length ? el('p', { class: 'muted' }, `and ${list.length - shown.length} more`) : null);
      }),
    );
  }

  function renderIncidents() {
    const newest = state.incidents.slice(-INCIDENTS_SHOWN).reverse();
    $('incidents').replaceChildren(
      ...newest.map((e) =>
        el('li', { 'data-kind': e.kind },
          el('time', { datetime: e.at }, utc(stampMs(e.at))), ' ',
          el('span', { class: 'kind', 'data-kind': e.kind }, e.kind), ' ',
          el('span', { class: 'detail' }, e.detail))),
    );
  }

  // ---------- start ----------

  function start() {
    setupTokenForm();
    takeToken();
    poll();
    follow();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
