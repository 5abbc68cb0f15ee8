// Formatting helpers and a tiny DOM builder: every value from the API is
// put into the page as text (never as HTML).

/** h("p", {class: "x"}, "text", child, …): an element. */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === false || value === null || value === undefined) continue;
    if (name.startsWith("on") && typeof value === "function") {
      el.addEventListener(name.slice(2), value);
    } else if (value === true) {
      el.setAttribute(name, "");
    } else {
      el.setAttribute(name, String(value));
    }
  }
  append(el, children);
  return el;
}

/** Replaces el's children (null, false and nested arrays allowed, as in h). */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

const numbers = new Intl.NumberFormat("en");

export function count(n) {
  return n === null || n === undefined ? "—" : numbers.format(n);
}

/** A time as the reader's local date and time (with seconds when near). */
export function when(iso) {
  if (!iso) return "—";
  const date = new Date(iso);
  return date.toLocaleString("en-GB", {
    year: "numeric", month: "short", day: "numeric",
    hour: "2-digit", minute: "2-digit", second: "2-digit",
  });
}

export function clock(iso) {
  if (!iso) return "—";
  return new Date(iso).toLocaleTimeString("en-GB", { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

/** "in 14 min 5 s", "3 h ago". */
export function relative(iso, now = Date.now()) {
  if (!iso) return "";
  const seconds = Math.round((new Date(iso).getTime() - now) / 1000);
  const span = duration(Math.abs(seconds));
  return seconds >= 0 ? `in ${span}` : `${span} ago`;
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  seconds = Math.max(0, Math.round(seconds));
  if (seconds < 60) return `${seconds} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min ${seconds % 60} s`;
  const hours = Math.floor(minutes / 60);
  if (hours < 48) return `${hours} h ${minutes % 60} min`;
  return `${Math.floor(hours / 24)} days`;
}

/** A token's status in plain words, with what to do. */
export function tokenStatus(token) {
  const words = {
    ok: ["OK", "ok", "Syncs with Apple normally."],
    terms_not_signed: ["Apple's terms not accepted", "bad",
      "An administrator must accept Apple's latest terms and conditions in Apple Business; syncs fail until then."],
    token_invalid: ["Token no longer valid", "bad",
      "A newer token file was downloaded in Apple Business, or the token was revoked: download the newest file and renew."],
    expired: ["Expired", "bad", "Download a new token file in Apple Business and renew this token."],
  }[token.status] || [token.status, "warn", ""];
  return { label: words[0], tone: words[1], advice: token.status_message || words[2] };
}

export function runStatus(status) {
  return {
    running: ["fetching from Apple", "info"],
    importing: ["importing", "info"],
    succeeded: ["succeeded", "ok"],
    failed: ["failed", "bad"],
    abandoned: ["abandoned (no progress for 15 minutes)", "bad"],
  }[status] || [status, "warn"];
}

export function badge(text, tone) {
  return h("span", { class: `badge ${tone}` }, text);
}

export const DEVICE_STATES = {
  active: "active",
  removed_from_apple: "released from Apple Business",
  pending_reset: "retired, waiting for a factory reset",
};

export const ENROLLMENT_STATES = {
  not_enrolled: "not enrolled",
  enrolled: "enrolled",
  pending_reset: "retired (waiting for a factory reset)",
  wiped: "wiped (may enroll again)",
};

/** The seed's words on deleting a device (the API repeats them in its answer). */
export const DEVICE_DELETE_WARNING =
  "The device leaves management: its user loses access to corporate resources, and it must be wiped and re-enrolled to be managed again. " +
  "If it is still assigned to this MDM server in Apple Business it comes back on the next full sync: unassign it in Apple Business first to keep it away.";

/** The bytes of a file as base64 (the API's `token_file`). */
export async function fileBase64(file) {
  const bytes = new Uint8Array(await file.arrayBuffer());
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}
