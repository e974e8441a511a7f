// alertd web console: a static page whose every datum comes from /api/v1 and /health,
// fetched with the operator's token, so it follows the API's auth rules and nothing else.
// Plain JavaScript, no build step. Data is only ever put into the page as text
// (textContent, never innerHTML), so labels and annotations cannot become markup.
"use strict";

(() => {
  const REFRESH_MS = 5000;
  const MAX_REFRESH_MS = 60000;
  const LOAD_SHARE = 30; // wait at least 30x what the last refresh took: a big alertd is not polled hard
  const GROUPS_PAGE = 50; // groups rendered at once; more on demand
  const ALERTS_PAGE = 50; // alerts rendered per open group; more on demand
  const OPEN_ALL_UNDER = 100; // with fewer matching alerts every group starts open
  const MAX_PAGES = 200; // of a paginated /api/v1/alerts answer
  const LIST_MAX = 100; // rows of dead letters and history shown
  const TOKEN_KEY = "alertd.token";
  const AUTHOR_KEY = "alertd.author";
  const SEVERITY_RANK = { critical: 0, warning: 1, info: 2 };

  const $ = (id) => document.getElementById(id);

  // --- tiny DOM builder ---------------------------------------------------------

  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") el.className = v;
      else if (k === "text") el.textContent = v;
      else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat(Infinity)) {
      if (c === undefined || c === null || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }

  // --- time -----------------------------------------------------------------------

  function ago(iso) {
    const t = Date.parse(iso);
    if (Number.isNaN(t)) return "";
    return span((Date.now() - t) / 1000) + " ago";
  }

  function sinceText(iso) {
    const t = Date.parse(iso);
    return Number.isNaN(t) ? "" : span((Date.now() - t) / 1000);
  }

  function until(iso) {
    const t = Date.parse(iso);
    if (Number.isNaN(t)) return "";
    const s = (t - Date.now()) / 1000;
    return s >= 0 ? "in " + span(s) : span(-s) + " ago";
  }

  function span(s) {
    s = Math.max(0, Math.round(s));
    if (s < 60) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m";
    if (s < 86400) return Math.floor(s / 3600) + "h " + (Math.floor(s / 60) % 60) + "m";
    return Math.floor(s / 86400) + "d " + (Math.floor(s / 3600) % 24) + "h";
  }

  function localTime(iso) {
    const t = Date.parse(iso);
    return Number.isNaN(t) ? iso || "" : new Date(t).toLocaleString();
  }

  function timeEl(iso, text) {
    return h("time", { datetime: iso, title: localTime(iso) }, text);
  }

  // --- matchers (the configuration's syntax) -----------------------------------------

  const MATCHER_RE = /^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*(.*?)\s*$/;
  // A comma starts a new matcher only where a "name=" follows, so regexes may hold commas.
  const SPLIT_RE = /\n|,(?=\s*[A-Za-z_][A-Za-z0-9_]*\s*(?:=|!=|!~))/;

  /** "service=api, env=~prod.*" -> {service: "api", env: "~prod.*"}; throws on bad input. */
  function parseMatchers(text) {
    const out = {};
    for (const part of text.split(SPLIT_RE)) {
      if (!part.trim()) continue;
      const m = MATCHER_RE.exec(part);
      if (!m) throw new Error(`"${part.trim()}" is not a matcher (name=value)`);
      let value = m[3];
      if (value.length >= 2 && value.startsWith('"') && value.endsWith('"')) value = value.slice(1, -1);
      const op = m[2];
      const spec = op === "=" ? value : op === "=~" ? "~" + value : op === "!=" ? "!" + value : "!~" + value;
      if (m[1] in out) throw new Error(`label ${m[1]} is given twice`);
      compileMatcher(m[1], spec); // throws on a bad regular expression
      out[m[1]] = spec;
    }
    return out;
  }

  function compileMatcher(name, spec) {
    const negate = spec.startsWith("!");
    const body = negate ? spec.slice(1) : spec;
    if (body.startsWith("~")) {
      let re;
      try {
        re = new RegExp("^(?:" + body.slice(1) + ")$");
      } catch (e) {
        throw new Error(`invalid regular expression for ${name}: ${body.slice(1)}`);
      }
      return (labels) => re.test(labels[name] ?? "") !== negate;
    }
    return (labels) => ((labels[name] ?? "") === body) !== negate;
  }

  function matcherFn(matchers) {
    const tests = Object.entries(matchers).map(([n, s]) => compileMatcher(n, s));
    return (labels) => tests.every((t) => t(labels));
  }

  function escapeRegex(s) {
    return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  }

  /** An equality matcher for a label value, in the config syntax (a value starting ~ or ! needs a regex). */
  function equalSpec(value) {
    return /^[~!]/.test(value) ? "~" + escapeRegex(value) : value;
  }

  /** Label-equality matchers for a silence, alertname first, the rest by name; never severity
   * (a change of severity is the same alert, and must stay silenced). */
  function silenceMatchersOf(labels) {
    const names = Object.keys(labels)
      .filter((k) => k !== "severity")
      .sort((a, b) => (a === "alertname" ? -1 : b === "alertname" ? 1 : a < b ? -1 : 1));
    return Object.fromEntries(names.map((k) => [k, equalSpec(labels[k])]));
  }

  function matchersText(matchers, sep) {
    return Object.entries(matchers).map(([n, s]) => `${n}=${s}`).join(sep);
  }

  // --- the API -------------------------------------------------------------------

  class ApiFailure extends Error {
    constructor(status, error, details) {
      super(error + (details && details.length ? ": " + details.join("; ") : ""));
      this.status = status;
    }
  }

  const api = {
    token: sessionStorage.getItem(TOKEN_KEY) || "",

    async call(method, path, body) {
      const headers = { Accept: "application/json" };
      if (this.token) headers.Authorization = "Bearer " + this.token;
      const init = { method, headers, credentials: "same-origin", cache: "no-store" };
      if (method !== "GET") {
        // Writes are JSON from this origin: the server's cross-site checks expect exactly that.
        headers["Content-Type"] = "application/json";
        init.body = JSON.stringify(body === undefined ? {} : body);
      }
      let res;
      try {
        res = await fetch(path, init);
      } catch (e) {
        throw new ApiFailure(0, "alertd is not answering", [String(e.message || e)]);
      }
      let data = null;
      try {
        data = await res.json();
      } catch (e) {
        data = null;
      }
      if (res.status === 401) {
        needToken();
        throw new ApiFailure(401, "unauthorized", []);
      }
      // /health answers 503 with its body when alertd is unhealthy: still worth showing.
      if (!res.ok && !(path === "/health" && data && data.status)) {
        const err = (data && data.error) || res.statusText || "error";
        throw new ApiFailure(res.status, err, (data && data.details) || []);
      }
      return data;
    },
    get(path) {
      return this.call("GET", path);
    },
  };

  // --- state ---------------------------------------------------------------------

  const state = {
    view: "alerts",
    filterText: "",
    matchers: {},
    alerts: [],
    byFingerprint: null, // fingerprint -> alert, built when first needed
    silences: [],
    groupsShown: GROUPS_PAGE,
    open: new Map(), // group key -> open, as the user left it
    alertsShown: new Map(), // group key -> how many alerts are rendered
    authorized: false,
    timer: null,
    every: REFRESH_MS,
    busy: false,
    again: false,
  };

  function readUrl() {
    const q = new URLSearchParams(location.search);
    const view = q.get("view");
    state.view = ["alerts", "silences", "delivery"].includes(view) ? view : "alerts";
    state.filterText = q.getAll("filter").join(", ");
    $("filter").value = state.filterText;
    applyFilterText(state.filterText);
  }

  function writeUrl(push) {
    const q = new URLSearchParams();
    if (state.view !== "alerts") q.set("view", state.view);
    for (const [n, s] of Object.entries(state.matchers)) q.append("filter", `${n}=${s}`);
    const url = location.pathname + (q.toString() ? "?" + q : "");
    if (push) history.pushState(null, "", url);
    else history.replaceState(null, "", url);
  }

  function applyFilterText(text) {
    try {
      state.matchers = parseMatchers(text);
      $("filter-error").textContent = "";
      $("filter").removeAttribute("aria-invalid");
      return true;
    } catch (e) {
      $("filter-error").textContent = e.message;
      $("filter").setAttribute("aria-invalid", "true");
      return false;
    }
  }

  function say(text) {
    $("status").textContent = text;
  }

  function banner(text) {
    $("banner").textContent = text;
    $("banner").hidden = !text;
  }

  // --- sign in -------------------------------------------------------------------

  function needToken() {
    state.authorized = false;
    api.token = "";
    sessionStorage.removeItem(TOKEN_KEY);
    for (const id of ["alerts-view", "silences-view", "delivery-view", "loading-view", "nav", "top-right"]) {
      $(id).hidden = true;
    }
    for (const id of ["groups", "silences", "channels", "dead", "history", "alerts-summary"]) {
      $(id).replaceChildren();
    }
    banner("");
    say("");
    $("token-view").hidden = false;
    $("token-input").focus();
  }

  async function signIn(ev) {
    ev.preventDefault();
    const token = $("token-input").value.trim();
    if (!token) return;
    api.token = token;
    try {
      await api.get("/api/v1/alerts");
    } catch (e) {
      $("token-error").textContent = e.status === 401 ? "That token was refused." : e.message;
      $("token-input").select();
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, token);
    $("token-input").value = "";
    $("token-error").textContent = "";
    $("token-view").hidden = true;
    await refresh();
  }

  function signOut() {
    needToken();
  }

  // --- loading -------------------------------------------------------------------

  async function fetchAlerts() {
    // The API may page its answer (a `next` link or cursor); the plain {"alerts": [...]} is one page.
    const all = [];
    let url = "/api/v1/alerts";
    const seen = new Set();
    for (let page = 0; page < MAX_PAGES && url && !seen.has(url); page++) {
      seen.add(url);
      const body = await api.get(url);
      all.push(...((body && body.alerts) || []));
      const next = body && (body.next ?? body.next_cursor ?? body.cursor ?? null);
      if (next === null || next === undefined || next === "") break;
      url = typeof next === "string" && next.startsWith("/") ? next : "/api/v1/alerts?cursor=" + encodeURIComponent(next);
    }
    return all;
  }

  async function refresh() {
    if (state.busy) {
      state.again = true; // a view change or a write wants fresh data: run once more after this
      return;
    }
    state.busy = true;
    state.again = false;
    clearTimeout(state.timer);
    const started = performance.now();
    try {
      const alerts = await fetchAlerts();
      state.authorized = true;
      state.alerts = alerts;
      state.byFingerprint = null;
      const [health, silences] = await Promise.all([
        api.get("/health").catch((e) => ({ status: "unknown", error: e.message })),
        api.get("/api/v1/silences"),
      ]);
      state.silences = (silences && silences.silences) || [];
      showChrome(health);
      if (state.view === "alerts") renderAlerts();
      else if (state.view === "silences") renderSilences();
      else await loadDelivery(health);
      banner("");
      $("updated").textContent = "updated " + new Date().toLocaleTimeString();
    } catch (e) {
      if (e.status !== 401) banner("Could not load: " + e.message + " (showing the last data; retrying)");
    } finally {
      state.busy = false;
      const took = performance.now() - started;
      state.every = Math.min(MAX_REFRESH_MS, Math.max(REFRESH_MS, took * LOAD_SHARE));
      if (state.authorized) state.timer = setTimeout(tick, state.again ? 0 : state.every);
    }
  }

  function tick() {
    if (document.hidden) {
      state.timer = setTimeout(tick, state.every);
      return;
    }
    refresh();
  }

  function showChrome(health) {
    $("loading-view").hidden = true;
    $("nav").hidden = false;
    $("top-right").hidden = false;
    $("sign-out").hidden = !api.token;
    for (const v of ["alerts", "silences", "delivery"]) {
      $(v + "-view").hidden = v !== state.view;
      const link = document.querySelector(`nav a[data-view="${v}"]`);
      if (v === state.view) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
    $("alerts-count").textContent = String(state.alerts.length);
    $("silences-count").textContent = String(state.silences.filter((s) => s.status !== "expired").length);
    const st = (health && health.status) || "unknown";
    const hb = $("health");
    hb.textContent = st;
    hb.className = "badge health-" + st;
    hb.title = "alertd health: " + st;
  }

  // --- alerts view ---------------------------------------------------------------

  function groupsOf(alerts) {
    const groups = new Map();
    for (const a of alerts) {
      const targets =
        a.groups && a.groups.length
          ? a.groups
          : [{ groupKey: `{alertname="${a.labels.alertname || ""}"}`, groupLabels: { alertname: a.labels.alertname || "" }, channels: [] }];
      for (const t of targets) {
        let g = groups.get(t.groupKey);
        if (!g) {
          g = { key: t.groupKey, labels: t.groupLabels || {}, channels: t.channels || [], alerts: [] };
          groups.set(t.groupKey, g);
        }
        g.alerts.push(a);
      }
    }
    const sev = (a) => SEVERITY_RANK[a.severity] ?? 3;
    for (const g of groups.values()) {
      // Worst first, then firing before pending, then the oldest.
      g.alerts.sort((x, y) => sev(x) - sev(y) || (x.state === y.state ? 0 : x.state === "firing" ? -1 : 1) || (x.startsAt < y.startsAt ? -1 : 1));
    }
    const rank = (g) => Math.min(...g.alerts.map(sev));
    return [...groups.values()].sort(
      (x, y) => rank(x) - rank(y) || y.alerts.length - x.alerts.length || (x.key < y.key ? -1 : 1),
    );
  }

  function isQuiet(a) {
    return a.silencedBy.length > 0 || a.inhibitedBy.length > 0 || (a.mutedBy || []).length > 0;
  }

  function renderAlerts() {
    const keep = focusKey();
    const match = matcherFn(state.matchers);
    const shown = state.alerts.filter((a) => match(a.labels));
    const groups = groupsOf(shown);
    const firing = shown.filter((a) => a.state === "firing").length;
    const quiet = shown.filter(isQuiet).length;
    const filtered = Object.keys(state.matchers).length > 0;
    $("alerts-summary").textContent =
      `${shown.length} alert${shown.length === 1 ? "" : "s"} in ${groups.length} group${groups.length === 1 ? "" : "s"}` +
      ` · ${firing} firing · ${shown.length - firing} pending · ${quiet} silenced, inhibited or muted` +
      (filtered ? ` (filtered from ${state.alerts.length})` : "");
    const openByDefault = shown.length <= OPEN_ALL_UNDER;
    const list = groups.slice(0, state.groupsShown).map((g) => groupEl(g, openByDefault));
    if (!groups.length) {
      list.push(h("p", { class: "empty" }, filtered ? "No alert matches this filter." : "No alerts. All quiet."));
    }
    $("groups").replaceChildren(...list);
    const more = groups.length - state.groupsShown;
    $("more-groups").hidden = more <= 0;
    $("more-groups").textContent = `Show ${Math.min(more, GROUPS_PAGE)} more groups (${more} not shown)`;
    restoreFocus(keep);
  }

  function worst(alerts) {
    return alerts.reduce((w, a) => ((SEVERITY_RANK[a.severity] ?? 3) < (SEVERITY_RANK[w] ?? 3) ? a.severity : w), "info");
  }

  function commonLabels(alerts) {
    const first = alerts[0] ? { ...alerts[0].labels } : {};
    for (const a of alerts.slice(1)) {
      for (const k of Object.keys(first)) if (a.labels[k] !== first[k]) delete first[k];
    }
    return first;
  }

  function groupEl(g, openByDefault) {
    const open = state.open.has(g.key) ? state.open.get(g.key) : openByDefault;
    const sev = worst(g.alerts);
    const firing = g.alerts.filter((a) => a.state === "firing").length;
    const quiet = g.alerts.filter(isQuiet).length;
    const body = h("div", { class: "group-body" });
    const details = h(
      "details",
      { class: "group", open: open, "data-key": g.key },
      h(
        "summary",
        { "data-focus": "g:" + g.key },
        h("span", { class: "badge sev-" + sev }, sev),
        h("span", { class: "group-labels" }, labelChips(Object.keys(g.labels).length ? g.labels : { group: "(all)" })),
        h(
          "span",
          { class: "group-counts" },
          `${g.alerts.length} alert${g.alerts.length === 1 ? "" : "s"}`,
          firing !== g.alerts.length ? ` · ${firing} firing` : "",
          quiet ? ` · ${quiet} quiet` : "",
          g.channels.length ? ` · to ${g.channels.join(", ")}` : "",
        ),
      ),
      body,
    );
    const fill = () => {
      if (details.open && !body.childElementCount) renderGroupBody(g, body);
    };
    details.addEventListener("toggle", () => {
      state.open.set(g.key, details.open);
      fill();
    });
    fill();
    return details;
  }

  function renderGroupBody(g, body) {
    const shown = state.alertsShown.get(g.key) || ALERTS_PAGE;
    const base = Object.keys(g.labels).length ? g.labels : commonLabels(g.alerts);
    const groupMatchers = silenceMatchersOf(base);
    const items = g.alerts.slice(0, shown).map((a) => alertEl(a, g.key));
    const children = [
      h(
        "div",
        { class: "group-actions" },
        h(
          "button",
          {
            type: "button",
            "data-focus": "sg:" + g.key,
            "aria-label": "Silence this whole group",
            onclick: () => openSilence(groupMatchers, "group " + matchersText(base, ", ")),
          },
          "Silence group…",
        ),
      ),
      h("ul", { class: "alerts" }, items),
    ];
    if (g.alerts.length > shown) {
      children.push(
        h(
          "button",
          {
            type: "button",
            class: "more",
            onclick: () => {
              state.alertsShown.set(g.key, shown + ALERTS_PAGE);
              body.replaceChildren();
              renderGroupBody(g, body);
            },
          },
          `Show ${Math.min(ALERTS_PAGE, g.alerts.length - shown)} more (${g.alerts.length - shown} not shown)`,
        ),
      );
    }
    body.replaceChildren(...children);
  }

  function labelChips(labels) {
    return h(
      "ul",
      { class: "chips" },
      Object.entries(labels)
        .sort(([a], [b]) => (a < b ? -1 : 1))
        .map(([k, v]) => h("li", { class: "chip" }, h("span", { class: "k" }, k), "=", h("span", { class: "v" }, v))),
    );
  }

  function safeUrl(url) {
    try {
      const u = new URL(url, location.href);
      return u.protocol === "http:" || u.protocol === "https:" ? u.href : null;
    } catch (e) {
      return null;
    }
  }

  function formatValue(v) {
    if (v === null || v === undefined) return "–";
    if (typeof v !== "number") return String(v);
    return Number.isInteger(v) ? String(v) : String(Number(v.toPrecision(4)));
  }

  /** A source alert named by its fingerprint, as a person reads it: name, labels, severity. */
  function describeAlert(fp) {
    if (!state.byFingerprint) state.byFingerprint = new Map(state.alerts.map((x) => [x.fingerprint, x]));
    const src = state.byFingerprint.get(fp);
    if (!src) return fp;
    const rest = Object.entries(src.labels)
      .filter(([k]) => k !== "alertname" && k !== "severity")
      .sort(([a], [b]) => (a < b ? -1 : 1));
    return `${src.labels.alertname || fp} ${rest.map(([k, v]) => `${k}=${v}`).join(" ")} (${src.severity})`;
  }

  function alertEl(a, groupKey) {
    const name = a.labels.alertname || a.rule || "alert";
    const ann = a.annotations || {};
    const silenceMatchers = silenceMatchersOf(a.labels);
    const quiet = [];
    if (a.silencedBy.length) {
      quiet.push(
        h(
          "span",
          { class: "quiet silenced" },
          "Silenced by ",
          a.silencedBy.map((id, i) => [i ? ", " : "", h("a", { href: "?view=silences#silence-" + id }, id)]),
        ),
      );
    }
    if (a.inhibitedBy.length) {
      quiet.push(h("span", { class: "quiet inhibited" }, "Inhibited by " + a.inhibitedBy.map(describeAlert).join(", ")));
    }
    if ((a.mutedBy || []).length) quiet.push(h("span", { class: "quiet muted" }, "Muted during " + a.mutedBy.join(", ")));
    const runbook = ann.runbook_url && safeUrl(ann.runbook_url);
    const others = Object.entries(ann).filter(([k]) => !["summary", "description", "runbook_url"].includes(k));
    return h(
      "li",
      { class: "alert sev-" + a.severity + (isQuiet(a) ? " is-quiet" : ""), "data-fingerprint": a.fingerprint },
      h(
        "div",
        { class: "alert-head" },
        h("span", { class: "badge sev-" + a.severity }, a.severity),
        h("span", { class: "badge state-" + a.state }, a.state),
        h("strong", { class: "alert-name" }, name),
        h("span", { class: "alert-value" }, "value ", h("b", {}, formatValue(a.value))),
        h("span", { class: "alert-since" }, "for ", timeEl(a.startsAt, sinceText(a.startsAt))),
        h(
          "button",
          {
            type: "button",
            class: "silence-btn",
            "data-focus": `s:${groupKey}:${a.fingerprint}`,
            "aria-label": `Silence ${name} ${matchersText(a.labels, " ")}`,
            onclick: () => openSilence(silenceMatchers, name),
          },
          "Silence…",
        ),
      ),
      ann.summary ? h("p", { class: "alert-summary" }, ann.summary) : null,
      ann.description ? h("p", { class: "alert-description muted" }, ann.description) : null,
      labelChips(a.labels),
      others.length ? h("dl", { class: "annotations" }, others.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])) : null,
      quiet.length || runbook
        ? h("p", { class: "alert-foot" }, quiet, runbook ? h("a", { href: runbook, rel: "noopener noreferrer", target: "_blank" }, "Runbook") : null)
        : null,
    );
  }

  // Re-rendering replaces elements: keep the keyboard where the user left it.
  function focusKey() {
    const el = document.activeElement;
    return el && el.dataset ? el.dataset.focus : undefined;
  }

  function restoreFocus(key) {
    if (!key) return;
    const el = [...document.querySelectorAll("[data-focus]")].find((e) => e.dataset.focus === key);
    if (el) el.focus({ preventScroll: true });
  }

  // --- silences ------------------------------------------------------------------

  function openSilence(matchers, target) {
    $("silence-title").textContent = target ? "Silence " + target : "New silence";
    $("silence-target").textContent = target ? "Mutes notifications of every alert matching these labels." : "";
    $("s-matchers").value = matchersText(matchers, "\n");
    $("s-comment").value = "";
    $("s-error").textContent = "";
    $("s-author").value = localStorage.getItem(AUTHOR_KEY) || "";
    $("silence-dialog").showModal();
    ($("s-author").value ? $("s-create") : $("s-author")).focus();
  }

  async function createSilence(ev) {
    ev.preventDefault();
    let matchers;
    try {
      matchers = parseMatchers($("s-matchers").value);
    } catch (e) {
      $("s-error").textContent = e.message;
      return;
    }
    if (!Object.keys(matchers).length) {
      $("s-error").textContent = "Give at least one matcher.";
      return;
    }
    const author = $("s-author").value.trim();
    if (!author) {
      $("s-error").textContent = "Say who you are (Author).";
      $("s-author").focus();
      return;
    }
    const body = { matchers, duration: $("s-duration").value, createdBy: author, comment: $("s-comment").value };
    $("s-create").disabled = true;
    try {
      const res = await api.call("POST", "/api/v1/silences", body);
      localStorage.setItem(AUTHOR_KEY, author);
      $("silence-dialog").close();
      say(`Silence ${res.id} created for ${body.duration}: ${matchersText(matchers, ", ")}.`);
      await refresh();
    } catch (e) {
      $("s-error").textContent = e.message;
    } finally {
      $("s-create").disabled = false;
    }
  }

  function renderSilences() {
    const keep = focusKey();
    const order = { active: 0, pending: 1, expired: 2 };
    const list = [...state.silences].sort(
      (a, b) => (order[a.status] ?? 3) - (order[b.status] ?? 3) || (a.endsAt < b.endsAt ? 1 : -1),
    );
    const match = (s) => {
      try {
        const m = matcherFn(s.matchers);
        return state.alerts.filter((a) => m(a.labels)).length;
      } catch (e) {
        return 0;
      }
    };
    const items = list.map((s) => {
      const live = s.status !== "expired";
      const n = live ? match(s) : 0;
      return h(
        "li",
        { class: "card silence status-" + s.status, id: "silence-" + s.id, "data-silence": s.id },
        h(
          "div",
          { class: "card-head" },
          h("span", { class: "badge silence-" + s.status }, s.status),
          labelChips(s.matchers),
        ),
        h(
          "p",
          { class: "muted" },
          s.status === "pending" ? ["starts ", timeEl(s.startsAt, until(s.startsAt)), " · "] : "",
          s.status === "expired" ? "ended " : "ends ",
          timeEl(s.endsAt, until(s.endsAt)),
          ` · by ${s.createdBy}`,
          live ? ` · matches ${n} current alert${n === 1 ? "" : "s"}` : "",
          ` · ${s.id}`,
        ),
        s.comment ? h("p", {}, s.comment) : null,
        live
          ? h(
              "div",
              { class: "actions" },
              h("button", { type: "button", "data-focus": "x1h:" + s.id, "aria-label": `Extend silence ${s.id} by 1 hour`, onclick: () => extendSilence(s, 3600) }, "+1h"),
              h("button", { type: "button", "data-focus": "x1d:" + s.id, "aria-label": `Extend silence ${s.id} by 1 day`, onclick: () => extendSilence(s, 86400) }, "+1d"),
              h("button", { type: "button", class: "danger", "data-focus": "exp:" + s.id, "aria-label": `Expire silence ${s.id}`, onclick: () => expireSilence(s) }, "Expire"),
            )
          : null,
      );
    });
    if (!items.length) items.push(h("li", { class: "empty" }, "No silences."));
    $("silences").replaceChildren(...items);
    restoreFocus(keep);
    if (location.hash.startsWith("#silence-")) {
      const el = document.getElementById(location.hash.slice(1));
      if (el) el.classList.add("target");
    }
  }

  async function expireSilence(s) {
    try {
      await api.call("DELETE", "/api/v1/silences/" + encodeURIComponent(s.id));
      say(`Silence ${s.id} expired.`);
    } catch (e) {
      say(`Could not expire silence ${s.id}: ${e.message}`);
    }
    await refresh();
  }

  async function extendSilence(s, seconds) {
    // The API has no update: the extension is a new silence with the same matchers,
    // made before the old one is expired so the alerts stay silenced throughout.
    const ends = new Date(Math.max(Date.parse(s.endsAt), Date.now()) + seconds * 1000).toISOString();
    const body = { matchers: s.matchers, endsAt: ends, createdBy: s.createdBy, comment: s.comment };
    if (s.status === "pending") body.startsAt = s.startsAt;
    try {
      const res = await api.call("POST", "/api/v1/silences", body);
      await api.call("DELETE", "/api/v1/silences/" + encodeURIComponent(s.id));
      say(`Silence extended until ${localTime(ends)} (now ${res.id}).`);
    } catch (e) {
      say(`Could not extend silence ${s.id}: ${e.message}`);
    }
    await refresh();
  }

  // --- delivery view -------------------------------------------------------------

  async function loadDelivery(health) {
    const keep = focusKey();
    renderChannels(health);
    const [dead, history] = await Promise.all([
      api.get("/api/v1/dead-letters?limit=" + LIST_MAX),
      api.get("/api/v1/notifications").catch((e) => {
        if (e.status === 404 || e.status === 405) return null;
        throw e;
      }),
    ]);
    renderDead((dead && dead.dead_letters) || []);
    renderHistory(history);
    restoreFocus(keep);
  }

  function renderChannels(health) {
    const channels = (health && health.checks && health.checks.channels) || {};
    const items = Object.entries(channels).map(([name, c]) =>
      h(
        "li",
        { class: "card channel", "data-channel": name },
        h("div", { class: "card-head" }, h("strong", {}, name), h("span", { class: "badge health-" + c.status }, c.status)),
        h(
          "p",
          { class: "muted" },
          `${c.consecutive_failures} consecutive failure${c.consecutive_failures === 1 ? "" : "s"} · last success `,
          c.last_success ? timeEl(c.last_success, ago(c.last_success)) : "never (since start)",
        ),
      ),
    );
    if (!items.length) items.push(h("li", { class: "empty" }, health && health.error ? "Health unavailable: " + health.error : "No channels."));
    $("channels").replaceChildren(...items);
  }

  function renderDead(rows) {
    $("dead-count").textContent = rows.length ? String(rows.length) + (rows.length >= LIST_MAX ? "+" : "") : "";
    $("replay-all").hidden = !rows.length;
    const items = rows.map((d) =>
      h(
        "li",
        { class: "card dead", "data-dead": d.id },
        h(
          "div",
          { class: "card-head" },
          h("span", { class: "badge source-" + d.source }, d.source || "?"),
          h("strong", {}, d.source === "notification" ? "to " + (d.channel || "?") : "event " + (d.stream_id || "")),
          d.at ? h("span", { class: "muted" }, timeEl(d.at, ago(d.at))) : null,
        ),
        h("p", { class: "reason" }, d.reason || ""),
        d.last_error && d.last_error !== d.reason ? h("p", { class: "muted" }, "last error: " + d.last_error) : null,
        h(
          "p",
          { class: "muted" },
          d.attempts ? `${d.attempts} attempt${Number(d.attempts) === 1 ? "" : "s"} · ` : "",
          d.notification_id ? `notification ${d.notification_id} · ` : "",
          d.id,
        ),
        h(
          "div",
          { class: "actions" },
          h("button", { type: "button", "data-focus": "r:" + d.id, "aria-label": `Replay dead letter ${d.id}`, onclick: () => replay([d.id]) }, "Replay"),
        ),
      ),
    );
    if (!items.length) items.push(h("li", { class: "empty" }, "No dead letters."));
    $("dead").replaceChildren(...items);
  }

  async function replay(ids) {
    try {
      const res = await api.call("POST", "/api/v1/dead-letters/replay", ids ? { ids } : {});
      const parts = [`${res.replayed.length} replayed`];
      if (res.failed.length) parts.push(`${res.failed.length} failed (${res.failed.map((f) => f.error).join("; ")})`);
      if (res.not_found.length) parts.push(`${res.not_found.length} no longer there`);
      say("Dead letters: " + parts.join(", ") + ".");
    } catch (e) {
      say("Could not replay: " + e.message);
    }
    await refresh();
  }

  function renderHistory(history) {
    if (history === null) {
      $("history").replaceChildren(h("li", { class: "empty" }, "Notification history is not available on this alertd."));
      return;
    }
    const rows = (history.notifications || []).slice(0, LIST_MAX);
    const items = rows.map((n) =>
      h(
        "li",
        { class: "card notification", "data-notification": n.id },
        h(
          "div",
          { class: "card-head" },
          h("span", { class: "badge outcome-" + n.outcome }, n.outcome),
          h("span", { class: "badge state-" + n.status }, n.status),
          h("strong", {}, "to " + n.channel),
          n.queued_at ? h("span", { class: "muted" }, timeEl(n.queued_at, ago(n.queued_at))) : null,
        ),
        h("p", { class: "group-key" }, n.groupKey || ""),
        h(
          "p",
          { class: "muted" },
          `${Array.isArray(n.alerts) ? n.alerts.length : n.alerts ?? 0} alert(s) · ${n.reason || ""} · ${n.attempts ?? 0} attempt(s)`,
          n.delivered_at ? [" · delivered ", timeEl(n.delivered_at, ago(n.delivered_at))] : "",
        ),
        n.last_error ? h("p", { class: "error" }, n.last_error) : null,
      ),
    );
    if (!items.length) items.push(h("li", { class: "empty" }, "No notifications yet."));
    $("history").replaceChildren(...items);
  }

  // --- wiring --------------------------------------------------------------------

  function go(view) {
    state.view = view;
    writeUrl(true);
    showView();
  }

  function showView() {
    for (const v of ["alerts", "silences", "delivery"]) $(v + "-view").hidden = v !== state.view || !state.authorized;
    refresh();
  }

  document.addEventListener("DOMContentLoaded", () => {
    readUrl();
    $("token-form").addEventListener("submit", signIn);
    $("sign-out").addEventListener("click", signOut);
    $("refresh").addEventListener("click", () => refresh());
    $("filter-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      if (!applyFilterText($("filter").value)) return;
      state.groupsShown = GROUPS_PAGE;
      writeUrl(true);
      renderAlerts();
    });
    $("filter-clear").addEventListener("click", () => {
      $("filter").value = "";
      applyFilterText("");
      writeUrl(true);
      renderAlerts();
    });
    $("more-groups").addEventListener("click", () => {
      state.groupsShown += GROUPS_PAGE;
      renderAlerts();
    });
    $("new-silence").addEventListener("click", () => openSilence(state.matchers, ""));
    $("replay-all").addEventListener("click", () => replay(null));
    $("silence-form").addEventListener("submit", createSilence);
    $("s-cancel").addEventListener("click", () => $("silence-dialog").close());
    for (const a of document.querySelectorAll("nav a[data-view]")) {
      a.addEventListener("click", (ev) => {
        if (ev.metaKey || ev.ctrlKey || ev.shiftKey) return; // a new tab does its own loading
        ev.preventDefault();
        go(a.dataset.view);
      });
    }
    window.addEventListener("popstate", () => {
      readUrl();
      showView();
    });
    refresh();
  });
})();
