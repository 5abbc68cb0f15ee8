// The adesync console: signs in, then routes the address's fragment
// (#/tokens, #/tokens/<id>, …/devices, …/policies, #/public-key, #/upload)
// to a page. Plain modules, no framework, nothing loaded from other hosts.

import { Api } from "./api.js";
import { signIn } from "./auth.js";
import { fill, h } from "./format.js";
import { devicesPage, policiesPage, publicKeyPage, tokenPage, tokensPage, uploadPage } from "./pages.js";

const main = document.getElementById("main");
const routes = [
  [/^\/tokens\/([^/]+)\/devices$/, devicesPage],
  [/^\/tokens\/([^/]+)\/policies$/, policiesPage],
  [/^\/tokens\/([^/]+)$/, tokenPage],
  [/^\/tokens$/, tokensPage],
  [/^\/public-key$/, publicKeyPage],
  [/^\/upload$/, uploadPage],
];

let generation = 0;
let leaving = [];

function toast(text) {
  const box = document.getElementById("toast");
  box.textContent = text;
  setTimeout(() => { if (box.textContent === text) box.textContent = ""; }, 6000);
}

/** A modal question; resolves true when confirmed (Esc cancels). */
function confirmDialog(title, message, yes) {
  return new Promise((resolve) => {
    const dialog = h("dialog", { "aria-labelledby": "confirm-title", id: "confirm" },
      h("h2", { id: "confirm-title" }, title),
      h("p", { id: "confirm-message" }, message),
      h("form", { method: "dialog", class: "actions" },
        h("button", { value: "no", class: "secondary", id: "confirm-no" }, "Cancel"),
        h("button", { value: "yes", class: "danger", id: "confirm-yes" }, yes)));
    dialog.addEventListener("close", () => {
      resolve(dialog.returnValue === "yes");
      dialog.remove();
    });
    document.body.append(dialog);
    dialog.showModal();
    dialog.querySelector("#confirm-no").focus();
  });
}

function nav(session) {
  const links = [["#/tokens", "Tokens"], ["#/public-key", "Public key"]];
  if (session.canWrite) links.splice(1, 0, ["#/upload", "Upload a token"]);
  document.getElementById("nav").replaceChildren(...links.map(([href, text]) =>
    h("a", { href, "data-write": href === "#/upload" ? true : null }, text)));
  document.getElementById("who").replaceChildren(
    h("span", { id: "who-name" }, session.subject),
    h("span", { id: "who-roles", class: "badge info" }, session.roles.length ? session.roles.join(", ") : "no role"),
    h("button", { type: "button", onclick: session.signOut }, "Sign out"));
}

function markCurrent() {
  for (const link of document.querySelectorAll("#nav a")) {
    const current = location.hash.startsWith(link.getAttribute("href"));
    if (current) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}

async function render(ctx, focus) {
  const mine = ++generation;
  const shown = location.hash;
  delete main.dataset.rendered;
  for (const leave of leaving) leave();
  leaving = [];
  const [path, query] = (location.hash.replace(/^#/, "") || "/tokens").split("?");
  const params = new URLSearchParams(query || "");
  const route = routes.find(([pattern]) => pattern.test(path));
  markCurrent();
  const page = {
    ...ctx,
    every(ms, work) {
      let timer = null;
      const tick = async () => {
        if (mine !== generation) return;
        try { await work(); } catch (error) { console.warn(error); }
        if (mine === generation) timer = setTimeout(tick, ms);
      };
      timer = setTimeout(tick, ms);
      leaving.push(() => clearTimeout(timer));
    },
    refreshIn(ms) {
      const timer = setTimeout(() => { if (mine === generation) render(ctx, false); }, ms);
      leaving.push(() => clearTimeout(timer));
    },
    onLeave(fn) { leaving.push(fn); },
  };
  if (!route) {
    fill(main, h("h1", {}, "Not found"), h("p", {}, h("a", { href: "#/tokens" }, "Go to the tokens")));
    return;
  }
  const [pattern, draw] = route;
  const args = path.match(pattern).slice(1).map(decodeURIComponent);
  try {
    await draw(page, main, params, ...args);
  } catch (error) {
    console.error(error);
    if (mine !== generation) return;
    fill(main, h("h1", {}, error.status === 404 ? "Not found" : "Something went wrong"),
      h("div", { class: "notice bad", role: "alert" }, error.message || String(error)),
      h("p", {}, h("a", { href: "#/tokens" }, "Back to the tokens")));
  }
  // Which address the page now shows (tests wait for it).
  if (mine === generation) main.dataset.rendered = shown;
  if (focus && mine === generation) {
    const title = main.querySelector("h1");
    if (title) title.focus({ preventScroll: false });
  }
  document.title = `${(main.querySelector("h1") || {}).textContent || "adesync"} · adesync console`;
}

async function start() {
  const config = await (await fetch("/console/config.json", { cache: "no-store" })).json();
  const session = await signIn(config, main);
  if (!session) return;
  if (!location.hash || location.hash === "#") history.replaceState(null, "", `${location.pathname}#/tokens`);
  nav(session);
  const ctx = {
    session,
    toast,
    confirm: confirmDialog,
    go: (hash) => { if (location.hash === hash) render(ctx, true); else location.hash = hash; },
    reload: () => render(ctx, false),
  };
  ctx.api = new Api(session.token, () => {
    toast("Your session ended: sign in again.");
    session.signOut();
  });
  window.addEventListener("hashchange", () => render(ctx, true));
  await render(ctx, false);
  document.body.dataset.ready = "true";
}

start().catch((error) => {
  fill(main, h("h1", {}, "The console did not start"), h("div", { class: "notice bad", role: "alert" }, error.message));
});
