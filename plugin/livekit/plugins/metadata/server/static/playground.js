// Routing playground (served by lk-metadata serve): route and explain through the
// endpoint's /explain, then mint a token from the endpoint and join with LiveKit's web SDK.
// Everything from the network is shown with textContent, never as HTML.
(() => {
  'use strict';
  const $ = (id) => document.getElementById(id);
  const meta = (name) => document.querySelector(`meta[name="${name}"]`).content;
  const tokenPath = meta('lk-token-path');
  const sdkUrl = meta('lk-sdk-url');
  let room = null;
  let timer = 0;

  function el(tag, text, cls) {
    const node = document.createElement(tag);
    if (text !== undefined) node.textContent = text;
    if (cls) node.className = cls;
    return node;
  }

  function showError(message) {
    const box = $('error');
    box.textContent = message || '';
    box.hidden = !message;
  }

  function readObject(id, what) {
    const text = $(id).value.trim();
    if (!text) return {};
    let value;
    try { value = JSON.parse(text); } catch (e) { throw new Error(`${what} is not valid JSON`); }
    if (value === null || typeof value !== 'object' || Array.isArray(value)) {
      throw new Error(`${what} must be a JSON object`);
    }
    return value;
  }

  function caller() {
    const metadata = readObject('metadata', 'metadata');
    const attributes = readObject('attributes', 'attributes');
    const numbers = [['caller-number', 'sip.phoneNumber'], ['dialed-number', 'sip.trunkPhoneNumber']];
    for (const [id, key] of numbers) {
      const value = $(id).value.trim();
      if (value) attributes[key] = value;
    }
    return { metadata, attributes };
  }

  function headers(keyId) {
    const out = { 'Content-Type': 'application/json' };
    const key = $(keyId).value.trim();
    if (key) out.Authorization = `Bearer ${key}`;
    return out;
  }

  async function postJson(path, body, keyId) {
    const res = await fetch(path, { method: 'POST', headers: headers(keyId), body: JSON.stringify(body) });
    const data = await res.json().catch(() => null);
    if (!res.ok) {
      const err = data && data.error;
      throw new Error(err ? `HTTP ${res.status} ${err.code}: ${err.message}` : `HTTP ${res.status}`);
    }
    return data;
  }

  function dl(pairs) {
    const list = el('dl');
    for (const [k, v] of pairs) {
      if (v === null || v === undefined || v === '') continue;
      list.append(el('dt', k), el('dd', String(v)));
    }
    return list;
  }

  function renderRoute(route) {
    const box = $('route');
    box.replaceChildren();
    if (!route) {
      box.dataset.agent = '';
      box.append(el('p', 'No rule matched and the rules have no default.', 'rejected'));
      return;
    }
    box.dataset.agent = route.rejected ? 'reject' : route.agent;
    box.dataset.rule = route.rule;
    box.append(route.rejected ? el('div', 'rejected', 'agent-name rejected') : el('div', route.agent, 'agent-name'));
    const attrs = Object.entries(route.attributes).map(([k, v]) => `${k}=${v}`).join(', ');
    box.append(dl([
      ['rule', route.rule],
      ['agent_name', route.agent_name !== route.agent ? route.agent_name : ''],
      ['deployment', route.deployment],
      ['attributes', attrs],
      ['job metadata keys', route.job_metadata_keys.join(', ') || '(none)'],
    ]));
  }

  function renderTrace(trace) {
    const body = $('trace').tBodies[0];
    body.replaceChildren();
    for (const t of trace) {
      const row = el('tr', undefined, t.selected ? 'selected' : (t.matched ? 'shadowed' : 'no'));
      let verdict = t.selected ? 'SELECTED' : (t.index === null ? 'not used' : 'matches (shadowed)');
      if (!t.matched) verdict = `no: ${t.failed}`;
      row.append(el('td', t.label), el('td', t.target), el('td', verdict, 'verdict'));
      body.append(row);
    }
  }

  async function route() {
    let body;
    try { body = caller(); } catch (e) { showError(e.message); return; }
    try {
      const answer = await postJson('explain', body, 'operator-key');
      showError('');
      renderRoute(answer.route);
      renderTrace(answer.trace);
      document.body.dataset.routed = String(Number(document.body.dataset.routed || 0) + 1);
    } catch (e) {
      showError(e.message);
    }
  }

  function loadSdk() {
    if (window.LivekitClient) return Promise.resolve(window.LivekitClient);
    if (!sdkUrl) {
      return Promise.reject(new Error(
        'joining needs LiveKit\'s web SDK: set playground_sdk_url to a livekit-client.umd.js URL'));
    }
    return new Promise((resolve, reject) => {
      const script = el('script');
      script.src = sdkUrl;
      script.onload = () => resolve(window.LivekitClient);
      script.onerror = () => reject(new Error(`could not load LiveKit's web SDK from ${sdkUrl}`));
      document.head.append(script);
    });
  }

  function renderAgents() {
    const box = $('agents');
    box.replaceChildren();
    if (!room) return;
    for (const p of room.remoteParticipants.values()) {
      if (!p.isAgent) continue;
      const card = el('div', undefined, 'agent');
      card.dataset.identity = p.identity;
      card.dataset.route = p.attributes.route || '';
      card.append(el('strong', p.identity));
      const tracks = [...p.trackPublications.values()].map((t) => `${t.kind}:${t.source}`).join(', ');
      card.append(dl([...Object.entries(p.attributes).sort(), ['tracks', tracks || '(none)']]));
      box.append(card);
    }
  }

  function note(text) {
    const list = $('messages');
    list.append(el('li', text));
    while (list.children.length > 50) list.firstChild.remove();
  }

  async function join() {
    showError('');
    let body;
    try { body = caller(); } catch (e) { showError(e.message); return; }
    try {
      const lk = await loadSdk();
      const source = lk.TokenSource.endpoint(tokenPath, { headers: headers('token-key') });
      const details = await source.fetch({
        participantMetadata: JSON.stringify(body.metadata),
        participantAttributes: body.attributes,
      });
      room = new lk.Room();
      const E = lk.RoomEvent;
      for (const ev of [E.ParticipantConnected, E.ParticipantDisconnected,
        E.ParticipantAttributesChanged, E.TrackPublished, E.TrackUnpublished]) {
        room.on(ev, renderAgents);
      }
      room.on(E.TrackSubscribed, (track) => {
        if (track.kind === 'audio') document.body.append(track.attach());
      });
      room.on(E.DataReceived, (payload, who, kind, topic) => {
        note(`${who ? who.identity : 'server'} data ${topic || ''} (${payload.byteLength} bytes)`);
      });
      for (const topic of ['lk.transcription', 'lk.chat']) {
        room.registerTextStreamHandler(topic, async (reader, who) => {
          note(`${who.identity} ${topic}: ${await reader.readAll()}`);
        });
      }
      room.on(E.Disconnected, () => { $('room-status').textContent = 'Left the room.'; setJoined(false); });
      await room.connect(details.serverUrl, details.participantToken);
      $('room-status').textContent = `In room ${room.name} as ${room.localParticipant.identity}`;
      setJoined(true);
      renderAgents();
    } catch (e) {
      showError(e.message);
    }
  }

  function setJoined(joined) {
    $('join-btn').disabled = joined;
    $('update-btn').disabled = !joined;
    $('leave-btn').disabled = !joined;
    if (!joined) room = null;
  }

  async function update() {
    try {
      const { metadata } = caller();
      await room.localParticipant.setMetadata(JSON.stringify(metadata));
      note('metadata sent (the token needs canUpdateOwnMetadata)');
    } catch (e) {
      showError(e.message);
    }
  }

  function schedule() {
    clearTimeout(timer);
    timer = setTimeout(route, 300);
  }

  $('route-btn').addEventListener('click', route);
  $('join-btn').addEventListener('click', join);
  $('update-btn').addEventListener('click', update);
  $('leave-btn').addEventListener('click', () => room && room.disconnect());
  for (const id of ['metadata', 'attributes', 'caller-number', 'dialed-number']) {
    $(id).addEventListener('input', schedule);
  }
  if (!sdkUrl) $('join-btn').title = 'set playground_sdk_url to join from this page';
  route();
})();
