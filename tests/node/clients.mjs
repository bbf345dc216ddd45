// LiveKit's official Node SDKs as independent clients of livekit-plugins-metadata.
//
//   node clients.mjs <verify|mint|endpoint>   (input: one JSON object on stdin)
//
// Prints one JSON object on stdout. Secrets come in on stdin, never on the command
// line. Used by tests/test_e2e_node.py; every address it touches is given by the test
// (127.0.0.1 only).
//
//   verify   {apiKey, apiSecret, token}
//            -> livekit-server-sdk TokenVerifier.verify(token): the claims as JSON
//               (roomConfig as its proto JSON)
//   mint     {apiKey, apiSecret, identity, room, name?, metadata?, attributes?,
//             agentName?, agentMetadata?, canUpdateOwnMetadata?}
//            -> {token} from livekit-server-sdk AccessToken
//   endpoint {url, options}
//            -> livekit-client TokenSource.endpoint(url).fetch(options):
//               {serverUrl, participantToken, payload} (payload decoded by livekit-client)
import { AccessToken, RoomAgentDispatch, RoomConfiguration, TokenVerifier } from 'livekit-server-sdk';
import { TokenSource, decodeTokenPayload } from 'livekit-client';

async function readStdin() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  return JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}');
}

function toJson(value) {
  return JSON.parse(
    JSON.stringify(value, (_key, v) => {
      if (typeof v === 'bigint') return v.toString();
      if (v && typeof v.toJson === 'function') return v.toJson();
      return v;
    }),
  );
}

const commands = {
  async verify({ apiKey, apiSecret, token }) {
    const verifier = new TokenVerifier(apiKey, apiSecret);
    const claims = await verifier.verify(token);
    return toJson(claims);
  },

  async mint(input) {
    const at = new AccessToken(input.apiKey, input.apiSecret, {
      identity: input.identity,
      name: input.name,
      metadata: input.metadata,
      attributes: input.attributes,
      ttl: '10m',
    });
    at.addGrant({
      roomJoin: true,
      room: input.room,
      canUpdateOwnMetadata: Boolean(input.canUpdateOwnMetadata),
    });
    if (input.agentName) {
      at.roomConfig = new RoomConfiguration({
        agents: [
          new RoomAgentDispatch({ agentName: input.agentName, metadata: input.agentMetadata ?? '' }),
        ],
      });
    }
    return { token: await at.toJwt() };
  },

  async endpoint({ url, options }) {
    const source = TokenSource.endpoint(url, { headers: options.headers ?? {} });
    const { headers: _ignored, ...fetchOptions } = options;
    const response = await source.fetch(fetchOptions);
    return {
      serverUrl: response.serverUrl,
      participantToken: response.participantToken,
      payload: toJson(decodeTokenPayload(response.participantToken)),
    };
  },
};

const command = commands[process.argv[2]];
if (!command) {
  process.stderr.write(`usage: node clients.mjs <${Object.keys(commands).join('|')}>\n`);
  process.exit(2);
}
try {
  const out = await command(await readStdin());
  process.stdout.write(JSON.stringify(out) + '\n');
} catch (err) {
  // Name the failure without echoing tokens or secrets.
  process.stderr.write(`${process.argv[2]} failed: ${err?.name ?? 'Error'}: ${err?.code ?? ''} ${
    String(err?.message ?? err).slice(0, 300)
  }\n`);
  process.exit(1);
}
