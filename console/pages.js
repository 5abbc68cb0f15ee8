// The console's pages. Each renders into `main` from the API's answers;
// write controls (marked data-write) exist only for roles that may write.

import { ApiError } from "./api.js";
import {
  DEVICE_DELETE_WARNING, DEVICE_STATES, ENROLLMENT_STATES, badge, clock, count, duration,
  fileBase64, fill, h, relative, runStatus, tokenStatus, when,
} from "./format.js";

const enc = encodeURIComponent;

function heading(title, ...crumbs) {
  const title1 = h("h1", { tabindex: "-1" }, title);
  if (!crumbs.length) return [title1];
  return [h("p", { class: "crumbs" }, crumbs.flatMap((c, i) => (i ? [" › ", c] : [c]))), title1];
}

function problem(error) {
  return h("div", { class: "notice bad", role: "alert" }, error instanceof ApiError ? error.message : String(error.message || error));
}

// ------------------------------------------------------------------ tokens

export async function tokensPage(ctx, main, params) {
  const page = await ctx.api.tokens(params.get("cursor"));
  const statuses = await Promise.all(page.tokens.map((t) => ctx.api.syncStatus(t.id).catch(() => null)));
  const rows = page.tokens.map((token, i) => tokenRow(token, statuses[i]));
  fill(main, 
    ...heading("Tokens"),
    h("p", { class: "muted" }, "Each token links one MDM server in Apple Business to adesync. Devices sync every 12 hours (a full sync at most every 7 days); renew a token before it expires."),
    ctx.session.canWrite ? h("p", { class: "actions" }, h("a", { class: "button", href: "#/upload", "data-write": true }, "Upload a token"),
      h("a", { class: "button secondary", href: "#/public-key" }, "Download the public key")) : null,
    page.tokens.length === 0
      ? h("p", { class: "notice info", id: "no-tokens" }, "No tokens yet. Download the public key, upload it to an MDM server in Apple Business, then upload the token file Apple gives you.")
      : h("table", { id: "tokens" },
        h("caption", {}, `${page.tokens.length} token${page.tokens.length === 1 ? "" : "s"}${page.next_cursor ? " on this page" : ""}`),
        h("thead", {}, h("tr", {},
          ["Name", "Apple ID", "MDM server", "Status", "Devices", "Expires", "Last syncs", "Next syncs"].map((c) =>
            h("th", { scope: "col", class: c === "Devices" ? "num" : null }, c)))),
        h("tbody", {}, rows)),
    page.next_cursor ? h("p", { class: "pager" }, h("a", { class: "button secondary", href: `#/tokens?cursor=${enc(page.next_cursor)}` }, "Next page")) : null,
  );
  // A running sync moves the counts: read again while one runs.
  if (statuses.some((s) => s && s.state === "running")) ctx.refreshIn(3000);
}

function tokenRow(token, status) {
  const s = tokenStatus(token);
  return h("tr", { "data-token": token.id },
    h("td", {}, h("a", { href: `#/tokens/${enc(token.id)}` }, token.name)),
    h("td", {}, token.apple_id),
    h("td", {}, token.server_name, token.org_name ? h("div", { class: "hint" }, token.org_name) : null),
    h("td", {}, badge(s.label, s.tone), token.status === "ok" ? null : h("div", { class: "hint" }, s.advice)),
    h("td", { class: "num" }, count(token.device_count), token.sync_running ? h("div", {}, badge("syncing", "info")) : null),
    h("td", {}, when(token.expires_at).split(",")[0],
      h("div", { class: "hint" }, `${token.days_left} days left`),
      token.expiring_soon ? badge("renew within 30 days", "warn") : null),
    h("td", {}, lastSyncs(token, status)),
    h("td", {}, nextSyncs(status)),
  );
}

function lastSyncs(token, status) {
  return h("div", {},
    h("div", {}, "full: ", when(token.last_full_sync_at)),
    h("div", {}, "delta: ", when(token.last_delta_sync_at)),
    status && status.last_outcome ? h("div", { class: "hint" }, `last run ${status.last_outcome}`) : null);
}

function nextSyncs(status) {
  if (!status) return "—";
  if (status.state === "running") return badge("a sync is running", "info");
  return h("div", {},
    h("div", {}, `automatic ${status.next_sync_kind} within 12 h`),
    h("div", { class: "hint" }, status.next_manual_sync_at ? `manual from ${clock(status.next_manual_sync_at)}` : "manual: now"),
    h("div", { class: "hint" }, status.next_sync_is_full ? "next sync is full" : status.next_full_sync_at ? `full from ${when(status.next_full_sync_at)}` : "full: now"));
}

// ------------------------------------------------------------------- token

export async function tokenPage(ctx, main, params, id) {
  const [token, status, runs] = await Promise.all([ctx.api.token(id), ctx.api.syncStatus(id), ctx.api.runs(id)]);
  const s = tokenStatus(token);
  const syncSection = h("section", { class: "panel", "aria-labelledby": "sync-heading", id: "sync" });
  const runsSection = h("section", { "aria-labelledby": "runs-heading" });
  fill(main, 
    ...heading(token.name, h("a", { href: "#/tokens" }, "Tokens")),
    h("p", { class: "actions" },
      h("a", { class: "button secondary", href: `#/tokens/${enc(id)}/devices` }, `Devices (${count(token.device_count)})`),
      h("a", { class: "button secondary", href: `#/tokens/${enc(id)}/policies` }, `Policies (${count(token.policy_count)})`)),
    token.expiring_soon ? h("div", { class: "notice warn" }, `This token expires in ${token.days_left} days (${when(token.expires_at)}): download a new token file in Apple Business and renew it below.`) : null,
    token.status !== "ok" ? h("div", { class: "notice bad" }, h("strong", {}, s.label), ": ", s.advice) : null,
    h("dl", { class: "facts" },
      fact("Status", badge(s.label, s.tone)),
      fact("Apple ID", token.apple_id),
      fact("MDM server", `${token.server_name}${token.org_name ? ` (${token.org_name})` : ""}`),
      fact("Devices", h("span", { id: "device-count" }, count(status.device_count))),
      fact("Policies", count(token.policy_count)),
      fact("Expires", `${when(token.expires_at)} — ${token.days_left} days left`),
      fact("Last full sync", when(token.last_full_sync_at)),
      fact("Last delta sync", when(token.last_delta_sync_at)),
      fact("Last manual sync", when(token.last_manual_sync_at)),
      fact("Created", when(token.created_at)),
      token.renewed_at ? fact("Renewed", when(token.renewed_at)) : null,
      fact("Scope tags", token.scope_tags.length ? token.scope_tags.join(", ") : "none"),
      fact("Id", h("span", { class: "mono" }, token.id))),
    syncSection,
    runsSection,
    ctx.session.canWrite ? renewSection(ctx, token) : null,
    ctx.session.canWrite ? deleteSection(ctx, token) : null,
  );
  const state = { kind: "delta", status, runs: runs.runs, message: null };
  const draw = () => {
    fill(syncSection, ...syncPanel(ctx, token, state, draw));
    fill(runsSection, ...runsTable(state.runs));
    const counter = document.getElementById("device-count");
    if (counter) counter.textContent = count(state.status.device_count);
  };
  draw();
  // Poll: every second while a run goes (the progress bar), else every 15 s;
  // the cooldown's countdown is redrawn every second between reads.
  // When a run ends the whole page is read again (counts, last syncs).
  let last = Date.now();
  ctx.every(1000, async () => {
    const running = state.status.state === "running";
    if (running || Date.now() - last >= 15000) {
      last = Date.now();
      const [next, nextRuns] = await Promise.all([ctx.api.syncStatus(id), ctx.api.runs(id)]);
      state.status = next;
      state.runs = nextRuns.runs;
      if (running && next.state !== "running") {
        ctx.reload();
        return;
      }
    }
    draw();
  });
}

function fact(name, value) {
  return [h("dt", {}, name), h("dd", {}, value)];
}

function syncPanel(ctx, token, state, draw) {
  const { status } = state;
  // The status names the running run; once over, the newest run tells.
  const run = status.run || state.runs[0] || null;
  const running = status.state === "running";
  const now = Date.now();
  const parts = [h("h2", { id: "sync-heading" }, "Sync")];
  if (run) parts.push(progress(run, running && run.status !== "succeeded" && run.status !== "failed"));
  if (status.warnings && status.warnings.length) {
    parts.push(h("div", { class: "notice warn" }, status.warnings.join(" ")));
  }
  if (status.next_sync_is_full) {
    parts.push(h("p", { class: "hint" }, "The next sync will be a full one, whatever is asked: an earlier sync did not complete."));
  }
  if (!ctx.session.canWrite) {
    parts.push(h("p", { class: "hint" }, nextText(status, now)));
    return parts;
  }
  let reason = null;
  if (running) {
    reason = `A sync is running (started ${clock(run && run.started_at)}); Sync opens again when it ends.` +
      (run && run.lease_expires_at ? ` If it makes no progress it is abandoned at ${clock(run.lease_expires_at)}.` : "");
  } else if (status.next_manual_sync_at && new Date(status.next_manual_sync_at).getTime() > now) {
    reason = `Manual syncs are allowed once every 15 minutes: Sync opens again at ${clock(status.next_manual_sync_at)} (${relative(status.next_manual_sync_at, now)}).`;
  } else if (state.kind === "full" && !status.next_sync_is_full && status.next_full_sync_at && new Date(status.next_full_sync_at).getTime() > now) {
    reason = `A full sync is allowed once every 7 days: the next one from ${when(status.next_full_sync_at)} (${relative(status.next_full_sync_at, now)}). A delta sync is allowed now.`;
  }
  const select = h("select", { id: "sync-kind", "data-write": true, onchange: (e) => { state.kind = e.target.value; draw(); } },
    h("option", { value: "delta", selected: state.kind === "delta" }, "Delta (changes since the last sync)"),
    h("option", { value: "full", selected: state.kind === "full" }, "Full (every device; once every 7 days)"));
  const button = h("button", {
    type: "button", id: "sync-button", "data-write": true, disabled: reason !== null,
    "aria-describedby": reason ? "sync-reason" : null,
    onclick: async () => {
      button.disabled = true;
      try {
        const started = await ctx.api.startSync(token.id, state.kind);
        state.message = { tone: "good", text: `A ${started.kind} sync started (about ${duration(started.estimated_seconds)}).` };
      } catch (error) {
        state.message = { tone: "bad", text: error.message };
      }
      state.status = await ctx.api.syncStatus(token.id);
      state.runs = (await ctx.api.runs(token.id)).runs;
      draw();
    },
  }, "Sync");
  parts.push(h("div", { class: "actions" }, h("label", { for: "sync-kind", class: "check" }, "Kind"), select, button));
  if (reason) parts.push(h("p", { id: "sync-reason", class: "notice info" }, reason));
  if (state.message) parts.push(h("p", { class: `notice ${state.message.tone}`, id: "sync-message" }, state.message.text));
  return parts;
}

function nextText(status, now) {
  if (status.state === "running") return "A sync is running.";
  return status.next_manual_sync_at && new Date(status.next_manual_sync_at).getTime() > now
    ? `A manual sync is allowed again at ${clock(status.next_manual_sync_at)}.`
    : "A manual sync is allowed now.";
}

function progress(run, running) {
  const [label, tone] = runStatus(run.status);
  // While it goes: imported of the devices expected (unknown on a first
  // sync: of those fetched so far); once over: what the run fetched.
  const total = running ? run.expected_devices : run.fetched;
  const max = Math.max(total ?? run.fetched, run.imported, 1);
  const value = run.status === "succeeded" ? max : run.imported;
  const bar = h("progress", { id: "sync-progress", max, value, "aria-label": "Devices imported" });
  if (running && total === null && run.fetched === 0) bar.removeAttribute("value");
  const eta = running
    ? run.estimated_seconds_left === null ? "ETA unknown (Apple has not said how many devices yet)" : `ETA ${duration(run.estimated_seconds_left)}`
    : run.finished_at ? `took ${duration((new Date(run.finished_at) - new Date(run.started_at)) / 1000)}` : "";
  return h("div", { id: "run", "data-status": run.status },
    h("p", {}, `${running ? "Running" : "Last run"}: ${run.kind} sync (${run.trigger}${run.recovery ? ", recovery" : ""}) `, badge(label, tone)),
    bar,
    h("p", { class: "progress-text", id: "progress-text", "aria-live": "polite" },
      `${count(run.fetched)} fetched · ${count(run.imported)} imported${running && total !== null ? ` of ${count(total)}` : ""} · ${eta}` +
      (run.devices_per_minute ? ` · ${count(run.devices_per_minute)} devices/min` : "")),
    run.error ? h("div", { class: "notice bad" }, run.error) : null,
    run.warning ? h("div", { class: "notice warn" }, run.warning) : null);
}

function runsTable(runs) {
  return [
    h("h2", { id: "runs-heading" }, "Recent runs"),
    runs.length === 0 ? h("p", { class: "muted" }, "No run yet.") : h("table", { id: "runs" },
      h("thead", {}, h("tr", {}, ["Started", "Kind", "Trigger", "Status", "Fetched", "Imported", "Took", "Error or warning"].map((c) =>
        h("th", { scope: "col", class: ["Fetched", "Imported"].includes(c) ? "num" : null }, c)))),
      h("tbody", {}, runs.map((run) => {
        const [label, tone] = runStatus(run.status);
        return h("tr", {},
          h("td", {}, when(run.started_at)),
          h("td", {}, run.kind, run.recovery ? " (recovery)" : ""),
          h("td", {}, run.trigger),
          h("td", {}, badge(label, tone)),
          h("td", { class: "num" }, count(run.fetched)),
          h("td", { class: "num" }, count(run.imported)),
          h("td", {}, run.finished_at ? duration((new Date(run.finished_at) - new Date(run.started_at)) / 1000) : "—"),
          h("td", {}, run.error || run.warning || ""));
      }))),
  ];
}

function renewSection(ctx, token) {
  const appleId = h("input", { type: "text", id: "renew-apple-id", name: "apple_id", required: true, autocomplete: "off" });
  const file = h("input", { type: "file", id: "renew-file", name: "token_file", accept: ".p7m", required: true });
  const out = h("div", { id: "renew-result", "aria-live": "polite" });
  return h("section", { class: "panel", "aria-labelledby": "renew-heading" },
    h("h2", { id: "renew-heading" }, "Renew"),
    h("p", { class: "hint" }, "Download a new token file for this MDM server in Apple Business and upload it here right away: the new download invalidates the file in use. The token keeps its id, devices and policies."),
    h("form", {
      class: "stack", id: "renew-form", "data-write": true,
      onsubmit: async (event) => {
        event.preventDefault();
        if (appleId.value.trim().toLowerCase() !== token.apple_id.toLowerCase()) {
          fill(out, h("div", { class: "notice bad", role: "alert" },
            `This token was created with the Apple ID ${token.apple_id}; a renewal must use that Apple ID (Apple Business refuses another).`));
          return;
        }
        try {
          await ctx.api.put(`/v1/tokens/${enc(token.id)}/renewal`, { apple_id: appleId.value.trim(), token_file: await fileBase64(file.files[0]) });
          ctx.toast("The token was renewed.");
          ctx.reload();
        } catch (error) {
          fill(out, problem(error));
        }
      },
    },
    h("label", { for: "renew-apple-id" }, "Apple ID", h("span", { class: "hint" }, "The one that created the token"), appleId),
    h("label", { for: "renew-file" }, "New token file (.p7m)", file),
    h("div", {}, h("button", { type: "submit" }, "Renew")),
    out));
}

function deleteSection(ctx, token) {
  const out = h("div", { id: "delete-token-result", "aria-live": "polite" });
  const conditionWords = {
    devices_assigned: (n) => `${count(n)} device${n === 1 ? " is" : "s are"} assigned to the token: unassign them in Apple Business and sync.`,
    default_policy_devices: (n) => `${count(n)} device${n === 1 ? " is" : "s are"} assigned to its default policy.`,
    policies_exist: (n) => `${count(n)} enrollment polic${n === 1 ? "y exists" : "ies exist"}: delete them first.`,
  };
  return h("section", { class: "panel", "aria-labelledby": "delete-heading" },
    h("h2", { id: "delete-heading" }, "Delete"),
    h("p", { class: "hint" }, "Only a token with no devices, none assigned to its default policy, and no enrollment policies can be deleted."),
    h("button", {
      type: "button", class: "danger", id: "delete-token", "data-write": true,
      onclick: async () => {
        if (!(await ctx.confirm("Delete this token?", `${token.name} (${token.server_name}) will be unlinked from adesync.`, "Delete token"))) return;
        try {
          await ctx.api.delete(`/v1/tokens/${enc(token.id)}`);
          ctx.toast("The token was deleted.");
          ctx.go("#/tokens");
        } catch (error) {
          const conditions = (error.body && error.body.conditions) || [];
          fill(out, h("div", { class: "notice bad", role: "alert" },
            error.code === "token_not_empty" ? "The token cannot be deleted yet:" : error.message,
            conditions.length ? h("ul", {}, conditions.map((c) => h("li", {}, (conditionWords[c.condition] || ((n) => `${c.condition}: ${n}`))(c.count)))) : null));
        }
      },
    }, "Delete token"),
    out);
}

// ----------------------------------------------------------------- devices

export async function devicesPage(ctx, main, params, id) {
  const filter = { state: params.get("state") || "", policy: params.get("policy") || "", cursor: params.get("cursor") || "" };
  const [token, policies, page] = await Promise.all([ctx.api.token(id), ctx.api.policies(id), ctx.api.devices(id, filter)]);
  const policyName = new Map(policies.policies.map((p) => [p.id, p.name]));
  const here = (changes) => {
    const next = new URLSearchParams({ ...filter, ...changes });
    for (const [k, v] of [...next]) if (!v) next.delete(k);
    return `#/tokens/${enc(id)}/devices${next.toString() ? `?${next}` : ""}`;
  };
  const stateSelect = h("select", { id: "filter-state", onchange: (e) => ctx.go(here({ state: e.target.value, cursor: "" })) },
    h("option", { value: "" }, "all listed"),
    Object.entries(DEVICE_STATES).map(([v, label]) => h("option", { value: v, selected: filter.state === v }, label)));
  const policySelect = h("select", { id: "filter-policy", onchange: (e) => ctx.go(here({ policy: e.target.value, cursor: "" })) },
    h("option", { value: "" }, "any policy"),
    policies.policies.map((p) => h("option", { value: p.id, selected: filter.policy === p.id }, p.name)));
  const out = h("div", { id: "device-result", "aria-live": "polite" });
  fill(main, 
    ...heading(`Devices of ${token.name}`, h("a", { href: "#/tokens" }, "Tokens"), h("a", { href: `#/tokens/${enc(id)}` }, token.name)),
    h("div", { class: "filters" },
      h("label", { for: "filter-state" }, "State", stateSelect),
      h("label", { for: "filter-policy" }, "Policy", policySelect),
      h("span", { class: "muted" }, `${count(token.device_count)} listed devices in all`)),
    out,
    page.devices.length === 0
      ? h("p", { class: "muted", id: "no-devices" }, page.next_cursor ? "None on this page; the next page may hold some." : "No device matches.")
      : h("table", { id: "devices" },
        h("thead", {}, h("tr", {}, ["Serial number", "Model", "OS", "State", "Enrollment", "Policy", "Assignment", ctx.session.canWrite ? "Actions" : null]
          .filter(Boolean).map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", {}, page.devices.map((d) => deviceRow(ctx, id, d, policyName, out)))),
    h("p", { class: "pager" },
      filter.cursor ? h("a", { class: "button secondary", href: here({ cursor: "" }) }, "First page") : null,
      page.next_cursor ? h("a", { class: "button secondary", id: "next-page", href: here({ cursor: page.next_cursor }) }, "Next page") : null),
  );
}

function deviceRow(ctx, tokenId, d, policyName, out) {
  const actions = [];
  if (ctx.session.canWrite) {
    const act = (action, label) => h("button", {
      type: "button", class: "secondary", "data-write": true, "data-action": action,
      onclick: async () => {
        try {
          await ctx.api.post(`/v1/tokens/${enc(tokenId)}/devices/${enc(d.id)}/actions/${action}`);
          ctx.toast(`${label} recorded for ${d.id}.`);
          ctx.reload();
        } catch (error) { fill(out, problem(error)); }
      },
    }, label);
    if (d.enrollment_state === "enrolled") actions.push(act("wipe", "Wipe"), act("retire", "Retire"));
    if (d.enrollment_state === "pending_reset") actions.push(act("factory-reset", "Factory reset"));
    actions.push(h("button", {
      type: "button", class: "danger", "data-write": true, "data-delete": d.id, "aria-label": `Delete ${d.id}`,
      onclick: async () => {
        if (!(await ctx.confirm(`Delete ${d.id}?`, DEVICE_DELETE_WARNING, "Delete device"))) return;
        try {
          const answer = await ctx.api.delete(`/v1/tokens/${enc(tokenId)}/devices/${enc(d.id)}`);
          ctx.toast(`${d.id} was deleted. ${answer.warning}`);
          ctx.reload();
        } catch (error) { fill(out, problem(error)); }
      },
    }, "Delete"));
  }
  return h("tr", { "data-serial": d.id },
    h("td", { class: "mono" }, d.serial_number),
    h("td", {}, d.model || d.description || "—", d.device_family ? h("div", { class: "hint" }, d.device_family) : null),
    h("td", {}, d.os || "—"),
    h("td", {}, DEVICE_STATES[d.state] || d.state, d.deletes_at ? h("div", { class: "hint" }, `deleted automatically ${when(d.deletes_at)}`) : null),
    h("td", {}, ENROLLMENT_STATES[d.enrollment_state] || d.enrollment_state),
    h("td", {}, d.policy_id ? policyName.get(d.policy_id) || d.policy_id : "none"),
    h("td", {}, d.assignment ? d.assignment.status : "—"),
    ctx.session.canWrite ? h("td", {}, h("div", { class: "actions" }, actions)) : null);
}

// ---------------------------------------------------------------- policies

const POLICY_FIELDS = [
  ["name", "Name", "text", "Shown on the device during Setup Assistant."],
  ["url", "MDM enrollment URL", "url", "https://…"],
  ["department", "Department", "text", ""],
  ["support_phone_number", "Support phone", "text", ""],
  ["support_email_address", "Support e-mail", "email", ""],
];
const POLICY_FLAGS = [
  ["user_affinity", "Enroll with user affinity (the user needs a license)"],
  ["is_supervised", "Supervised"],
  ["is_mandatory", "Enrollment is mandatory"],
  ["is_mdm_removable", "The user may remove the management profile"],
];

export async function policiesPage(ctx, main, params, id) {
  const [token, list] = await Promise.all([ctx.api.token(id), ctx.api.policies(id)]);
  const editing = params.get("edit");
  const out = h("div", { id: "policy-result", "aria-live": "polite" });
  const rows = list.policies.map((p) => h("tr", { "data-policy": p.id },
    h("td", {}, p.name, p.is_default ? [" ", badge("default", "ok")] : null),
    h("td", { class: "mono" }, p.url),
    h("td", { class: "num" }, count(p.device_count)),
    h("td", {}, p.user_affinity ? "yes" : "no"),
    h("td", {}, p.profile_error ? badge(p.profile_error, "bad") : p.profile_uuid ? "defined in Apple" : "not defined yet",
      p.reassign_pending ? h("div", { class: "hint" }, "devices moving to the new profile") : null),
    ctx.session.canWrite ? h("td", {}, h("div", { class: "actions" },
      h("a", { class: "button secondary", href: `#/tokens/${enc(id)}/policies?edit=${enc(p.id)}`, "data-write": true }, "Edit"),
      p.is_default ? null : h("button", {
        type: "button", class: "secondary", "data-write": true, "data-make-default": p.id,
        onclick: async () => {
          try {
            await ctx.api.put(`/v1/tokens/${enc(id)}/default-policy`, { policy_id: p.id });
            ctx.toast(`${p.name} is now the default policy: newly synced devices get it.`);
            ctx.reload();
          } catch (error) { fill(out, problem(error)); }
        },
      }, "Make default"),
      h("button", {
        type: "button", class: "danger", "data-write": true,
        onclick: async () => {
          if (!(await ctx.confirm(`Delete ${p.name}?`, "Only a policy no device is assigned to can be deleted.", "Delete policy"))) return;
          try {
            await ctx.api.delete(`/v1/tokens/${enc(id)}/policies/${enc(p.id)}`);
            ctx.reload();
          } catch (error) { fill(out, problem(error)); }
        },
      }, "Delete"))) : null));
  const current = editing ? list.policies.find((p) => p.id === editing) : null;
  fill(main, 
    ...heading(`Enrollment policies of ${token.name}`, h("a", { href: "#/tokens" }, "Tokens"), h("a", { href: `#/tokens/${enc(id)}` }, token.name)),
    h("p", { class: "muted" }, "The settings a device receives at Setup Assistant. Devices a sync brings without a policy get the default policy."),
    out,
    list.policies.length === 0 ? h("p", { class: "muted", id: "no-policies" }, "No policy yet.") : h("table", { id: "policies" },
      h("thead", {}, h("tr", {}, ["Name", "Enrollment URL", "Devices", "User affinity", "Apple profile", ctx.session.canWrite ? "Actions" : null]
        .filter(Boolean).map((c) => h("th", { scope: "col", class: c === "Devices" ? "num" : null }, c)))),
      h("tbody", {}, rows)),
    ctx.session.canWrite ? policyForm(ctx, id, current, out) : null,
    ctx.session.canWrite && list.policies.length ? assignForm(ctx, id, list.policies, out) : null,
  );
}

function policyForm(ctx, tokenId, policy, out) {
  const inputs = {};
  const fields = POLICY_FIELDS.map(([name, label, type, hint]) => {
    inputs[name] = h("input", { type, id: `policy-${name}`, name, required: name === "name" || name === "url", value: policy && policy[name] !== undefined ? policy[name] : "" });
    return h("label", { for: `policy-${name}` }, label, hint ? h("span", { class: "hint" }, hint) : null, inputs[name]);
  });
  const flags = POLICY_FLAGS.map(([name, label]) => {
    inputs[name] = h("input", { type: "checkbox", id: `policy-${name}`, name, checked: Boolean(policy && policy[name]) });
    return h("label", { class: "check", for: `policy-${name}` }, inputs[name], label);
  });
  return h("section", { class: "panel", "aria-labelledby": "policy-form-heading" },
    h("h2", { id: "policy-form-heading" }, policy ? `Edit ${policy.name}` : "New policy"),
    h("form", {
      class: "stack", id: "policy-form", "data-write": true,
      onsubmit: async (event) => {
        event.preventDefault();
        const body = {};
        for (const [name] of POLICY_FIELDS) {
          const value = inputs[name].value.trim();
          if (value) body[name] = value;
          else if (policy && policy[name] !== undefined) body[name] = null;
        }
        for (const [name] of POLICY_FLAGS) {
          const checked = inputs[name].checked;
          if (checked || (policy && policy[name] !== undefined) || name === "user_affinity") body[name] = checked;
        }
        if (body.is_mdm_removable === false && !body.is_supervised && !(policy && policy.is_mdm_removable !== undefined)) delete body.is_mdm_removable;
        try {
          if (policy) await ctx.api.patch(`/v1/tokens/${enc(tokenId)}/policies/${enc(policy.id)}`, body);
          else await ctx.api.post(`/v1/tokens/${enc(tokenId)}/policies`, body);
          ctx.toast(policy ? "The policy was saved." : "The policy was created.");
          ctx.go(`#/tokens/${enc(tokenId)}/policies`);
        } catch (error) {
          fill(out, problem(error));
          out.scrollIntoView();
        }
      },
    }, fields, flags,
    h("div", { class: "actions" }, h("button", { type: "submit", id: "policy-save" }, policy ? "Save" : "Create policy"),
      policy ? h("a", { class: "button secondary", href: `#/tokens/${enc(tokenId)}/policies` }, "Cancel") : null)));
}

function assignForm(ctx, tokenId, policies, out) {
  const select = h("select", { id: "assign-policy" }, policies.map((p) => h("option", { value: p.id }, p.name)));
  const serials = h("textarea", { id: "assign-serials", required: true, spellcheck: "false" });
  return h("section", { class: "panel", "aria-labelledby": "assign-heading" },
    h("h2", { id: "assign-heading" }, "Assign devices"),
    h("form", {
      class: "stack", id: "assign-form", "data-write": true,
      onsubmit: async (event) => {
        event.preventDefault();
        const list = serials.value.split(/[\s,;]+/).filter(Boolean);
        try {
          const report = await ctx.api.post(`/v1/tokens/${enc(tokenId)}/policies/${enc(select.value)}/devices`, { serials: list });
          const s = report.summary;
          fill(out, h("div", { class: "notice good" },
            `Assigned in adesync: ${count(list.length)}. Apple: ${s.assigned} assigned, ${s.pending} pending, ${s.failed} failed, ${s.throttled} throttled, ${s.not_accessible} not accessible.`,
            report.warning ? h("div", {}, report.warning) : null));
        } catch (error) {
          fill(out, problem(error), error.body && error.body.serials ? h("p", { class: "mono" }, error.body.serials.join(" ")) : null);
        }
      },
    },
    h("label", { for: "assign-policy" }, "Policy", select),
    h("label", { for: "assign-serials" }, "Serial numbers", h("span", { class: "hint" }, "One per line, or separated by spaces or commas (at most 5,000)."), serials),
    h("div", {}, h("button", { type: "submit" }, "Assign"))));
}

// ------------------------------------------------------- public key, upload

export async function publicKeyPage(ctx, main) {
  const pem = await ctx.api.publicKey();
  const url = URL.createObjectURL(new Blob([pem], { type: "application/x-pem-file" }));
  ctx.onLeave(() => URL.revokeObjectURL(url));
  fill(main, 
    ...heading("Public key"),
    h("ol", {},
      h("li", {}, "Download this account's public key certificate."),
      h("li", {}, "In Apple Business, open the MDM server (or add one) and upload the certificate."),
      h("li", {}, "Download the server token file (.p7m) Apple then offers; it is encrypted to this key."),
      h("li", {}, ctx.session.canWrite ? h("a", { href: "#/upload" }, "Upload the token file") : "An administrator uploads the token file", ".")),
    h("p", {}, h("a", { class: "button", id: "download-key", href: url, download: "adesync-public-key.pem" }, "Download the public key (PEM)")),
    h("pre", { class: "pem", id: "pem" }, pem),
  );
}

export async function uploadPage(ctx, main) {
  if (!ctx.session.canWrite) {
    fill(main, ...heading("Upload a token"), h("p", {}, "Uploading a token needs the admin or dem role."));
    return;
  }
  const name = h("input", { type: "text", id: "upload-name", name: "name", required: true });
  const appleId = h("input", { type: "text", id: "upload-apple-id", name: "apple_id", required: true, autocomplete: "off" });
  const file = h("input", { type: "file", id: "upload-file", name: "token_file", accept: ".p7m", required: true });
  const tags = h("input", { type: "text", id: "upload-tags", name: "scope_tags" });
  const out = h("div", { id: "upload-result", "aria-live": "polite" });
  const submit = h("button", { type: "submit", id: "upload-submit" }, "Upload");
  fill(main, 
    ...heading("Upload a token"),
    h("p", { class: "muted" }, "Upload the server token file you downloaded from Apple Business (", h("a", { href: "#/public-key" }, "encrypted to this account's public key"), "). adesync checks it with Apple and starts the token's first full sync."),
    h("form", {
      class: "stack", id: "upload-form", "data-write": true,
      onsubmit: async (event) => {
        event.preventDefault();
        submit.disabled = true;
        fill(out, h("p", { class: "muted" }, "Checking the token with Apple…"));
        try {
          const body = { name: name.value.trim(), apple_id: appleId.value.trim(), token_file: await fileBase64(file.files[0]) };
          const list = tags.value.split(/[\s,]+/).filter(Boolean);
          if (list.length) body.scope_tags = list;
          const created = await ctx.api.post("/v1/tokens", body);
          ctx.toast(created.first_sync && created.first_sync.queued ? "Token created; its first full sync is running." : "Token created.");
          ctx.go(`#/tokens/${enc(created.id)}`);
        } catch (error) {
          submit.disabled = false;
          const extra = error.code === "token_exists" && error.body.token_id
            ? h("p", {}, "Renew ", h("a", { href: `#/tokens/${enc(error.body.token_id)}` }, "the existing token"), " instead.") : null;
          fill(out, problem(error), extra);
        }
      },
    },
    h("label", { for: "upload-name" }, "Name", h("span", { class: "hint" }, "How adesync shows the token."), name),
    h("label", { for: "upload-apple-id" }, "Apple ID", h("span", { class: "hint" }, "The Apple ID that downloaded the file; renewals must use the same one."), appleId),
    h("label", { for: "upload-file" }, "Token file (.p7m)", file),
    h("label", { for: "upload-tags" }, "Scope tags (optional)", h("span", { class: "hint" }, "Separated by spaces or commas."), tags),
    h("div", {}, submit),
    out),
  );
}
