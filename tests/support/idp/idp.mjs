// A real OpenID Connect identity provider on loopback, for tests: panva's oidc-provider with a login form.
//
// Environment:
//   IDP_PORT           port to listen on; 0 (the default) picks a free one
//   IDP_CLIENTS        JSON list of client metadata ({client_id, client_secret, redirect_uris, ...}),
//   IDP_CLIENTS_FILE   or a file holding it
//   IDP_USERS          JSON {login: {password, claims: {...}, refuse: "why"}},
//   IDP_USERS_FILE     or a file holding it, read again at every use so a test can change
//                      a person's groups between two logins
// Prints "IDP_READY <issuer>" on stdout once it answers.

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';

import Provider from 'oidc-provider';

const HOST = '127.0.0.1';

function jsonFromEnv(name) {
  const file = process.env[`${name}_FILE`];
  const text = file ? readFileSync(file, 'utf8') : process.env[name];
  if (!text) throw new Error(`set ${name} or ${name}_FILE`);
  return JSON.parse(text);
}

// Users are looked up by login name or by subject: the login form gives the first, tokens the second.
function findUser(key) {
  const users = jsonFromEnv('IDP_USERS');
  for (const [login, user] of Object.entries(users)) {
    const sub = user.claims?.sub ?? login;
    if (login === key || sub === key) return { login, sub, ...user };
  }
  return undefined;
}

function html(title, body) {
  const escape = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
  return {
    escape,
    page: `<!doctype html><html><head><meta charset="utf-8"><title>${escape(title)}</title></head>`
      + `<body><h1>${escape(title)}</h1>${body}</body></html>`,
  };
}

function loginPage(uid, message = '') {
  const { escape, page } = html('Test IdP sign-in', '');
  const note = message ? `<p class="error">${escape(message)}</p>` : '';
  return page.replace('</body>', `${note}<form method="post" action="/interaction/${escape(uid)}">`
    + '<label>Username <input name="username" autofocus></label>'
    + '<label>Password <input name="password" type="password"></label>'
    + '<button type="submit">Sign in</button></form></body>');
}

async function readForm(req) {
  let body = '';
  for await (const chunk of req) body += chunk;
  return new URLSearchParams(body);
}

function send(res, status, body) {
  res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
  res.end(body);
}

async function interaction(provider, req, res, uid) {
  // interactionDetails also checks the interaction cookie, so a stale or foreign uid fails here.
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) return send(res, 400, 'interaction mismatch');
  if (req.method === 'GET') return send(res, 200, loginPage(uid));
  if (req.method !== 'POST') return send(res, 405, 'method not allowed');

  const form = await readForm(req);
  const user = findUser(form.get('username') ?? '');
  if (!user || user.password !== form.get('password')) {
    return send(res, 401, loginPage(uid, 'Invalid credentials'));
  }
  if (user.refuse) {
    // What an IdP does when the person exists but may not use this application.
    return provider.interactionFinished(req, res, {
      error: 'access_denied', error_description: user.refuse,
    }, { mergeWithLastSubmission: false });
  }
  const { params } = details;
  const grant = new provider.Grant({ accountId: user.sub, clientId: params.client_id });
  grant.addOIDCScope(params.scope);
  const grantId = await grant.save();
  // Login and consent in one step, as a company IdP does for a first-party application.
  return provider.interactionFinished(req, res, {
    login: { accountId: user.sub }, consent: { grantId },
  }, { mergeWithLastSubmission: false });
}

function configuration() {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = { ...privateKey.export({ format: 'jwk' }), kid: randomBytes(8).toString('hex'), alg: 'RS256', use: 'sig' };
  const clients = jsonFromEnv('IDP_CLIENTS').map((client) => ({
    // oidc-provider holds a client to one token endpoint authentication method; allauth picks post.
    token_endpoint_auth_method: 'client_secret_post',
    ...client,
  }));
  return {
    clients,
    jwks: { keys: [jwk] },
    cookies: { keys: [randomBytes(32).toString('hex')] },
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      // oid and upn are Entra's; a test can give a person them to play an Entra tenant.
      profile: ['name', 'given_name', 'family_name', 'preferred_username', 'oid', 'upn'],
      groups: ['groups'],
    },
    // Put the scope claims in the ID token too, as Okta and Entra do.
    conformIdTokenClaims: false,
    pkce: { required: () => true },
    features: {
      devInteractions: { enabled: false },
      // Logout tokens to the clients' backchannel_logout_uri (a catcher on loopback in the tests).
      backchannelLogout: { enabled: true },
      rpInitiatedLogout: {
        enabled: true,
        logoutSource: async (ctx, form) => {
          ctx.body = html('Sign out of the test IdP?', `${form}<button type="submit" form="op.logoutForm" `
            + 'name="logout" value="yes">Yes, sign me out</button>').page;
        },
        postLogoutSuccessSource: async (ctx) => {
          ctx.body = html('Signed out of the test IdP', '').page;
        },
      },
    },
    interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
    // Refresh tokens to every client allowed the grant (Okta and Entra give them with offline_access;
    // oidc-provider's default also wants prompt=consent), for the console's periodic check.
    issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
    // Test only: oidc-provider's SSRF guard refuses loopback addresses, where the tests' receiver listens.
    // A real IdP posts to the console's public address and keeps the guard.
    fetch: (url, { dispatcher, ...options }) => globalThis.fetch(url, options),
    findAccount: async (ctx, sub) => {
      const user = findUser(sub);
      if (!user) return undefined;
      return { accountId: user.sub, claims: async () => ({ ...user.claims, sub: user.sub }) };
    },
    renderError: async (ctx, out) => {
      ctx.type = 'html';
      const { escape, page } = html('Test IdP error', '');
      ctx.body = page.replace('</body>', `<pre>${escape(JSON.stringify(out))}</pre></body>`);
    },
  };
}

let provider;
let oidcRoutes;
const server = createServer((req, res) => {
  const match = /^\/interaction\/([^/?]+)/.exec(req.url);
  if (!match) return oidcRoutes(req, res);
  return interaction(provider, req, res, match[1]).catch((err) => {
    const { escape, page } = html('Test IdP error', '');
    send(res, err.statusCode || 500, page.replace('</body>', `<pre>${escape(err.message)}</pre></body>`));
  });
});

server.listen(Number(process.env.IDP_PORT || 0), HOST, () => {
  // The issuer holds the port, so the provider is made once the port is known.
  const issuer = `http://${HOST}:${server.address().port}`;
  provider = new Provider(issuer, configuration());
  oidcRoutes = provider.callback();
  process.stdout.write(`IDP_READY ${issuer}\n`);
});

for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => server.close(() => process.exit(0)));
