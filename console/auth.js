// Signing in. The console's config.json says how:
// - "dev" (the local runner): the runner's development token, pasted or
//   handed over in the address's fragment (#dev-token=…, never sent to a
//   server), kept in this tab's session storage.
// - "oidc" (a deployment): OpenID Connect authorization code with PKCE
//   against the identity provider the API's JWT authorizer trusts, by
//   oidc-client-ts (vendor/, loaded from this console only).
// The roles in the token shape the page; the API enforces them anyway.

import { fill, h } from "./format.js";

const DEV_KEY = "adesync.console.dev-token";

/** The claims of a JWT, read without verifying (the API verifies). */
export function claims(jwt) {
  try {
    const part = jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const padded = part + "=".repeat((4 - (part.length % 4)) % 4);
    const text = new TextDecoder().decode(Uint8Array.from(atob(padded), (c) => c.charCodeAt(0)));
    return JSON.parse(text);
  } catch {
    return {};
  }
}

/** The adesync roles a token's claims carry (an array, or one name). */
export function roles(tokenClaims) {
  const value = tokenClaims["adesync:roles"];
  const list = Array.isArray(value) ? value : typeof value === "string" ? value.replace(/^\[|\]$/g, "").split(/[\s,]+/) : [];
  return list.filter((r) => ["admin", "dem", "reader"].includes(r));
}

function session(token, signOut) {
  const c = claims(token);
  const r = roles(c);
  return {
    token: () => token,
    subject: c.email || c.preferred_username || c.sub || "signed in",
    account: c["adesync:account"] || "",
    roles: r,
    canWrite: r.includes("admin") || r.includes("dem"),
    isAdmin: r.includes("admin"),
    expiresAt: c.exp ? c.exp * 1000 : null,
    signOut,
  };
}

/**
 * Signs in as the config says: resolves with a session, or renders the
 * sign-in screen into `main` and resolves with null.
 */
export async function signIn(config, main) {
  if (config.auth === "dev") return devSignIn(main);
  if (config.auth === "oidc") return oidcSignIn(config, main);
  fill(main, 
    h("h1", {}, "Sign-in is not configured"),
    h("p", {}, config.message || "This console has no sign-in configured."),
  );
  return null;
}

function devSignIn(main) {
  const fragment = new URLSearchParams(location.hash.replace(/^#/, ""));
  const handed = fragment.get("dev-token");
  if (handed) {
    sessionStorage.setItem(DEV_KEY, handed);
    history.replaceState(null, "", `${location.pathname}#/tokens`);
  }
  const stored = sessionStorage.getItem(DEV_KEY);
  const signOut = () => {
    sessionStorage.removeItem(DEV_KEY);
    location.hash = "#/tokens";
    location.reload();
  };
  if (stored && !expired(stored)) return session(stored, signOut);
  sessionStorage.removeItem(DEV_KEY);
  const input = h("textarea", { id: "dev-token", name: "dev-token", required: true, spellcheck: "false", autocomplete: "off" });
  fill(main, 
    h("h1", {}, "Sign in to the local adesync"),
    h("p", {}, "This is the local runner. Sign in with its development access token: ",
      h("code", {}, "serve"), " and ", h("code", {}, "demo"),
      " print one (ADESYNC_TOKEN) and a console address that signs in with it; ",
      h("code", {}, "adesync dev-token --roles reader"), " mints others with the run's secret."),
    h("form", {
      class: "stack",
      onsubmit: (event) => {
        event.preventDefault();
        sessionStorage.setItem(DEV_KEY, input.value.trim());
        location.hash = "#/tokens";
        location.reload();
      },
    },
    h("label", { for: "dev-token" }, "Development access token", input),
    h("div", {}, h("button", { type: "submit" }, "Sign in"))),
  );
  input.focus();
  return null;
}

function expired(jwt) {
  const exp = claims(jwt).exp;
  return typeof exp === "number" && exp * 1000 <= Date.now();
}

function loadScript(src) {
  return new Promise((resolve, reject) => {
    const script = document.createElement("script");
    script.src = src;
    script.onload = resolve;
    script.onerror = () => reject(new Error(`${src} did not load`));
    document.head.append(script);
  });
}

async function oidcSignIn(config, main) {
  await loadScript("/console/vendor/oidc-client-ts.min.js");
  const { UserManager, WebStorageStateStore } = window.oidc;
  const home = `${location.origin}/console`;
  const manager = new UserManager({
    authority: config.issuer,
    client_id: config.client_id,
    redirect_uri: home,
    post_logout_redirect_uri: home,
    response_type: "code",
    scope: config.scope || "openid",
    userStore: new WebStorageStateStore({ store: window.sessionStorage }),
    automaticSilentRenew: false,
  });
  const query = new URLSearchParams(location.search);
  if (query.has("code") || query.has("error")) {
    try {
      const user = await manager.signinRedirectCallback();
      const back = (user.state && user.state.hash) || "#/tokens";
      history.replaceState(null, "", `${location.pathname}${back}`);
    } catch (error) {
      history.replaceState(null, "", location.pathname);
      fill(main, h("h1", {}, "Sign-in failed"), h("p", {}, error.message));
      return null;
    }
  }
  const user = await manager.getUser();
  const signOut = () => manager.removeUser().then(() => manager.signoutRedirect().catch(() => location.reload()));
  if (user && !user.expired && user.access_token) return session(user.access_token, signOut);
  const button = h("button", {
    type: "button",
    onclick: () => manager.signinRedirect({ state: { hash: location.hash || "#/tokens" } }),
  }, "Sign in");
  fill(main, 
    h("h1", {}, "Sign in to adesync"),
    h("p", {}, "You sign in with your organisation's identity provider (", h("code", {}, config.issuer), ")."),
    button,
  );
  button.focus();
  return null;
}
