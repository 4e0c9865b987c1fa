// The development OpenID provider of `make run` and of the tests: panva's oidc-provider (a certified OpenID
// Provider implementation, from the npm registry), configured for the console's demo accounts. Nothing here
// implements a protocol endpoint: discovery, authorization (code + PKCE), token, userinfo, JWKS and
// RP-initiated logout are the library's. This file only says who the accounts are and draws the login page.
//
// Started by services/devstack/oidc.py, which copies it next to its node_modules (build/console) and passes
// the path of a JSON configuration: {issuer, port, clients: [...], accounts: {id: {password, claims}}}.
// Prints "listening <port>" on stdout once it accepts connections.

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';

import Provider from 'oidc-provider';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const accounts = config.accounts;

// Keys made at each start: a development provider keeps nothing, and relying parties read the JWKS anew.
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: randomBytes(8).toString('hex'), use: 'sig', alg: 'RS256' };

const CLAIMS = ['parcours_roles', 'parcours_region', 'parcours_territory'];

const provider = new Provider(config.issuer, {
  clients: config.clients,
  jwks: { keys: [signingKey] },
  cookies: { keys: [randomBytes(32).toString('hex')] },
  async findAccount(ctx, id) {
    const account = accounts[id];
    if (!account) return undefined;
    return { accountId: id, async claims() { return { sub: id, ...account.claims }; } };
  },
  claims: {
    openid: ['sub'],
    profile: ['name', 'given_name', 'family_name', 'preferred_username'],
    email: ['email'],
    parcours: CLAIMS,
  },
  // The requested claims go into the ID token too: the console reads its officer from it.
  conformIdTokenClaims: false,
  pkce: { required: () => true },
  features: {
    devInteractions: { enabled: false },
    rpInitiatedLogout: { enabled: true, logoutSource },
  },
  // A first-party client: no consent screen, the grant covers what it asks for.
  async loadExistingGrant(ctx) {
    const grantId = ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) {
      const existing = await ctx.oidc.provider.Grant.find(grantId);
      if (existing) return existing;
    }
    const grant = new ctx.oidc.provider.Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
    grant.addOIDCScope('openid profile email parcours');
    grant.addOIDCClaims(['sub', 'name', 'given_name', 'family_name', 'preferred_username', 'email', ...CLAIMS]);
    await grant.save();
    return grant;
  },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  ttl: { AccessToken: 600, IdToken: 600, Interaction: 600, Session: 8 * 3600, Grant: 8 * 3600 },
  renderError(ctx, out) {
    ctx.type = 'html';
    ctx.body = page('Erreur', `<h1>Connexion impossible</h1><p>${escape(out.error)} : ${escape(out.error_description || '')}</p>`);
  },
});

function escape(text) {
  return String(text).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);
}

function page(title, body) {
  return `<!doctype html><html lang="fr"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escape(title)} — fournisseur d'identité de développement</title>
<style>body{font-family:sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem;color:#161616}label{display:block;margin-top:1rem;font-weight:bold}
input,select{display:block;width:100%;padding:.5rem;margin-top:.25rem;font-size:1rem;border:1px solid #3a3a3a}button{margin-top:1.5rem;padding:.6rem 1.2rem;font-size:1rem;background:#000091;color:#fff;border:0}
.erreur{color:#ce0500;font-weight:bold}</style></head><body><main>${body}</main></body></html>`;
}

function logoutSource(ctx, form) {
  ctx.body = page('Déconnexion', `<h1>Se déconnecter du fournisseur d'identité ?</h1>${form}
<button autofocus type="submit" form="op.logoutForm" value="yes" name="logout">Oui, me déconnecter</button>
<button type="submit" form="op.logoutForm">Non</button>`);
}

function loginPage(uid, error) {
  const options = Object.entries(accounts)
    .map(([id, a]) => `<option value="${escape(id)}">${escape(a.claims.name)} — ${escape(a.label)}</option>`)
    .join('');
  return page('Connexion', `<h1>Connexion des agents (développement)</h1>
<p>Comptes de démonstration ; le mot de passe de chacun est <code>${escape(config.password_hint)}</code>.</p>
${error ? `<p class="erreur" role="alert">${escape(error)}</p>` : ''}
<form method="post" action="/interaction/${escape(uid)}/login">
<label for="login">Identifiant</label><input id="login" name="login" autocomplete="username" required list="comptes">
<datalist id="comptes">${options}</datalist>
<label for="password">Mot de passe</label><input id="password" name="password" type="password" autocomplete="current-password" required>
<button type="submit">Se connecter</button></form>`);
}

async function readForm(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > 16384) throw new Error('form too large');
    chunks.push(chunk);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

async function interaction(req, res) {
  const url = new URL(req.url, config.issuer);
  const match = url.pathname.match(/^\/interaction\/([A-Za-z0-9_-]+)(\/login)?$/);
  if (!match) return false;
  res.setHeader('cache-control', 'no-store');
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== match[1]) throw new Error('interaction mismatch');
  if (req.method === 'GET' && !match[2]) {
    res.setHeader('content-type', 'text/html; charset=utf-8');
    res.end(loginPage(details.uid, ''));
    return true;
  }
  if (req.method === 'POST' && match[2]) {
    const form = await readForm(req);
    const login = form.get('login') || '';
    const account = accounts[login];
    if (!account || form.get('password') !== account.password) {
      res.statusCode = 401;
      res.setHeader('content-type', 'text/html; charset=utf-8');
      res.end(loginPage(details.uid, 'Identifiant ou mot de passe incorrect.'));
      return true;
    }
    await provider.interactionFinished(req, res, { login: { accountId: login } }, { mergeWithLastSubmission: false });
    return true;
  }
  res.statusCode = 405;
  res.end();
  return true;
}

const callback = provider.callback();
const server = createServer(async (req, res) => {
  try {
    if (await interaction(req, res)) return;
    callback(req, res);
  } catch (error) {
    res.statusCode = 400;
    res.setHeader('content-type', 'text/plain; charset=utf-8');
    res.end(`bad request: ${error.message}\n`);
  }
});
server.listen(config.port, config.host || '127.0.0.1', () => {
  process.stdout.write(`listening ${server.address().port}\n`);
});
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
