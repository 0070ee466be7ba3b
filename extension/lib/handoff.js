// The token hand-off, as pure functions (the service worker runs the flow): PKCE values, the
// server page that starts it, and the one redirect that may end it. Design and reasons:
// inboxlens/web/handoff.py and README.md ("The browser extension").
//
// The service worker opens `<server>/extension/connect?state&challenge` with
// chrome.identity.launchWebAuthFlow; the user approves on the server; the server redirects to
// https://<this extension's id>.chromiumapp.org/handoff?code&state, which Chrome hands back here
// and never loads; the worker then POSTs the code with the verifier (never sent before) for a token.

const B64URL_32 = /^[A-Za-z0-9_-]{43}$/;
export const TOKEN = /^ilk_[A-Za-z0-9_-]{43}$/;

export function b64url(bytes) {
  let text = "";
  for (const b of bytes) text += String.fromCharCode(b);
  return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/** A fresh verifier (kept by the worker), its S256 challenge (sent to the server) and a state. */
export async function pkce(crypto = globalThis.crypto) {
  const verifier = b64url(crypto.getRandomValues(new Uint8Array(32)));
  const hash = new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier)));
  return { verifier, challenge: b64url(hash), state: b64url(crypto.getRandomValues(new Uint8Array(16))) };
}

export function startUrl(base, state, challenge) {
  return `${base}/extension/connect?${new URLSearchParams({ state, challenge })}`;
}

/** The code from the URL the flow ended at, if it is this extension's redirect for this very flow. */
export function codeFrom(redirect, extensionId, state) {
  let url;
  try {
    url = new URL(String(redirect));
  } catch {
    return { ok: false, reason: "The hand-off did not come back." };
  }
  if (url.origin !== `https://${extensionId}.chromiumapp.org` || url.pathname !== "/handoff"
      || url.searchParams.get("state") !== state) {
    return { ok: false, reason: "The hand-off came back from somewhere else; nothing was changed." };
  }
  if (url.searchParams.get("error") === "access_denied") return { ok: false, reason: "You cancelled the hand-off." };
  const code = url.searchParams.get("code") ?? "";
  return B64URL_32.test(code) ? { ok: true, code } : { ok: false, reason: "The hand-off came back without a code." };
}

/** What the server's answer to the exchange means: the token, or why not (in the server's words). */
export function tokenFrom(status, body) {
  if (status === 201 && body && typeof body.token === "string" && TOKEN.test(body.token)) {
    return { ok: true, token: body.token };
  }
  const said = body && body.error && typeof body.error.message === "string" ? body.error.message.slice(0, 300) : "";
  return { ok: false, reason: said || `The server answered ${status} to the hand-off.` };
}
