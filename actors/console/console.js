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
//
// How it stays honest: while the stream is down (or a resync is being read) the view is
// stale: dimmed, its badges grey, its ages frozen at the last moment it was known
// current, and "as of <that moment>" above it, until the stream is back and the view
// is refreshed. Times are shown in the browser's time zone, 24-hour, with the zone
// (2026-12-06 23:47:37 UTC+9); the exact UTC value is one click, tap or Enter away.
//
// What an operator can do: put an instance into maintenance (out of discovery, still
// registered) and back, or deregister it, with the buttons of its row (PUT and DELETE
// on the admin API, with the token). The view changes when the event comes, as for any
// change; while the view is stale the buttons are off: nobody acts on old news.
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
    live: false, // the stream is up and the view follows it
    currentAt: null, // ms: the last moment the view was known current (null: none yet):
    // the last chunk heard, read answered, or the end of a stream the server closed
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
      counts: summary
        ? Object.assign({ MAINTENANCE: summary.in_maintenance || 0 }, summary.status_counts)
        : {},
      detail: null, // {revision, serviceRevision, instances: Map} once read
      loading: null,
      queued: [],
      reloads: 0,
    };
  }

  // Instances by status, and MAINTENANCE: those in maintenance (each also counted by
  // its status).
  function countsOf(service) {
    if (!service.detail) return service.counts;
    const counts = {};
    for (const instance of service.detail.instances.values()) {
      counts[instance.status] = (counts[instance.status] || 0) + 1;
      if (instance.maintenance) counts.MAINTENANCE = (counts.MAINTENANCE || 0) + 1;
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
        if (state.live) state.currentAt = Date.now();
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
          if (state.live) state.currentAt = Date.now();
        }
        throw new Error("the event stream ended");
      } catch (error) {
        clearTimeout(silence);
        // Until an end or a failure that came from the other side, the view was current;
        // after a silence (or a reconnect of ours), only until the last chunk heard.
        if (state.live && !controller.signal.aborted) state.currentAt = Date.now();
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

  // -- time -----------------------------------------------------------------------------

  // One convention for every time shown: the browser's time zone, 24-hour, an ISO-like
  // date and the zone's offset from UTC ("2026-12-06 23:47:37 UTC+9"), whatever the
  // browser's locale would make of toLocaleString(). The exact UTC value (ISO 8601) is
  // in the title and one click away (see timeValue).
  const LOCAL_TIME = new Intl.DateTimeFormat("en-US", {
    year: "numeric",
    month: "2-digit",
    day: "2-digit",
    hour: "2-digit",
    minute: "2-digit",
    second: "2-digit",
    hourCycle: "h23",
    timeZoneName: "shortOffset",
    numberingSystem: "latn",
  });

  function timeParts(date) {
    const parts = {};
    for (const { type, value } of LOCAL_TIME.formatToParts(date)) parts[type] = value;
    // "GMT+9", "GMT-3:30"; UTC itself is "GMT" or "GMT+0" depending on the ICU data.
    // Said with UTC, the name used everywhere else.
    const name = parts.timeZoneName || "";
    const offset = /^GMT([+-]\d{1,2}(?::\d\d)?)?$/.exec(name);
    if (!offset) parts.zone = name; // not what en-US gives: shown as it comes
    else parts.zone = offset[1] && !/^[+-]0$/.test(offset[1]) ? `UTC${offset[1]}` : "UTC";
    return parts;
  }

  function localTime(date) {
    const p = timeParts(date);
    return `${p.year}-${p.month}-${p.day} ${p.hour}:${p.minute}:${p.second} ${p.zone}`;
  }

  function clockTime(date) {
    const p = timeParts(date);
    return `${p.hour}:${p.minute}:${p.second}`;
  }

  // -- rendering ------------------------------------------------------------------------

  function showConnection(kind, text) {
    $("connection").dataset.state = kind;
    $("connection-text").textContent = text;
    const live = kind === "live";
    if (live) state.currentAt = Date.now();
    if (live !== state.live) {
      state.live = live;
      renderStale();
    }
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
    for (const child of children || []) if (child !== null) node.append(child);
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

  // A value that may not fit: one line, never broken inside, cut with an ellipsis when it
  // is too long; its full text is in `title` (hover) and a click, tap, Enter or Space on
  // it expands it in place (aria-expanded; the CSS lets an expanded value wrap). `key`
  // names it among re-renders, so that an expanded value stays expanded and a focused
  // one focused. Screen readers always read the full text: the cut is only drawn.
  const revealed = new Set();

  function reveal(key, className, title, children) {
    const options = {
      type: "button",
      className: `reveal ${className}`,
      title,
      "aria-expanded": revealed.has(key) ? "true" : "false",
      "data-reveal": key,
    };
    return element("button", options, children);
  }

  function clipped(text, className) {
    return element("span", { className: `clip ${className || ""}`.trim(), text });
  }

  document.addEventListener("click", (clicked) => {
    const button = clicked.target instanceof Element ? clicked.target.closest("button.reveal") : null;
    if (!button) return;
    const open = button.getAttribute("aria-expanded") !== "true";
    button.setAttribute("aria-expanded", String(open));
    if (open) revealed.add(button.dataset.reveal);
    else revealed.delete(button.dataset.reveal);
  });

  // A time: local (see LOCAL_TIME), and once expanded also the exact UTC value.
  function timeValue(key, iso, className) {
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) return clipped(iso, className);
    const utc = date.toISOString();
    return reveal(key, `time ${className || ""}`.trim(), `UTC ${utc}`, [
      element("time", { className: "clip", datetime: utc, text: localTime(date) }),
      element("span", { className: "utc", text: `UTC ${utc}` }),
    ]);
  }

  // Rebuilds `row`'s cells, giving the focus back to the control that had it (by its
  // data-reveal key or its class).
  function replaceCells(row, cells) {
    const focused = row.contains(document.activeElement) ? document.activeElement : null;
    const wanted = focused && focused.dataset.reveal;
    row.replaceChildren(...cells);
    if (!wanted) return;
    for (const button of row.querySelectorAll("button.reveal")) {
      if (button.dataset.reveal === wanted) button.focus();
    }
  }

  function cell(label, className, children) {
    return element("td", { "data-label": label, className: className || "" }, children);
  }

  const serviceRows = new Map();
  const instanceRows = new Map(); // instance id -> {row, age, shown}

  function serviceRow(name) {
    let row = serviceRows.get(name);
    if (!row) {
      const button = element("button", { type: "button", className: "service-button", title: name }, [
        clipped(name),
      ]);
      button.addEventListener("click", () => select(name, true));
      row = element("tr", { "data-service": name }, [
        cell("Service", "name", [element("div", { className: "name-box" }, [button])]),
        cell("Instances", "num"),
        cell("Online", "num"),
        cell("Unhealthy", "num"),
        cell("Offline", "num"),
      ]);
      serviceRows.set(name, row);
    }
    return row;
  }

  const plural = (count, noun) => `${count} ${noun}${count === 1 ? "" : "s"}`;

  // "3 instances: 2 online, 1 unhealthy, 0 offline · 1 in maintenance": instances only,
  // never mixed with services.
  function instanceSummary(counts) {
    const total = STATUSES.reduce((sum, status) => sum + (counts[status] || 0), 0);
    const each = STATUSES.map((status) => `${counts[status] || 0} ${status.toLowerCase()}`);
    const drained = counts.MAINTENANCE ? ` · ${counts.MAINTENANCE} in maintenance` : "";
    return `${plural(total, "instance")}: ${each.join(", ")}${drained}`;
  }

  function render() {
    const names = Array.from(state.services.keys()).sort();
    const filter = state.filter.toLowerCase();
    const totals = { ONLINE: 0, UNHEALTHY: 0, OFFLINE: 0, MAINTENANCE: 0 };
    const rows = [];
    for (const name of names) {
      const counts = countsOf(state.services.get(name));
      let total = 0;
      for (const status of STATUSES) {
        totals[status] += counts[status] || 0;
        total += counts[status] || 0;
      }
      totals.MAINTENANCE += counts.MAINTENANCE || 0;
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
    $("totals").textContent = `${plural(names.length, "service")} · ${instanceSummary(totals)}`;
    renderMeta();
    renderDetail();
  }

  function badge(status) {
    return element("span", { className: `badge badge-${status.toLowerCase()}`, text: status });
  }

  function metadataList(instanceKey, metadata) {
    const list = element("ul", { className: "metadata" });
    const keys = Object.keys(metadata || {}).sort();
    if (!keys.length) list.append(element("li", { className: "none", text: "—" }));
    for (const key of keys) {
      const value = metadata[key];
      const shown = typeof value === "string" ? value : JSON.stringify(value);
      list.append(
        element("li", {}, [
          reveal(`${instanceKey}\nmetadata\n${key}`, "chip", `${key}=${shown}`, [
            element("span", { className: "clip" }, [
              element("span", { className: "key", text: key + "=" }),
              document.createTextNode(shown),
            ]),
          ]),
        ]),
      );
    }
    return list;
  }

  // An instance in maintenance: a badge (since when, on hover), and who put it there and
  // why (cut like any value, whole on demand).
  function maintenanceBadge(key, maintenance) {
    if (!maintenance) return null;
    const since = new Date(maintenance.since);
    const why = `by ${maintenance.by}${maintenance.reason ? ": " + maintenance.reason : ""}`;
    return element("span", { className: "stack" }, [
      element("span", {
        className: "badge badge-maintenance",
        text: "MAINTENANCE",
        title: `In maintenance since ${localTime(since)} (UTC ${since.toISOString()})`,
      }),
      reveal(`${key}\nmaintenance`, "sub maintenance-why", why, [clipped(why)]),
    ]);
  }

  // The operator's buttons of a row. Drain and remove ask first, in the row itself: a
  // reason to give, or "yes" to say; the question survives the row being redrawn.
  const asking = new Map(); // instance key -> {kind: "drain" | "remove", reason}

  function actionButton(text, className, onClick) {
    const button = element("button", { type: "button", className: `action ${className}`, text });
    button.disabled = !state.live;
    if (!state.live) button.title = "Not live: wait until the stream is back";
    button.addEventListener("click", onClick);
    return button;
  }

  function actions(instance, key) {
    if (instance.status === "OFFLINE") return [element("span", { className: "none", text: "—" })];
    const question = asking.get(key);
    const again = () => {
      scheduleRender();
      instanceRows.get(instance.instance_id).shown = null; // redrawn with the question
    };
    const close = () => {
      asking.delete(key);
      again();
    };
    if (question && question.kind === "drain") {
      const input = element("input", {
        type: "text",
        maxlength: "200",
        placeholder: "reason (optional)",
        "aria-label": `Why ${instance.instance_id} goes into maintenance`,
        className: "reason",
      });
      input.value = question.reason;
      input.addEventListener("input", () => (question.reason = input.value));
      const form = element("form", { className: "ask" }, [
        input,
        element("button", { type: "submit", className: "action", text: "Drain" }),
        actionButton("Cancel", "quiet", close),
      ]);
      form.addEventListener("submit", (submitted) => {
        submitted.preventDefault();
        asking.delete(key);
        operate(instance, "PUT", "/maintenance", { reason: question.reason.trim() });
      });
      return [form];
    }
    if (question && question.kind === "remove") {
      return [
        element("span", { className: "ask" }, [
          element("span", { text: `Deregister ${instance.instance_id}?` }),
          actionButton("Yes, deregister", "danger", () => {
            asking.delete(key);
            operate(instance, "DELETE", "");
          }),
          actionButton("Cancel", "quiet", close),
        ]),
      ];
    }
    const ask = (kind) => () => {
      asking.set(key, { kind, reason: "" });
      again();
    };
    return [
      instance.maintenance
        ? actionButton("End maintenance", "", () => operate(instance, "DELETE", "/maintenance"))
        : actionButton("Drain…", "", ask("drain")),
      actionButton("Deregister…", "danger", ask("remove")),
    ];
  }

  // One operator write; what came of it goes in the status line above the instances.
  async function operate(instance, method, suffix, body) {
    const id = instance.instance_id;
    const path = `${API}/services/${encodeURIComponent(instance.service_name)}/instances/${encodeURIComponent(id)}${suffix}`;
    const [doing, done, failed] =
      method === "PUT"
        ? [`Putting ${id} into maintenance…`, `${id} is in maintenance.`, `Could not put ${id} into maintenance`]
        : suffix
          ? [`Ending the maintenance of ${id}…`, `${id} is out of maintenance.`, `Could not end the maintenance of ${id}`]
          : [`Deregistering ${id}…`, `${id} is deregistered (OFFLINE).`, `Could not deregister ${id}`];
    const status = $("action-status");
    status.classList.remove("error");
    status.textContent = doing;
    try {
      const response = await fetch(path, {
        method,
        headers: authHeaders(body ? { "Content-Type": "application/json" } : {}),
        body: body ? JSON.stringify(body) : undefined,
        cache: "no-store",
      });
      if (response.status === 401) return askForToken("The admin token was refused.");
      const answer = await response.json();
      if (!response.ok) throw new Error(answer.error ? answer.error.message : `HTTP ${response.status}`);
      status.textContent = done;
    } catch (error) {
      status.textContent = `${failed}: ${error.message}`;
      status.classList.add("error");
    }
  }

  // One instance's row: the one place that decides what a row shows. A changed instance
  // (a new object, from a read or an event) gets its cells built anew, and so does each
  // row when the stream goes up or down (its buttons); between changes tick() updates
  // its age in place.
  function instanceRow(instance) {
    const id = instance.instance_id;
    let entry = instanceRows.get(id);
    if (!entry) {
      entry = { row: element("tr", { "data-instance": id }), age: null, shown: null, live: null };
      instanceRows.set(id, entry);
    }
    if (entry.shown !== instance || entry.live !== state.live) {
      const key = `${instance.service_name}\n${id}`;
      const age = element("span", { className: "age" });
      const heartbeat = instance.last_heartbeat
        ? timeValue(`${key}\nheartbeat`, instance.last_heartbeat, "sub")
        : null;
      entry.row.className = `status-${instance.status.toLowerCase()}${instance.maintenance ? " in-maintenance" : ""}`;
      replaceCells(entry.row, [
        cell("Instance", "id", [reveal(`${key}\nid`, "mono instance-id", id, [clipped(id)])]),
        cell("Status", "status", [
          element("span", { className: "stack" }, [badge(instance.status), maintenanceBadge(key, instance.maintenance)]),
        ]),
        cell("Last heartbeat", "heartbeat", [element("span", { className: "stack" }, [age, heartbeat])]),
        cell("Registered", "registered", [timeValue(`${key}\nregistered`, instance.registered_at)]),
        cell("Metadata", "metadata-cell", [metadataList(key, instance.metadata)]),
        cell("Actions", "actions", actions(instance, key)),
      ]);
      entry.age = age;
      entry.shown = instance;
      entry.live = state.live;
    }
    return entry.row;
  }

  function renderDetail() {
    const name = state.selected;
    const service = name ? state.services.get(name) : null;
    const table = $("instances");
    const title = $("detail-title");
    if (!name) {
      table.hidden = true;
      $("detail-hint").hidden = false;
      title.replaceChildren("Instances");
      delete title.dataset.service;
      $("detail-totals").textContent = "";
      return;
    }
    if (title.dataset.service !== name) {
      title.dataset.service = name;
      title.replaceChildren("Instances of ", reveal(`service\n${name}`, "service-name", name, [clipped(name)]));
    }
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
    $("detail-totals").textContent = instanceSummary(countsOf(service));
    tick();
  }

  // Live or stale: see the comment at the top. Called when the stream goes up or down.
  function renderStale() {
    scheduleRender(); // (the rows' buttons are off while not live)
    const stale = !state.live && state.currentAt !== null;
    $("console").classList.toggle("stale", stale);
    const asOf = $("as-of");
    asOf.hidden = !stale;
    if (stale) {
      asOf.replaceChildren(
        element("strong", { text: "Not live." }),
        " As of ",
        timeValue("as-of", new Date(state.currentAt).toISOString()),
        ", the last word from the router. Refreshes when the stream is back.",
      );
    }
    tick();
  }

  function formatAge(seconds) {
    if (seconds < 60) return `${seconds} s`;
    if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${seconds % 60} s`;
    return `${Math.floor(seconds / 3600)} h ${Math.floor((seconds % 3600) / 60)} min`;
  }

  // The ages tick every second from the timestamps already shown (no request). Lease
  // renewals are no change events: while an instance is ONLINE its last heartbeat is
  // only known to be within the lease TTL (it would be UNHEALTHY otherwise), so the
  // age shown is a bound; once UNHEALTHY or OFFLINE it is exact. While the view is
  // stale they stop at the moment it was last current, and say so ("before 23:47:37"):
  // "≤ 1 s ago" would claim news the console does not have.
  function tick() {
    const stale = !state.live && state.currentAt !== null;
    const now = stale ? state.currentAt : Date.now();
    const when = stale ? ` before ${clockTime(new Date(now))}` : " ago";
    const ttl = state.policy ? state.policy.lease_ttl : null;
    for (const entry of instanceRows.values()) {
      const instance = entry.shown;
      const at = instance && instance.last_heartbeat;
      if (!entry.age) continue;
      entry.age.classList.toggle("age-frozen", stale);
      if (!at) {
        entry.age.textContent = "never";
        continue;
      }
      const seconds = Math.max(0, Math.floor((now - Date.parse(at)) / 1000));
      if (instance.status === "ONLINE") {
        const bound = ttl === null ? seconds : Math.min(seconds, Math.ceil(ttl));
        if (bound > 0) entry.age.textContent = `≤ ${formatAge(bound)}${when}`;
        else entry.age.textContent = stale ? `just${when}` : "just now";
        entry.age.title =
          "Heartbeats renew the lease without a change event: the last one came within " +
          (ttl === null ? "the lease TTL" : `the lease TTL (${ttl} s)`) +
          ", or the instance would be UNHEALTHY." +
          (stale ? ` As of ${localTime(new Date(now))}: the stream is down.` : "");
        entry.age.classList.remove("age-late");
      } else {
        entry.age.textContent = formatAge(seconds) + when;
        entry.age.title = "No heartbeat since." + (stale ? ` As of ${localTime(new Date(now))}.` : "");
        entry.age.classList.add("age-late");
      }
    }
  }

  function select(name, focus) {
    state.selected = name;
    for (const entry of instanceRows.values()) entry.row.remove();
    instanceRows.clear();
    revealed.clear();
    asking.clear();
    $("action-status").textContent = "";
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
