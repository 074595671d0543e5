// ipc-router console: a live view of the registry, from the admin API and its event
// stream. Plain JavaScript, no build step, nothing from elsewhere.
//
// How it stays right: the event stream (GET /api/v1/admin/events, read with fetch() so
// that the admin token travels in the Authorization header, never in a URL) starts with
// `event: resync` unless it continues where the last connection left off; a resync
// means "read a snapshot (GET /services), then apply the events that follow". A
// service's instances are read when it is chosen or when an event about it arrives,
// and from then on kept up to date from the events alone; an event whose
// previous_revision does not follow the last one seen for its service means one was
// missed, and that service is read again.
"use strict";

(() => {
  const API = "/api/v1/admin";
  const TOKEN_KEY = "ipc-router.admin-token";
  const STATUSES = ["ONLINE", "UNHEALTHY", "OFFLINE"];
  const SILENCE_LIMIT_MS = 45000; // the server sends a keepalive every 15 s
  const MAX_RETRY_MS = 15000;

  const $ = (id) => document.getElementById(id);

  const state = {
    token: sessionStorage.getItem(TOKEN_KEY),
    synced: false, // a snapshot has been read since the last resync
    generation: 0, // +1 per resync: a newer one wins over an older one still loading
    epoch: null,
    revision: 0,
    services: new Map(), // name -> service record (see newService)
    pending: [], // events that arrived while a snapshot was being read
    selected: null,
    lastEventId: null,
    filter: "",
    retryMs: 1000,
    controller: null,
    renderTimer: null,
    policy: null,
    role: null,
    seen: 0, // the newest revision shown (snapshot or event)
    staleEpochs: new Set(),
  };

  class Unauthorized extends Error {}

  // -- HTTP ---------------------------------------------------------------------------

  function authHeaders(extra) {
    const headers = Object.assign({}, extra);
    if (state.token) headers.Authorization = "Bearer " + state.token;
    return headers;
  }

  async function getJson(path, { allow404 = false } = {}) {
    const response = await fetch(path, {
      headers: authHeaders({ Accept: "application/json" }),
      cache: "no-store",
    });
    if (response.status === 401) throw new Unauthorized("the admin token was refused");
    if (allow404 && response.status === 404) return null;
    if (!response.ok) {
      let message = response.statusText;
      try {
        message = (await response.json()).error.message;
      } catch (_) {
        /* not the JSON error body: keep the status text */
      }
      throw new Error(`HTTP ${response.status}: ${message}`);
    }
    return response.json();
  }

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  async function readServiceList() {
    const services = [];
    let cursor = null;
    let first = null;
    do {
      const query = "limit=1000" + (cursor ? "&cursor=" + encodeURIComponent(cursor) : "");
      const page = await getJson(`${API}/services?${query}`);
      if (first === null) first = page;
      services.push(...page.services);
      cursor = page.next_cursor;
    } while (cursor);
    return { epoch: first.epoch, revision: first.revision, services };
  }

  async function readService(name) {
    const instances = new Map();
    let cursor = null;
    let first = null;
    do {
      const query = "status=any&limit=1000" + (cursor ? "&cursor=" + encodeURIComponent(cursor) : "");
      const page = await getJson(`${API}/services/${encodeURIComponent(name)}?${query}`, {
        allow404: true,
      });
      if (page === null) return null;
      if (first === null) first = page;
      for (const instance of page.instances) instances.set(instance.instance_id, instance);
      cursor = page.next_cursor;
    } while (cursor);
    return {
      epoch: first.epoch,
      revision: first.revision,
      serviceRevision: first.service_revision,
      instances,
    };
  }

  // -- the model ------------------------------------------------------------------------

  function newService(name, summary) {
    return {
      name,
      counts: summary ? Object.assign({}, summary.status_counts) : {},
      detail: null, // {revision, serviceRevision, instances: Map} once read
      loading: null,
      queued: [],
      reloads: 0,
    };
  }

  function countsOf(service) {
    if (!service.detail) return service.counts;
    const counts = {};
    for (const instance of service.detail.instances.values()) {
      counts[instance.status] = (counts[instance.status] || 0) + 1;
    }
    return counts;
  }

  async function resync(reason, want) {
    const generation = ++state.generation;
    state.synced = false;
    showConnection(state.controller ? "syncing" : "connecting", "Syncing…");
    let snapshot = null;
    // A standby router's registry may lag the events by a moment: read until the
    // snapshot has caught up with what the stream has shown (bounded).
    for (let attempt = 0; attempt < 20; attempt += 1) {
      snapshot = await readServiceList();
      const behind =
        want &&
        ((want.epoch && snapshot.epoch !== want.epoch) ||
          (typeof want.revision === "number" && snapshot.revision < want.revision));
      if (!behind) break;
      await sleep(250);
    }
    if (generation !== state.generation) return; // a newer resync took over
    if (want && want.epoch && snapshot.epoch !== want.epoch) state.staleEpochs.add(want.epoch);
    state.services = new Map();
    for (const summary of snapshot.services) {
      state.services.set(summary.service_name, newService(summary.service_name, summary));
    }
    state.epoch = snapshot.epoch;
    state.revision = snapshot.revision;
    state.seen = snapshot.revision;
    state.synced = true;
    if (state.selected) ensureLoaded(serviceNamed(state.selected));
    const pending = state.pending;
    state.pending = [];
    for (const event of pending) applyEvent(event);
    readHealth();
    showConnection("live", "Live");
    scheduleRender();
  }

  function serviceNamed(name) {
    let service = state.services.get(name);
    if (!service) {
      service = newService(name, null);
      state.services.set(name, service);
    }
    return service;
  }

  function ensureLoaded(service) {
    if (service.detail || service.loading) return;
    const generation = state.generation;
    service.loading = readService(service.name)
      .then((detail) => {
        if (generation !== state.generation || state.services.get(service.name) !== service) return;
        service.loading = null;
        service.detail = detail
          ? { revision: detail.revision, serviceRevision: detail.serviceRevision, instances: detail.instances }
          : { revision: -1, serviceRevision: null, instances: new Map() };
        const queued = service.queued.sort((a, b) => a.revision - b.revision);
        service.queued = [];
        for (const event of queued) applyEvent(event);
        if (!detail && service.detail.instances.size === 0 && service.name !== state.selected) {
          state.services.delete(service.name);
        }
        scheduleRender();
      })
      .catch((error) => {
        service.loading = null;
        if (error instanceof Unauthorized) return askForToken("The admin token was refused.");
        reconnect(`could not read service ${service.name}: ${error.message}`);
      });
  }

  function applyEvent(event) {
    if (!state.synced) {
      state.pending.push(event);
      return;
    }
    if (state.staleEpochs.has(event.epoch)) return; // of a registry no router serves
    if (state.epoch && event.epoch !== state.epoch) {
      // The registry started afresh (a new epoch): everything is read again.
      state.pending.push(event);
      resync("a new registry epoch", { epoch: event.epoch, revision: event.revision }).catch(failed);
      return;
    }
    const service = serviceNamed(event.instance.service_name);
    const detail = service.detail;
    if (!detail) {
      service.queued.push(event);
      ensureLoaded(service);
      return;
    }
    if (event.revision <= detail.revision) return; // already in what was read
    if (
      detail.serviceRevision !== null &&
      event.previous_revision !== detail.serviceRevision &&
      service.reloads < 5
    ) {
      // An event of this service was missed: read it again (a few times at most).
      service.reloads += 1;
      service.detail = null;
      service.queued.push(event);
      ensureLoaded(service);
      return;
    }
    service.reloads = 0;
    const id = event.instance.instance_id;
    if (event.type === "removed") detail.instances.delete(id);
    else detail.instances.set(id, event.instance);
    detail.revision = event.revision;
    detail.serviceRevision = event.revision;
    state.seen = Math.max(state.seen, event.revision);
    if (detail.instances.size === 0 && event.type === "removed" && service.name !== state.selected) {
      state.services.delete(service.name);
    }
    scheduleRender();
  }

  // -- the event stream -----------------------------------------------------------------

  function parseFrames(onFrame) {
    let buffer = "";
    let data = [];
    let type = "";
    let id = null;
    return (text) => {
      buffer += text;
      let newline;
      while ((newline = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, newline).replace(/\r$/, "");
        buffer = buffer.slice(newline + 1);
        if (line === "") {
          if (data.length) onFrame({ type: type || "message", data: data.join("\n"), id });
          data = [];
          type = "";
          id = null;
        } else if (!line.startsWith(":")) {
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          let value = colon < 0 ? "" : line.slice(colon + 1);
          if (value.startsWith(" ")) value = value.slice(1);
          if (field === "data") data.push(value);
          else if (field === "event") type = value;
          else if (field === "id") id = value;
        }
      }
    };
  }

  function onFrame(frame) {
    if (frame.type === "resync") {
      let info = {};
      try {
        info = JSON.parse(frame.data);
      } catch (_) {
        /* an empty resync is a resync all the same */
      }
      state.pending = [];
      resync(info.reason, { epoch: null, revision: info.revision }).catch(failed);
      return;
    }
    if (frame.type !== "message") return;
    let event;
    try {
      event = JSON.parse(frame.data);
    } catch (_) {
      return;
    }
    if (frame.id !== null) state.lastEventId = frame.id;
    applyEvent(event);
  }

  async function stream() {
    for (;;) {
      const controller = new AbortController();
      state.controller = controller;
      let silence = null;
      const heard = () => {
        clearTimeout(silence);
        silence = setTimeout(() => controller.abort(), SILENCE_LIMIT_MS);
      };
      try {
        const headers = authHeaders({ Accept: "text/event-stream" });
        // Continue where we left off only from a state that was complete.
        if (state.synced && state.lastEventId !== null) headers["Last-Event-ID"] = state.lastEventId;
        else state.synced = false;
        const response = await fetch(`${API}/events`, {
          headers,
          cache: "no-store",
          signal: controller.signal,
        });
        if (response.status === 401) {
          askForToken(state.token ? "The admin token was refused." : "");
          return;
        }
        if (!response.ok || !response.body) throw new Error(`the event stream answered HTTP ${response.status}`);
        showConsole();
        state.retryMs = 1000;
        if (state.synced) showConnection("live", "Live");
        heard();
        const feed = parseFrames(onFrame);
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          heard();
          feed(value);
        }
        throw new Error("the event stream ended");
      } catch (error) {
        clearTimeout(silence);
        const wait = state.retryMs;
        state.retryMs = Math.min(state.retryMs * 2, MAX_RETRY_MS);
        showConnection("disconnected", `Disconnected — reconnecting in ${Math.round(wait / 1000)} s`);
        console.warn("event stream:", error && error.message ? error.message : error);
        await sleep(wait);
        showConnection("connecting", "Reconnecting…");
      }
    }
  }

  function reconnect(why) {
    console.warn("reconnecting:", why);
    state.synced = false;
    if (state.controller) state.controller.abort();
  }

  function failed(error) {
    if (error instanceof Unauthorized) {
      askForToken("The admin token was refused.");
      return;
    }
    reconnect(error && error.message ? error.message : String(error));
  }

  async function readHealth() {
    try {
      const response = await fetch("/healthz", { cache: "no-store" });
      const health = await response.json();
      state.policy = health.lease_policy || null;
      state.role = health.role || null;
      scheduleRender();
    } catch (_) {
      /* the header line is a nicety */
    }
  }

  function renderMeta() {
    const parts = [];
    if (state.role) parts.push(`role ${state.role}`);
    if (state.policy) parts.push(`lease TTL ${state.policy.lease_ttl} s`);
    if (state.synced) parts.push(`revision ${state.seen}`);
    $("registry-meta").textContent = parts.join(" · ");
  }

  // -- the token ------------------------------------------------------------------------

  function askForToken(message) {
    if (state.controller) state.controller.abort();
    state.controller = null;
    sessionStorage.removeItem(TOKEN_KEY);
    state.token = null;
    $("console").hidden = true;
    $("token-form").hidden = false;
    $("token-error").textContent = message || "";
    showConnection("disconnected", "Token needed");
    $("token-input").focus();
  }

  function showConsole() {
    $("token-form").hidden = true;
    $("console").hidden = false;
  }

  $("token-form").addEventListener("submit", (submitted) => {
    submitted.preventDefault();
    const token = $("token-input").value.trim();
    if (!token) return;
    state.token = token;
    sessionStorage.setItem(TOKEN_KEY, token);
    $("token-input").value = "";
    $("token-error").textContent = "";
    showConnection("connecting", "Connecting…");
    state.synced = false;
    stream();
  });

  // -- rendering ------------------------------------------------------------------------

  function showConnection(kind, text) {
    $("connection").dataset.state = kind;
    $("connection-text").textContent = text;
  }

  function scheduleRender() {
    if (state.renderTimer === null) {
      state.renderTimer = setTimeout(() => {
        state.renderTimer = null;
        render();
      }, 30);
    }
  }

  function element(tag, options, children) {
    const node = document.createElement(tag);
    if (options) {
      for (const [key, value] of Object.entries(options)) {
        if (key === "text") node.textContent = value;
        else if (key === "className") node.className = value;
        else node.setAttribute(key, value);
      }
    }
    for (const child of children || []) node.append(child);
    return node;
  }

  // Puts `rows` (in order) into `body`, moving none that is already in place, so that a
  // focused button keeps its focus while rows come and go.
  function placeRows(body, rows) {
    const wanted = new Set(rows);
    for (const row of Array.from(body.children)) if (!wanted.has(row)) row.remove();
    let cursor = body.firstElementChild;
    for (const row of rows) {
      if (row === cursor) cursor = cursor.nextElementSibling;
      else body.insertBefore(row, cursor);
    }
  }

  const serviceRows = new Map();
  const instanceRows = new Map();

  function serviceRow(name) {
    let row = serviceRows.get(name);
    if (!row) {
      const button = element("button", { type: "button", className: "service-button", text: name });
      button.addEventListener("click", () => select(name, true));
      row = element("tr", { "data-service": name }, [
        element("td", { "data-label": "Service" }, [button]),
        element("td", { className: "num", "data-label": "Instances" }),
        element("td", { className: "num", "data-label": "Online" }),
        element("td", { className: "num", "data-label": "Unhealthy" }),
        element("td", { className: "num", "data-label": "Offline" }),
      ]);
      serviceRows.set(name, row);
    }
    return row;
  }

  function render() {
    const names = Array.from(state.services.keys()).sort();
    const filter = state.filter.toLowerCase();
    const totals = { ONLINE: 0, UNHEALTHY: 0, OFFLINE: 0 };
    const rows = [];
    for (const name of names) {
      const counts = countsOf(state.services.get(name));
      let total = 0;
      for (const status of STATUSES) {
        totals[status] += counts[status] || 0;
        total += counts[status] || 0;
      }
      if (filter && !name.toLowerCase().includes(filter)) continue;
      const row = serviceRow(name);
      const cells = row.children;
      cells[1].textContent = String(total);
      cells[2].textContent = String(counts.ONLINE || 0);
      cells[3].textContent = String(counts.UNHEALTHY || 0);
      cells[3].classList.toggle("count-unhealthy", (counts.UNHEALTHY || 0) > 0);
      cells[4].textContent = String(counts.OFFLINE || 0);
      row.setAttribute("aria-current", name === state.selected ? "true" : "false");
      rows.push(row);
    }
    for (const name of serviceRows.keys()) if (!state.services.has(name)) serviceRows.delete(name);
    placeRows($("services-body"), rows);
    $("services-empty").hidden = rows.length > 0;
    $("services-empty").textContent = !state.synced
      ? "Loading…"
      : names.length
        ? "No service matches the filter."
        : "No services registered.";
    $("totals").textContent =
      `${names.length} service${names.length === 1 ? "" : "s"} · ${totals.ONLINE} online · ` +
      `${totals.UNHEALTHY} unhealthy · ${totals.OFFLINE} offline`;
    renderMeta();
    renderDetail();
  }

  function badge(status) {
    return element("span", { className: `badge badge-${status.toLowerCase()}`, text: status });
  }

  function metadataList(metadata) {
    const list = element("ul", { className: "metadata" });
    const keys = Object.keys(metadata || {}).sort();
    if (!keys.length) list.append(element("li", { text: "—" }));
    for (const key of keys) {
      const value = metadata[key];
      const shown = typeof value === "string" ? value : JSON.stringify(value);
      list.append(
        element("li", {}, [element("span", { className: "key", text: key + "=" }), document.createTextNode(shown)]),
      );
    }
    return list;
  }

  function instanceRow(instance) {
    const key = instance.instance_id;
    let entry = instanceRows.get(key);
    if (!entry) {
      const age = element("span", { className: "age" });
      const heartbeatAt = element("span", { className: "sub" });
      const row = element("tr", {}, [
        element("td", { "data-label": "Instance" }, [element("span", { className: "mono instance-id", text: key })]),
        element("td", { "data-label": "Status" }),
        element("td", { "data-label": "Last heartbeat" }, [element("span", {}, [age, heartbeatAt])]),
        element("td", { "data-label": "Registered" }),
        element("td", { "data-label": "Metadata" }),
      ]);
      entry = { row, age, heartbeatAt, shown: null };
      instanceRows.set(key, entry);
    }
    if (entry.shown !== instance) {
      const cells = entry.row.children;
      entry.row.className = `status-${instance.status.toLowerCase()}`;
      cells[1].replaceChildren(badge(instance.status));
      entry.age.dataset.ts = instance.last_heartbeat || "";
      entry.heartbeatAt.textContent = instance.last_heartbeat ? formatTime(instance.last_heartbeat) : "";
      cells[3].textContent = formatTime(instance.registered_at);
      cells[4].replaceChildren(metadataList(instance.metadata));
      entry.shown = instance;
    }
    return entry.row;
  }

  function renderDetail() {
    const name = state.selected;
    const service = name ? state.services.get(name) : null;
    const table = $("instances");
    if (!name) {
      table.hidden = true;
      $("detail-hint").hidden = false;
      $("detail-title").textContent = "Instances";
      $("detail-totals").textContent = "";
      return;
    }
    $("detail-title").textContent = `Instances of ${name}`;
    if (!service || !service.detail) {
      table.hidden = true;
      $("detail-hint").hidden = false;
      $("detail-hint").textContent = service ? "Loading…" : "This service has no instances any more.";
      $("detail-totals").textContent = "";
      return;
    }
    const instances = Array.from(service.detail.instances.values()).sort((a, b) =>
      a.instance_id < b.instance_id ? -1 : a.instance_id > b.instance_id ? 1 : 0,
    );
    const rows = instances.map(instanceRow);
    const keep = new Set(instances.map((i) => i.instance_id));
    for (const key of instanceRows.keys()) if (!keep.has(key)) instanceRows.delete(key);
    placeRows($("instances-body"), rows);
    table.hidden = rows.length === 0;
    $("detail-hint").hidden = rows.length > 0;
    $("detail-hint").textContent = "This service has no instances any more.";
    const counts = countsOf(service);
    $("detail-totals").textContent = STATUSES.map((s) => `${counts[s] || 0} ${s.toLowerCase()}`).join(" · ");
    tick();
  }

  function formatTime(iso) {
    const date = new Date(iso);
    return Number.isNaN(date.getTime()) ? iso : date.toLocaleString();
  }

  function formatAge(seconds) {
    if (seconds < 60) return `${seconds} s ago`;
    if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${seconds % 60} s ago`;
    return `${Math.floor(seconds / 3600)} h ${Math.floor((seconds % 3600) / 60)} min ago`;
  }

  // The ages tick every second from the timestamps already shown (no request). Lease
  // renewals are no change events: while an instance is ONLINE its last heartbeat is
  // only known to be within the lease TTL (it would be UNHEALTHY otherwise), so the
  // age shown is a bound; once UNHEALTHY or OFFLINE it is exact.
  function tick() {
    const now = Date.now();
    const ttl = state.policy ? state.policy.lease_ttl : null;
    for (const entry of instanceRows.values()) {
      const instance = entry.shown;
      const at = instance && instance.last_heartbeat;
      if (!at) {
        entry.age.textContent = "never";
        continue;
      }
      const seconds = Math.max(0, Math.floor((now - Date.parse(at)) / 1000));
      if (instance.status === "ONLINE") {
        const bound = ttl === null ? seconds : Math.min(seconds, Math.ceil(ttl));
        entry.age.textContent = bound === 0 ? "just now" : `≤ ${formatAge(bound)}`;
        entry.age.title =
          "Heartbeats renew the lease without a change event: the last one came within " +
          (ttl === null ? "the lease TTL" : `the lease TTL (${ttl} s)`) +
          ", or the instance would be UNHEALTHY.";
        entry.age.classList.remove("age-stale");
      } else {
        entry.age.textContent = formatAge(seconds);
        entry.age.title = "No heartbeat since.";
        entry.age.classList.add("age-stale");
      }
    }
  }

  function select(name, focus) {
    state.selected = name;
    for (const entry of instanceRows.values()) entry.row.remove();
    instanceRows.clear();
    if (history.replaceState) history.replaceState(null, "", "#service=" + encodeURIComponent(name));
    const service = state.services.get(name);
    if (service && state.synced) ensureLoaded(service);
    render();
    if (focus) $("detail-title").focus();
  }

  $("filter").addEventListener("input", (typed) => {
    state.filter = typed.target.value.trim();
    render();
  });

  const wanted = /^#service=(.+)$/.exec(location.hash);
  if (wanted) state.selected = decodeURIComponent(wanted[1]);
  setInterval(tick, 1000);
  stream();
})();
