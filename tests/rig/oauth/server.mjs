// Strict OAuth2 authorization server for the mailplug test rig (loopback only).
//
// Built on the npm package oauth2-mock-server, whose issuer (RS256 key store, JWT signing),
// discovery document and JWKS route are used as they are. Its token, authorize, revoke,
// introspect and userinfo handlers are far too lenient for meaningful tests (any code or refresh
// token is accepted, introspection always says "active", tokens carry no email), so this file
// answers those paths itself, in front of the package's request handler:
//
//   GET  /authorize            authorization_code + PKCE S256 (required); automatic consent; the
//                              user is chosen by login_hint (a rig user); deny@example.test -> the
//                              user "refuses" (error=access_denied); state is passed back unchanged.
//   POST /token                grant_type=authorization_code (single-use code bound to client,
//                              redirect_uri and PKCE verifier) and grant_type=refresh_token
//                              (refresh tokens rotate: the old one becomes invalid).
//   POST /strict/revoke        RFC 7009 (also at /revoke).
//   POST /strict/introspect    RFC 7662: signature, expiry and revocation (also at /introspect).
//   GET  /userinfo             Bearer access token -> {sub, email, email_verified}.
//   GET  /health               {"ok":true}.
//   /test/...                  TEST-ONLY helper routes (see the "TEST HELPERS" section below).
//
// Started by tests/rig/up.sh:
//   node server.mjs --host 127.0.0.1 --port 10800 --issuer http://127.0.0.1:10800 \
//        --users FILE --rig-dir DIR
// FILE lists the rig's mail addresses, one a line. Everything is kept in memory: a restart
// forgets every code and token (the signing key is new too).
//
// The log (stdout) has one line per request: method, path (never the query), status and what
// happened. It never contains tokens, codes, verifiers or client secrets.

import { createServer } from "node:http";
import { createHash, randomBytes, randomUUID, timingSafeEqual } from "node:crypto";
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { OAuth2Issuer, OAuth2Service } from "oauth2-mock-server";
import { createLocalJWKSet, jwtVerify, decodeJwt } from "jose";

// ---- configuration ------------------------------------------------------------------------

const { values: args } = parseArgs({
    options: {
        host: { type: "string", default: "127.0.0.1" },
        port: { type: "string", default: "10800" },
        issuer: { type: "string" },
        users: { type: "string" },
        "rig-dir": { type: "string" }, // only to recognise this process (see tests/rig/common.sh)
    },
    strict: true,
});

const HOST = args.host;
const PORT = Number(args.port);
const ISSUER = args.issuer ?? `http://${HOST}:${PORT}`;
if (!["127.0.0.1", "::1"].includes(HOST)) {
    console.error(`refusing to listen on ${HOST}: loopback only`);
    process.exit(2);
}

const USERS = new Set(
    (args.users ? readFileSync(args.users, "utf8") : "")
        .split("\n")
        .map((l) => l.trim().toLowerCase())
        .filter((l) => l && !l.startsWith("#")),
);

// login_hint that makes the (automatic) consent screen refuse.
const DENY_HINT = "deny@example.test";

// Registered clients. A confidential one (client_secret_basic or client_secret_post) and a public
// one (no secret; PKCE alone). Both must use PKCE S256.
const CLIENTS = new Map([
    ["mailplug-test", { secret: "Client-Secret-5Rq!" }],
    ["mailplug-public", { secret: null }],
]);

const DEFAULT_ACCESS_TTL = 3600; // seconds
const ID_TOKEN_TTL = 3600;
const CODE_TTL = 120;
const DEFAULT_SCOPE = "openid email mail";
const MAX_TOKEN_SIZE = 65536;
const MAX_BODY = 1 << 20;

// ---- state (in memory) ----------------------------------------------------------------------

/** code -> { clientId, redirectUri, challenge, email, scope, nonce, expiresAt, opts } */
const codes = new Map();
/** used code -> grant id (a replayed code revokes what it produced, RFC 6749 4.1.2) */
const usedCodes = new Map();
/** grant id -> { email, clientId, scope, opts, revoked } */
const grants = new Map();
/** refresh token -> { grant, state: "active" | "rotated" } */
const refreshTokens = new Map();
/** access token jti -> { grant (or null), email, revoked } */
const accessTokens = new Map();
/** email -> { expiresIn?, tokenSize? } set by the /test/user-settings helper */
const userSettings = new Map();

// ---- the package's issuer and service ----------------------------------------------------------

const issuer = new OAuth2Issuer();
issuer.url = ISSUER; // exactly this; the package would otherwise say "localhost"
await issuer.keys.generate("RS256");
const service = new OAuth2Service(issuer);
const publicKeys = () => createLocalJWKSet({ keys: issuer.keys.toJSON(false) });

service.on("beforeWellKnownOpenIdConfiguration", (resp) => {
    Object.assign(resp.body, {
        token_endpoint_auth_methods_supported: ["client_secret_basic", "client_secret_post", "none"],
        grant_types_supported: ["authorization_code", "refresh_token"],
        response_types_supported: ["code"],
        code_challenge_methods_supported: ["S256"],
        revocation_endpoint: `${ISSUER}/strict/revoke`,
        introspection_endpoint: `${ISSUER}/strict/introspect`,
        userinfo_endpoint: `${ISSUER}/userinfo`,
        claims_supported: ["iss", "sub", "aud", "exp", "iat", "email", "email_verified", "scope"],
    });
});

// ---- small helpers -------------------------------------------------------------------------------

const now = () => Math.floor(Date.now() / 1000);
const sha256 = (s) => createHash("sha256").update(s).digest();
const subOf = (email) => "uid-" + sha256(email).toString("hex").slice(0, 20);
const newToken = (prefix) => prefix + randomBytes(32).toString("base64url");

class OAuthError extends Error {
    constructor(status, error, description, headers = {}) {
        super(description);
        this.status = status;
        this.error = error;
        this.headers = headers;
    }
}

function sendJson(res, status, body, headers = {}) {
    const content = JSON.stringify(body);
    res.writeHead(status, {
        "Content-Type": "application/json; charset=utf-8",
        "Content-Length": Buffer.byteLength(content),
        "Cache-Control": "no-store",
        Pragma: "no-cache",
        ...headers,
    });
    res.end(content);
}

function sendText(res, status, text) {
    res.writeHead(status, { "Content-Type": "text/plain; charset=utf-8", "Content-Length": Buffer.byteLength(text) });
    res.end(text);
}

function readBody(req) {
    return new Promise((resolve, reject) => {
        const chunks = [];
        let size = 0;
        req.on("data", (c) => {
            size += c.length;
            if (size > MAX_BODY) {
                reject(new OAuthError(413, "invalid_request", "request body too large"));
                req.destroy();
                return;
            }
            chunks.push(c);
        });
        req.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
        req.on("error", reject);
    });
}

/** Form body (also when the Content-Type is missing) or JSON body -> plain object of strings. */
async function parseBody(req) {
    if (req.method !== "POST") return {};
    const raw = await readBody(req);
    const ct = (req.headers["content-type"] ?? "").toLowerCase();
    if (ct.includes("application/json")) {
        try {
            const v = JSON.parse(raw);
            if (v && typeof v === "object" && !Array.isArray(v)) return v;
        } catch {
            /* fall through */
        }
        throw new OAuthError(400, "invalid_request", "malformed JSON body");
    }
    if (ct && !ct.includes("application/x-www-form-urlencoded")) {
        throw new OAuthError(400, "invalid_request", `unsupported Content-Type ${ct}`);
    }
    const out = {};
    for (const [k, v] of new URLSearchParams(raw)) {
        if (k in out) throw new OAuthError(400, "invalid_request", `parameter ${k} repeated`);
        out[k] = v;
    }
    return out;
}

function queryOf(url) {
    const out = {};
    for (const [k, v] of url.searchParams) out[k] = v;
    return out;
}

function safeEqual(a, b) {
    const x = Buffer.from(String(a));
    const y = Buffer.from(String(b));
    return x.length === y.length && timingSafeEqual(x, y);
}

/** Optional integer parameter in [min, max]; undefined when absent or empty. */
function intParam(params, name, min, max) {
    const v = params[name];
    if (v === undefined || v === "") return undefined;
    if (!/^-?[0-9]+$/.test(String(v))) throw new OAuthError(400, "invalid_request", `${name} must be an integer`);
    const n = Number(v);
    if (n < min || n > max) throw new OAuthError(400, "invalid_request", `${name} must be in ${min}..${max}`);
    return n;
}

/** Test knobs: expires_in (seconds; <= 0 gives an already expired token) and token_size (bytes). */
function testOpts(params) {
    return {
        expiresIn: intParam(params, "expires_in", -86400, 10 * 365 * 86400),
        tokenSize: intParam(params, "token_size", 0, MAX_TOKEN_SIZE),
    };
}

function effectiveOpts(email, ...layers) {
    const out = { expiresIn: DEFAULT_ACCESS_TTL, tokenSize: 0 };
    // Later layers win: grant (from /authorize) < per-user test settings < token request.
    for (const l of [layers[0], userSettings.get(email), layers[1]]) {
        if (!l) continue;
        if (l.expiresIn !== undefined) out.expiresIn = l.expiresIn;
        if (l.tokenSize !== undefined) out.tokenSize = l.tokenSize;
    }
    return out;
}

/**
 * Client authentication (RFC 6749 2.3.1): HTTP Basic (form-urlencoded id and secret) or
 * client_id/client_secret in the body; a public client sends client_id only.
 */
function authenticateClient(req, body) {
    const h = req.headers.authorization;
    let id;
    let secret;
    let viaBasic = false;
    if (h !== undefined) {
        const m = /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(h);
        if (!m) throw new OAuthError(401, "invalid_client", "unsupported Authorization header", { "WWW-Authenticate": 'Basic realm="mailplug-rig"' });
        const decoded = Buffer.from(m[1], "base64").toString("utf8");
        const i = decoded.indexOf(":");
        if (i < 0) throw new OAuthError(401, "invalid_client", "malformed Basic credentials", { "WWW-Authenticate": 'Basic realm="mailplug-rig"' });
        const dec = (s) => {
            try {
                return decodeURIComponent(s.replace(/\+/g, " "));
            } catch {
                return s;
            }
        };
        id = dec(decoded.slice(0, i));
        secret = dec(decoded.slice(i + 1));
        viaBasic = true;
        if (body.client_secret !== undefined) throw new OAuthError(400, "invalid_request", "client authenticated twice (Basic and client_secret)");
        if (body.client_id !== undefined && body.client_id !== id) throw new OAuthError(400, "invalid_request", "client_id differs from the Basic credentials");
    } else {
        id = body.client_id;
        secret = body.client_secret;
    }
    const challenge = viaBasic ? { "WWW-Authenticate": 'Basic realm="mailplug-rig"' } : {};
    if (!id) throw new OAuthError(401, "invalid_client", "no client authentication", challenge);
    const client = CLIENTS.get(id);
    if (!client) throw new OAuthError(401, "invalid_client", "unknown client", challenge);
    if (client.secret !== null) {
        if (secret === undefined || secret === "") throw new OAuthError(401, "invalid_client", "client secret required", challenge);
        if (!safeEqual(secret, client.secret)) throw new OAuthError(401, "invalid_client", "wrong client secret", challenge);
    } else if (secret !== undefined && secret !== "") {
        throw new OAuthError(401, "invalid_client", "public client must not send a secret", challenge);
    }
    return id;
}

/** A redirect URI the rig accepts: http on a loopback address (any port and path), or https. */
function validRedirectUri(s) {
    let u;
    try {
        u = new URL(s);
    } catch {
        return false;
    }
    if (u.hash) return false;
    if (u.protocol === "https:") return true;
    return u.protocol === "http:" && ["127.0.0.1", "localhost", "[::1]"].includes(u.hostname);
}

// ---- tokens ---------------------------------------------------------------------------------

/** Signs an access token (RS256 JWT); pads it with a "pad" claim up to opts.tokenSize bytes. */
async function issueAccessToken(email, clientId, scope, grantId, opts) {
    const jti = randomUUID();
    const build = (pad) =>
        issuer.buildToken({
            expiresIn: opts.expiresIn,
            scopesOrTransform: (_header, payload) => {
                Object.assign(payload, {
                    sub: subOf(email),
                    aud: clientId,
                    client_id: clientId,
                    email,
                    email_verified: true,
                    scope,
                    jti,
                });
                if (pad > 0) payload.pad = randomBytes(Math.ceil(pad)).toString("base64url").slice(0, pad);
            },
        });
    let token = await build(0);
    let pad = 0;
    for (let i = 0; i < 5 && token.length < opts.tokenSize; i++) {
        const missing = opts.tokenSize - token.length;
        pad = pad === 0 ? Math.max(1, Math.ceil((missing * 3) / 4) - 9) : pad + Math.max(1, Math.floor((missing * 3) / 4));
        token = await build(pad);
    }
    accessTokens.set(jti, { grant: grantId, email, revoked: false });
    return token;
}

async function issueIdToken(email, clientId, nonce) {
    return issuer.buildToken({
        expiresIn: ID_TOKEN_TTL,
        scopesOrTransform: (_header, payload) => {
            Object.assign(payload, { sub: subOf(email), aud: clientId, email, email_verified: true });
            if (nonce) payload.nonce = nonce;
        },
    });
}

/** The token endpoint's answer for a grant, with a new (rotated) refresh token. */
async function tokenResponse(grantId, requestOpts, nonce) {
    const g = grants.get(grantId);
    const opts = effectiveOpts(g.email, g.opts, requestOpts);
    const refresh = newToken("rt-");
    refreshTokens.set(refresh, { grant: grantId, state: "active" });
    const body = {
        access_token: await issueAccessToken(g.email, g.clientId, g.scope, grantId, opts),
        token_type: "Bearer",
        expires_in: opts.expiresIn,
        refresh_token: refresh,
        scope: g.scope,
    };
    if (g.scope.split(" ").includes("openid")) body.id_token = await issueIdToken(g.email, g.clientId, nonce);
    return { body, opts };
}

function newGrant(email, clientId, scope, opts) {
    const id = randomUUID();
    grants.set(id, { email, clientId, scope, opts, revoked: false });
    return id;
}

/** Why an access token is not active, or null when it is; also returns its claims. */
async function checkAccessToken(token) {
    if (typeof token !== "string" || token.split(".").length !== 3) return { why: "not a JWT" };
    let payload;
    try {
        ({ payload } = await jwtVerify(token, publicKeys(), { issuer: ISSUER, algorithms: ["RS256"] }));
    } catch (e) {
        return { why: e.code === "ERR_JWT_EXPIRED" ? "expired" : `invalid (${e.code ?? e.message})` };
    }
    const rec = accessTokens.get(payload.jti);
    if (!rec) return { why: "not an access token of this server" };
    if (rec.revoked) return { why: "revoked" };
    if (rec.grant && grants.get(rec.grant)?.revoked) return { why: "grant revoked" };
    return { why: null, payload };
}

function revokeGrant(id) {
    const g = grants.get(id);
    if (g) g.revoked = true;
}

// ---- routes -----------------------------------------------------------------------------------

async function authorize(req, res, url, note) {
    const q = queryOf(url);
    // Errors that must not redirect (RFC 6749 4.1.2.1): unknown client, bad redirect_uri.
    if (!q.client_id || !CLIENTS.has(q.client_id)) {
        note("error=invalid_client");
        return sendText(res, 400, "invalid_client: unknown or missing client_id\n");
    }
    if (!q.redirect_uri || !validRedirectUri(q.redirect_uri)) {
        note("error=invalid_redirect_uri");
        return sendText(res, 400, "invalid_request: missing or unacceptable redirect_uri (loopback http or https)\n");
    }
    const redirect = new URL(q.redirect_uri);
    const back = (params) => {
        for (const [k, v] of Object.entries(params)) redirect.searchParams.set(k, v);
        if (q.state !== undefined) redirect.searchParams.set("state", q.state);
        res.writeHead(302, { Location: redirect.href, "Cache-Control": "no-store" });
        res.end();
    };
    const fail = (error, description) => {
        note(`client=${q.client_id} error=${error} (${description})`);
        back({ error, error_description: description });
    };
    if (q.response_type !== "code") return fail("unsupported_response_type", "only response_type=code is supported");
    if (!q.code_challenge) return fail("invalid_request", "PKCE is required: code_challenge missing");
    if (q.code_challenge_method !== "S256") return fail("invalid_request", "PKCE code_challenge_method must be S256");
    if (!/^[A-Za-z0-9_-]{43}$/.test(q.code_challenge)) return fail("invalid_request", "code_challenge is not a base64url SHA-256");
    let opts;
    try {
        opts = testOpts(q);
    } catch (e) {
        return fail("invalid_request", e.message);
    }
    const hint = (q.login_hint ?? "").trim().toLowerCase();
    if (hint === DENY_HINT) return fail("access_denied", "The user denied access (login_hint deny@example.test)");
    if (!hint) return fail("access_denied", "No user signed in (login_hint missing)");
    if (!USERS.has(hint)) return fail("access_denied", "Unknown user");
    const code = newToken("code-");
    codes.set(code, {
        clientId: q.client_id,
        redirectUri: q.redirect_uri,
        challenge: q.code_challenge,
        email: hint,
        scope: (q.scope ?? "").trim() || DEFAULT_SCOPE,
        nonce: q.nonce,
        expiresAt: now() + CODE_TTL,
        opts,
    });
    note(`client=${q.client_id} user=${hint} code issued`);
    back({ code });
}

async function token(req, res, note) {
    const body = await parseBody(req);
    const clientId = authenticateClient(req, body);
    const opts = testOpts(body);
    switch (body.grant_type) {
        case "authorization_code": {
            for (const p of ["code", "redirect_uri"]) {
                if (!body[p]) throw new OAuthError(400, "invalid_request", `${p} missing`);
            }
            const c = codes.get(body.code);
            if (!c) {
                if (usedCodes.has(body.code)) {
                    const replayed = usedCodes.get(body.code);
                    if (replayed) revokeGrant(replayed);
                    throw new OAuthError(400, "invalid_grant", "authorization code already used" + (replayed ? " (tokens from it revoked)" : ""));
                }
                throw new OAuthError(400, "invalid_grant", "unknown authorization code");
            }
            codes.delete(body.code); // single use, even when the exchange fails below
            usedCodes.set(body.code, null);
            if (c.expiresAt < now()) throw new OAuthError(400, "invalid_grant", "authorization code expired");
            if (c.clientId !== clientId) throw new OAuthError(400, "invalid_grant", "authorization code was issued to another client");
            if (c.redirectUri !== body.redirect_uri) throw new OAuthError(400, "invalid_grant", "redirect_uri does not match the authorization request");
            if (!body.code_verifier) throw new OAuthError(400, "invalid_grant", "PKCE code_verifier missing");
            if (!/^[A-Za-z0-9._~-]{43,128}$/.test(body.code_verifier)) throw new OAuthError(400, "invalid_grant", "code_verifier is malformed (RFC 7636 4.1)");
            if (sha256(body.code_verifier).toString("base64url") !== c.challenge) throw new OAuthError(400, "invalid_grant", "PKCE verification failed");
            const grantId = newGrant(c.email, clientId, c.scope, c.opts);
            usedCodes.set(body.code, grantId);
            const { body: out, opts: eff } = await tokenResponse(grantId, opts, c.nonce);
            note(`grant=authorization_code client=${clientId} user=${c.email} ok expires_in=${eff.expiresIn} size=${out.access_token.length}`);
            return sendJson(res, 200, out);
        }
        case "refresh_token": {
            if (!body.refresh_token) throw new OAuthError(400, "invalid_request", "refresh_token missing");
            const r = refreshTokens.get(body.refresh_token);
            if (!r) throw new OAuthError(400, "invalid_grant", "unknown refresh token");
            const g = grants.get(r.grant);
            if (g.revoked) throw new OAuthError(400, "invalid_grant", "refresh token revoked");
            if (r.state !== "active") throw new OAuthError(400, "invalid_grant", "refresh token already used (rotated)");
            if (g.clientId !== clientId) throw new OAuthError(400, "invalid_grant", "refresh token was issued to another client");
            if (body.scope) {
                const allowed = new Set(g.scope.split(" "));
                if (!body.scope.split(" ").filter(Boolean).every((s) => allowed.has(s))) {
                    throw new OAuthError(400, "invalid_scope", "requested scope exceeds the original grant");
                }
            }
            r.state = "rotated";
            const { body: out, opts: eff } = await tokenResponse(r.grant, opts, undefined);
            note(`grant=refresh_token client=${clientId} user=${g.email} ok (rotated) expires_in=${eff.expiresIn} size=${out.access_token.length}`);
            return sendJson(res, 200, out);
        }
        case undefined:
        case "":
            throw new OAuthError(400, "invalid_request", "grant_type missing");
        default:
            throw new OAuthError(400, "unsupported_grant_type", `grant_type ${body.grant_type} is not supported`);
    }
}

async function revoke(req, res, note) {
    const body = await parseBody(req);
    const clientId = authenticateClient(req, body);
    const t = body.token;
    if (!t) throw new OAuthError(400, "invalid_request", "token missing");
    const r = refreshTokens.get(t);
    if (r) {
        const g = grants.get(r.grant);
        if (g.clientId !== clientId) throw new OAuthError(400, "invalid_request", "token was issued to another client");
        revokeGrant(r.grant);
        note(`client=${clientId} user=${g.email} refresh token revoked (grant and its access tokens)`);
        return sendText(res, 200, "");
    }
    let claims = null;
    try {
        claims = decodeJwt(t);
    } catch {
        /* not a JWT */
    }
    const rec = claims && accessTokens.get(claims.jti);
    if (rec) {
        // Make sure it is really ours (signature), expired or not.
        try {
            await jwtVerify(t, publicKeys(), { issuer: ISSUER, algorithms: ["RS256"], currentDate: new Date((claims.iat ?? 0) * 1000) });
        } catch {
            note(`client=${clientId} unknown token (bad signature); nothing revoked`);
            return sendText(res, 200, "");
        }
        if (claims.client_id !== clientId) throw new OAuthError(400, "invalid_request", "token was issued to another client");
        rec.revoked = true;
        note(`client=${clientId} user=${rec.email} access token revoked`);
        return sendText(res, 200, "");
    }
    note(`client=${clientId} unknown token; nothing revoked`);
    return sendText(res, 200, ""); // RFC 7009 2.2: invalid tokens are not an error
}

async function introspect(req, res, note) {
    const body = await parseBody(req);
    const { why, payload } = await checkAccessToken(body.token);
    if (why) {
        note(`active=false (${why})`);
        return sendJson(res, 200, { active: false });
    }
    note(`active=true user=${payload.email}`);
    return sendJson(res, 200, {
        active: true,
        email: payload.email,
        username: payload.email,
        sub: payload.sub,
        scope: payload.scope,
        client_id: payload.client_id,
        token_type: "Bearer",
        iss: payload.iss,
        exp: payload.exp,
        iat: payload.iat,
    });
}

async function userinfo(req, res, note) {
    const m = /^Bearer\s+(\S+)\s*$/i.exec(req.headers.authorization ?? "");
    const { why, payload } = m ? await checkAccessToken(m[1]) : { why: "no Bearer token" };
    if (why) {
        note(`rejected (${why})`);
        return sendJson(res, 401, { error: "invalid_token", error_description: why }, { "WWW-Authenticate": 'Bearer error="invalid_token"' });
    }
    note(`user=${payload.email}`);
    return sendJson(res, 200, { sub: payload.sub, email: payload.email, email_verified: true });
}

// ---- TEST HELPERS: test-only routes, not part of any real OAuth2 server -------------------------
//
//   GET|POST /test/token?email=E[&expires_in=N][&token_size=B][&scope=S][&client_id=C]
//       Mints tokens for E as if the code flow had run: the /token JSON answer (access_token,
//       refresh_token, id_token, ...). expires_in <= 0 gives an already expired access token.
//   GET|POST /test/revoke-all?email=E
//       Revokes every grant (refresh tokens) and access token of E.
//   GET|POST /test/user-settings?email=E[&expires_in=N][&token_size=B]
//       Defaults for E's next tokens from /token (both grants) and /test/token, overriding the
//       ones given to /authorize; an empty or missing value clears that setting.

async function testRoute(req, res, url, note) {
    const params = { ...queryOf(url), ...(await parseBody(req)) };
    const email = (params.email ?? "").trim().toLowerCase();
    if (!USERS.has(email)) throw new OAuthError(400, "invalid_request", "email must be one of the rig's users");
    switch (url.pathname) {
        case "/test/token": {
            const clientId = params.client_id || "mailplug-test";
            if (!CLIENTS.has(clientId)) throw new OAuthError(400, "invalid_request", "unknown client_id");
            const grantId = newGrant(email, clientId, (params.scope ?? "").trim() || DEFAULT_SCOPE, {});
            const { body, opts } = await tokenResponse(grantId, testOpts(params), undefined);
            note(`minted for user=${email} expires_in=${opts.expiresIn} size=${body.access_token.length}`);
            return sendJson(res, 200, body);
        }
        case "/test/revoke-all": {
            let g = 0;
            let a = 0;
            for (const grant of grants.values()) {
                if (grant.email === email && !grant.revoked) {
                    grant.revoked = true;
                    g++;
                }
            }
            for (const t of accessTokens.values()) {
                if (t.email === email && !t.revoked) {
                    t.revoked = true;
                    a++;
                }
            }
            note(`user=${email} revoked ${g} grants, ${a} access tokens`);
            return sendJson(res, 200, { revoked_grants: g, revoked_access_tokens: a });
        }
        case "/test/user-settings": {
            const o = testOpts(params);
            const s = {};
            if (o.expiresIn !== undefined) s.expiresIn = o.expiresIn;
            if (o.tokenSize !== undefined) s.tokenSize = o.tokenSize;
            if (Object.keys(s).length) userSettings.set(email, s);
            else userSettings.delete(email);
            note(`user=${email} settings ${JSON.stringify(s)}`);
            return sendJson(res, 200, { email, expires_in: s.expiresIn ?? null, token_size: s.tokenSize ?? null });
        }
        default:
            return sendText(res, 404, "no such test helper\n");
    }
}

// ---- dispatch ----------------------------------------------------------------------------------

function expire() {
    const t = now();
    for (const [k, c] of codes) if (c.expiresAt < t) codes.delete(k);
}

async function handle(req, res) {
    const url = new URL(req.url ?? "/", ISSUER);
    const path = url.pathname.length > 1 ? url.pathname.replace(/\/+$/, "") : url.pathname;
    const notes = [];
    const note = (s) => notes.push(s);
    res.on("finish", () => {
        console.log(`${new Date().toISOString()} ${req.method} ${path} ${res.statusCode}${notes.length ? " " + notes.join("; ") : ""}`);
    });
    const routes = {
        "GET /authorize": () => authorize(req, res, url, note),
        "POST /token": () => token(req, res, note),
        "POST /strict/revoke": () => revoke(req, res, note),
        "POST /revoke": () => revoke(req, res, note),
        "POST /strict/introspect": () => introspect(req, res, note),
        "POST /introspect": () => introspect(req, res, note),
        "GET /userinfo": () => userinfo(req, res, note),
        "GET /health": () => sendJson(res, 200, { ok: true, issuer: ISSUER }),
    };
    expire();
    try {
        const r = routes[`${req.method} ${path}`];
        if (r) return await r();
        if (path.startsWith("/test/") && (req.method === "GET" || req.method === "POST")) return await testRoute(req, res, url, note);
        // Strict paths with the wrong method, and the package's lenient routes we do not offer.
        if (["/authorize", "/token", "/strict/revoke", "/revoke", "/strict/introspect", "/introspect", "/userinfo", "/health"].includes(path) || path.startsWith("/test/")) {
            note("method not allowed");
            return sendText(res, 405, "method not allowed\n");
        }
        // Discovery document and JWKS (and /endsession): the package's own handlers.
        return service.requestHandler(req, res);
    } catch (e) {
        if (e instanceof OAuthError) {
            note(`error=${e.error} (${e.message})`);
            if (!res.headersSent) sendJson(res, e.status, { error: e.error, error_description: e.message }, e.headers);
            return;
        }
        note(`internal error: ${e?.stack ?? e}`);
        if (!res.headersSent) sendJson(res, 500, { error: "server_error", error_description: "internal error" });
    }
}

const server = createServer((req, res) => {
    handle(req, res).catch((e) => {
        console.log(`${new Date().toISOString()} unhandled: ${e?.stack ?? e}`);
        if (!res.headersSent) sendJson(res, 500, { error: "server_error" });
    });
});
server.keepAliveTimeout = 5000;
server.on("error", (e) => {
    console.error(`${new Date().toISOString()} cannot listen on ${HOST}:${PORT}: ${e.message}`);
    process.exit(1);
});
server.listen(PORT, HOST, () => {
    console.log(`${new Date().toISOString()} listening on http://${HOST}:${PORT} issuer ${ISSUER}, ${USERS.size} users, pid ${process.pid}`);
});

const stop = (sig) => {
    console.log(`${new Date().toISOString()} ${sig}: stopping`);
    server.close(() => process.exit(0));
    server.closeAllConnections?.();
    setTimeout(() => process.exit(0), 1000).unref();
};
process.on("SIGTERM", () => stop("SIGTERM"));
process.on("SIGINT", () => stop("SIGINT"));
