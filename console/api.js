// The adesync HTTP API (docs/openapi.yaml) on the console's own origin.

export class ApiError extends Error {
  constructor(status, body, headers) {
    super((body && body.message) || `The API answered ${status}.`);
    this.status = status;
    this.code = (body && body.error) || "error";
    this.body = body || {};
    this.retryAfter = Number(headers.get("Retry-After")) || null;
  }
}

export class Api {
  /** bearer(): the access token; onUnauthorized(): the session ended. */
  constructor(bearer, onUnauthorized) {
    this.bearer = bearer;
    this.onUnauthorized = onUnauthorized;
  }

  async request(method, path, body, accept = "application/json") {
    const headers = { Authorization: `Bearer ${this.bearer()}`, Accept: accept };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    });
    const text = await response.text();
    let parsed = null;
    if (text) {
      try { parsed = JSON.parse(text); } catch { parsed = text; }
    }
    if (!response.ok) {
      const error = new ApiError(response.status, typeof parsed === "object" ? parsed : null, response.headers);
      if (response.status === 401) this.onUnauthorized(error);
      throw error;
    }
    return parsed;
  }

  get(path) { return this.request("GET", path); }
  post(path, body) { return this.request("POST", path, body); }
  put(path, body) { return this.request("PUT", path, body); }
  patch(path, body) { return this.request("PATCH", path, body); }
  delete(path) { return this.request("DELETE", path); }

  tokens(cursor) {
    const query = new URLSearchParams({ limit: "50" });
    if (cursor) query.set("cursor", cursor);
    return this.get(`/v1/tokens?${query}`);
  }
  token(id) { return this.get(`/v1/tokens/${encodeURIComponent(id)}`); }
  syncStatus(id) { return this.get(`/v1/tokens/${encodeURIComponent(id)}/sync`); }
  runs(id) { return this.get(`/v1/tokens/${encodeURIComponent(id)}/runs?limit=10`); }
  startSync(id, kind) { return this.post(`/v1/tokens/${encodeURIComponent(id)}/sync`, { kind }); }
  devices(id, { state, policy, cursor }) {
    const query = new URLSearchParams({ limit: "50" });
    if (state) query.set("state", state);
    if (policy) query.set("policy_id", policy);
    if (cursor) query.set("cursor", cursor);
    return this.get(`/v1/tokens/${encodeURIComponent(id)}/devices?${query}`);
  }
  policies(id) { return this.get(`/v1/tokens/${encodeURIComponent(id)}/policies`); }
  publicKey() { return this.request("GET", "/v1/public-key", undefined, "application/x-pem-file"); }
}
