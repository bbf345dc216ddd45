// A web app as LiveKit's docs write one: TokenSource.endpoint(url).fetch(...), then join.
// The tests drive it with page.evaluate and read window.state.
'use strict';
window.state = { error: null, agents: {}, room: null };

function render() {
  document.getElementById('error').textContent = window.state.error || '';
  document.getElementById('agents').textContent = JSON.stringify(window.state.agents);
}

window.joinRoom = async ({ endpoint, metadata, attributes }) => {
  const lk = window.LivekitClient;
  try {
    const details = await lk.TokenSource.endpoint(endpoint).fetch({
      participantMetadata: metadata,
      participantAttributes: attributes || {},
    });
    const room = new lk.Room();
    window.room = room;
    const update = () => {
      for (const p of room.remoteParticipants.values()) {
        if (p.isAgent) window.state.agents[p.identity] = { ...p.attributes };
      }
      render();
    };
    room.on(lk.RoomEvent.ParticipantConnected, update);
    room.on(lk.RoomEvent.ParticipantAttributesChanged, update);
    await room.connect(details.serverUrl, details.participantToken);
    window.state.room = room.name;
    update();
    return { ok: true, room: room.name, identity: room.localParticipant.identity };
  } catch (e) {
    window.state.error = String(e && e.message ? e.message : e);
    render();
    return { ok: false, error: window.state.error };
  }
};

window.agentRoute = () => {
  for (const attrs of Object.values(window.state.agents)) if (attrs.route) return attrs.route;
  return null;
};

window.updateMetadata = async (metadata) => window.room.localParticipant.setMetadata(metadata);

window.leave = async () => { if (window.room) await window.room.disconnect(); };
