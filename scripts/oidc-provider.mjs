// An OpenID provider for the tests of atrest-serve's OpenID Connect
// sign-in: the npm package `oidc-provider`, issuing JWT access tokens to
// clients that authenticate with the client-credentials grant, as a
// service principal of an identity system would.
//
//   node scripts/oidc-provider.mjs NODE_MODULES PORT ROGUE_PORT
//
// (NODE_MODULES: where `npm install oidc-provider` put the package.)
//
// Serves two issuers, each on 127.0.0.1:
// - http://127.0.0.1:PORT, the provider the service trusts;
// - http://127.0.0.1:ROGUE_PORT, another issuer signing with the *same*
//   keys (what a token from a wrong issuer looks like when only the
//   issuer claim tells it).
// Clients register themselves (dynamic registration, open: loopback test
// use only) with extra metadata the tokens carry or follow:
// `tenant_id` (copied into the token's `tenant_id` claim),
// `access_token_ttl` (seconds) and `access_token_alg` (the JWS algorithm).
// Any resource indicator is accepted and becomes the token's audience, so
// a test can ask for a token meant for another service.
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const [modules, ...ports] = process.argv.slice(2);
const [port, roguePort] = ports.map(Number);
if (!modules || !port || !roguePort) {
  console.error('usage: node scripts/oidc-provider.mjs NODE_MODULES PORT ROGUE_PORT');
  process.exit(2);
}
const { default: Provider } = await import(
  pathToFileURL(join(modules, 'oidc-provider', 'lib', 'index.js')).href
);

// Fresh signing keys for this run: one of each common kind.
function jwk(type, options, alg, kid) {
  const { privateKey } = generateKeyPairSync(type, options);
  return { ...privateKey.export({ format: 'jwk' }), alg, kid, use: 'sig' };
}
const jwks = {
  keys: [
    jwk('ec', { namedCurve: 'P-256' }, 'ES256', 'es256-1'),
    jwk('rsa', { modulusLength: 2048 }, 'RS256', 'rs256-1'),
    jwk('rsa', { modulusLength: 2048 }, 'PS256', 'ps256-1'),
    jwk('ed25519', {}, 'EdDSA', 'eddsa-1'),
  ],
};

function configuration() {
  return {
    jwks,
    clients: [],
    cookies: { keys: [randomBytes(32).toString('base64url')] },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      registration: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => undefined,
        useGrantedResource: () => true,
        getResourceServerInfo: (_ctx, resource, client) => ({
          scope: 'files',
          audience: resource,
          accessTokenFormat: 'jwt',
          accessTokenTTL: client.access_token_ttl ?? 300,
          jwt: { sign: { alg: client.access_token_alg ?? 'ES256' } },
        }),
      },
    },
    extraClientMetadata: {
      properties: ['tenant_id', 'access_token_ttl', 'access_token_alg'],
    },
    extraTokenClaims: (_ctx, token) => {
      const tenant = token.client?.tenant_id;
      return tenant === undefined ? undefined : { tenant_id: tenant };
    },
    // The issued tokens only: nothing to remember between runs.
    ttl: { ClientCredentials: (_ctx, _token, client) => client.access_token_ttl ?? 300 },
  };
}

for (const listen of [port, roguePort]) {
  const provider = new Provider(`http://127.0.0.1:${listen}`, configuration());
  provider.listen(listen, '127.0.0.1');
}
console.log(`oidc-provider: issuers http://127.0.0.1:${port} and http://127.0.0.1:${roguePort}`);
