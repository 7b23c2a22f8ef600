// The local stack's OpenID Connect provider: panva's certified `oidc-provider` (npm) with the sample users of
// users.json, a login form with an optional second factor, and two confidential clients, the hub
// (cleanroom-hub) and the officers' audit page (cleanroom-audit). Started by hack/oidc-up.sh; for tests,
// tests/integration/oidc_provider_process.py starts one of its own.
//
// Environment:
//   OIDC_PROVIDER_MODULE  the installed package directory (…/node_modules/oidc-provider)
//   OIDC_ISSUER           the issuer URL, as browsers and the hub reach it (http://HOST:PORT)
//   OIDC_LISTEN_HOST      the address to listen on (default: the issuer's host)
//   OIDC_STATE_DIR        signing keys, cookie keys and client secrets, kept across restarts (created 0700)
//   OIDC_HUB_URL          the hub's public URL (default http://127.0.0.1:8000)
//   OIDC_AUDIT_URL        the audit page's URL (default https://127.0.0.1:8095)
//   OIDC_CLAIMS_IN_USERINFO_ONLY  `true`: the ID token carries only sub, acr and amr, the rest comes from the
//                         userinfo endpoint (as some providers, LS Login among them, do)
//
// What a real provider does and this one does on purpose too: PKCE (S256) is required of every client, the
// ID token carries acr and amr (https://refeds.org/profile/mfa and [pwd, otp] when the one-time code was
// given, .../sfa and [pwd] otherwise), groups come in the `groups` claim (scope `groups`), end_session is
// offered. What it relaxes for a laptop: http, sample passwords, and redirect URIs on this machine's
// addresses are accepted on any port (tests run hubs on free ports), as RFC 8252 allows native clients.
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const env = (name, fallback) => process.env[name] || fallback;
const moduleDir = env('OIDC_PROVIDER_MODULE');
const issuer = env('OIDC_ISSUER');
const stateDir = env('OIDC_STATE_DIR');
if (!moduleDir || !issuer || !stateDir) {
  console.error('set OIDC_PROVIDER_MODULE, OIDC_ISSUER and OIDC_STATE_DIR (see the header of this file)');
  process.exit(2);
}
const issuerUrl = new URL(issuer);
const listenHost = env('OIDC_LISTEN_HOST', issuerUrl.hostname);
const port = Number(issuerUrl.port || 80);
const hubUrl = env('OIDC_HUB_URL', 'http://127.0.0.1:8000').replace(/\/$/, '');
const auditUrl = env('OIDC_AUDIT_URL', 'https://127.0.0.1:8095').replace(/\/$/, '');

const { default: Provider } = await import(pathToFileURL(path.join(moduleDir, 'lib', 'index.js')).href);
const users = JSON.parse(fs.readFileSync(path.join(here, 'users.json'), 'utf8'));
delete users._comment;

// --- state kept across restarts: a provider that changed its keys on every start would sign out everyone --
fs.mkdirSync(stateDir, { recursive: true, mode: 0o700 });
function kept(name, make) {
  const file = path.join(stateDir, name);
  if (!fs.existsSync(file)) fs.writeFileSync(file, JSON.stringify(make(), null, 2) + '\n', { mode: 0o600 });
  return JSON.parse(fs.readFileSync(file, 'utf8'));
}
const random = () => crypto.randomBytes(24).toString('base64url');
const jwks = kept('signing-keys.json', () => {
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { keys: [{ ...privateKey.export({ format: 'jwk' }), kid: `sample-${random().slice(0, 8)}`, use: 'sig', alg: 'RS256' }] };
});
const cookieKeys = kept('cookie-keys.json', () => [random(), random()]);
const secrets = kept('clients.json', () => ({ 'cleanroom-hub': random(), 'cleanroom-audit': random() }));

const MFA = 'https://refeds.org/profile/mfa';
const SFA = 'https://refeds.org/profile/sfa';

const configuration = {
  clients: [
    {
      client_id: 'cleanroom-hub',
      client_secret: secrets['cleanroom-hub'],
      client_name: 'cleanroom hub',
      redirect_uris: [`${hubUrl}/hub/oauth_callback`],
      post_logout_redirect_uris: [`${hubUrl}/hub/login`],
      token_endpoint_auth_method: 'client_secret_basic',
    },
    {
      client_id: 'cleanroom-audit',
      client_secret: secrets['cleanroom-audit'],
      client_name: 'cleanroom audit trail',
      redirect_uris: [`${auditUrl}/oidc/callback`],
      post_logout_redirect_uris: [`${auditUrl}/login`],
      token_endpoint_auth_method: 'client_secret_basic',
    },
  ],
  jwks,
  cookies: { keys: cookieKeys },
  scopes: ['openid', 'email', 'profile', 'groups'],
  claims: {
    // acr and amr belong to no scope: listed under openid, every ID token carries how the user signed in.
    openid: ['sub', 'acr', 'amr', 'auth_time'],
    email: ['email', 'email_verified'],
    profile: ['name', 'preferred_username'],
    groups: ['groups'],
  },
  // The claims of the granted scopes go into the ID token itself (as Keycloak and Entra ID put them), unless
  // asked to keep them for the userinfo endpoint.
  conformIdTokenClaims: env('OIDC_CLAIMS_IN_USERINFO_ONLY', '') === 'true',
  acrValues: [SFA, MFA],
  pkce: { methods: ['S256'], required: () => true },
  features: {
    devInteractions: { enabled: false },
    rpInitiatedLogout: { enabled: true },
  },
  ttl: {
    AccessToken: 3600,
    AuthorizationCode: 60,
    IdToken: 3600,
    Interaction: 600,
    Session: 8 * 3600,
    Grant: 8 * 3600,
  },
  interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
  async findAccount(_ctx, sub) {
    const user = users[sub];
    if (!user) return undefined;
    return {
      accountId: sub,
      async claims() {
        return {
          sub,
          email: user.email,
          email_verified: user.email_verified,
          name: user.name,
          preferred_username: sub,
          groups: user.groups,
        };
      },
    };
  },
  // First-party clients: the user is not asked to consent, as a hospital's provider does for its own apps.
  async loadExistingGrant(ctx) {
    const grantId = ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) return ctx.oidc.provider.Grant.find(grantId);
    const grant = new ctx.oidc.provider.Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
    grant.addOIDCScope('openid email profile groups');
    await grant.save();
    return grant;
  },
};

const provider = new Provider(issuer, configuration);
provider.proxy = false;

// Hubs and audit services under test listen on free ports of this machine.
const thisMachine = new Set(['127.0.0.1', 'localhost', '[::1]', issuerUrl.hostname]);
function onThisMachine(value, registered) {
  if (registered.includes(value)) return true;
  let url;
  try { url = new URL(value); } catch { return false; }
  return thisMachine.has(url.hostname) && registered.some((r) => {
    const allowed = new URL(r);
    return allowed.protocol === url.protocol && allowed.pathname === url.pathname && !url.search && !url.hash;
  });
}
provider.Client.prototype.redirectUriAllowed = function redirectUriAllowed(value) {
  return onThisMachine(value, this.redirectUris);
};
provider.Client.prototype.postLogoutRedirectUriAllowed = function postLogoutRedirectUriAllowed(value) {
  return onThisMachine(value, this.postLogoutRedirectUris || []);
};

// --- the login form ---------------------------------------------------------------------------------------
const escape = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
function page(uid, clientName, error = '', username = '') {
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Sign in - sample identity provider</title>
<style>body{font-family:sans-serif;max-width:28em;margin:3em auto}label{display:block;margin-top:1em}input{width:100%;padding:.4em}
button{margin-top:1.5em;padding:.5em 1.5em}.error{color:#a00}.hint{color:#555;font-size:90%}</style></head>
<body><h1>Sample identity provider</h1><p>Sign in to <b>${escape(clientName)}</b>.</p>
${error ? `<p class="error" id="login-error">${escape(error)}</p>` : ''}
<form method="post" action="/interaction/${escape(uid)}/login" autocomplete="off">
<label for="username">User name</label><input id="username" name="username" value="${escape(username)}" required autofocus>
<label for="password">Password</label><input id="password" name="password" type="password" required>
<label for="otp">One-time code (second factor)</label><input id="otp" name="otp" inputmode="numeric">
<p class="hint">Sample users: alice, sam, eve, mallory (password = user name, code 123456). Without the code
the sign-in has one factor only.</p>
<button type="submit" id="sign-in">Sign in</button></form></body></html>`;
}

async function form(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

provider.use(async (ctx, next) => {
  const match = ctx.path.match(/^\/interaction\/([\w-]+)(\/login)?$/);
  if (!match) return next();
  ctx.set('Cache-Control', 'no-store');
  const details = await provider.interactionDetails(ctx.req, ctx.res);
  const client = await provider.Client.find(details.params.client_id);
  const clientName = client?.clientName || details.params.client_id;
  if (ctx.method === 'GET' && !match[2]) {
    ctx.type = 'html';
    ctx.body = page(details.uid, clientName);
    return undefined;
  }
  if (ctx.method !== 'POST' || !match[2]) return next();
  const body = await form(ctx.req);
  const username = (body.get('username') || '').trim();
  const user = users[username];
  const password = Buffer.from(body.get('password') || '');
  const ok = user && password.length === Buffer.byteLength(user.password)
    && crypto.timingSafeEqual(password, Buffer.from(user.password));
  if (!ok) {
    ctx.status = 401;
    ctx.type = 'html';
    ctx.body = page(details.uid, clientName, 'Unknown user name or wrong password.', username);
    return undefined;
  }
  const otp = (body.get('otp') || '').trim();
  if (otp && otp !== user.otp) {
    ctx.status = 401;
    ctx.type = 'html';
    ctx.body = page(details.uid, clientName, 'Wrong one-time code.', username);
    return undefined;
  }
  const login = otp
    ? { accountId: username, acr: MFA, amr: ['pwd', 'otp'] }
    : { accountId: username, acr: SFA, amr: ['pwd'] };
  await provider.interactionFinished(ctx.req, ctx.res, { login }, { mergeWithLastSubmission: false });
  return undefined;
});

const server = http.createServer(provider.callback());
server.listen(port, listenHost, () => console.log(`oidc-provider ${issuer} listening on ${listenHost}:${port}`));
for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => server.close(() => process.exit(0)));
