// Warren management console: polls the management API, draws charts on canvas.
"use strict";
(function () {
  const state = { auth: null, timer: null, samples: [], view: "overview", arg: null };
  const SERIES = [
    ["publish", "#e8a33d"], ["deliver_get", "#3b8bc2"], ["ack", "#5aa454"], ["redeliver", "#c0392b"],
  ];
  const QSERIES = [["ready", "#3b8bc2"], ["unacked", "#e8a33d"]];
  // Exposed for tests and for curious operators.
  window.warren = { state: state, lastRates: {}, lastQueued: {} };

  const $ = (sel) => document.querySelector(sel);
  const esc = (s) => String(s === undefined || s === null ? "" : s)
    .replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
  const enc = encodeURIComponent;
  const xname = (n) => (n === "" ? "amq.default" : n);

  async function api(method, path, body) {
    const opts = { method: method, headers: { Authorization: "Basic " + state.auth } };
    if (body !== undefined) {
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(body);
    }
    const r = await fetch("api" + path, opts);
    if (r.status === 401) { logout(); throw new Error("not authorised"); }
    const text = await r.text();
    const data = text ? JSON.parse(text) : null;
    if (!r.ok) throw new Error((data && data.reason) || r.statusText);
    return data;
  }

  function logout() {
    state.auth = null;
    sessionStorage.removeItem("warren-auth");
    $("#login").hidden = false;
    $("#tabs").hidden = true;
    $("#view").innerHTML = "";
    if (state.timer) clearInterval(state.timer);
  }

  async function login(auth) {
    state.auth = auth;
    try {
      const me = await api("GET", "/whoami");
      sessionStorage.setItem("warren-auth", auth);
      $("#who").textContent = "User: " + me.name;
      $("#login").hidden = true;
      $("#tabs").hidden = false;
      route();
      state.timer = setInterval(tick, 1000);
    } catch (e) {
      $("#login-error").textContent = "Login failed";
      state.auth = null;
    }
  }

  $("#login").addEventListener("submit", (ev) => {
    ev.preventDefault();
    login(btoa($("#username").value + ":" + $("#password").value));
  });
  window.addEventListener("hashchange", route);

  function route() {
    if (!state.auth) return;
    const h = decodeURIComponent(location.hash.slice(1) || "overview");
    const [view, ...rest] = h.split("/");
    state.view = view;
    state.arg = rest.length ? rest : null;
    document.querySelectorAll("nav a").forEach((a) =>
      a.classList.toggle("active", a.id === "tab-" + view.replace(/^(queue|exchange)$/, "$1s")));
    $("#view").innerHTML = "";
    render(true);
  }

  async function tick() {
    try {
      const o = await api("GET", "/overview");
      const ms = o.message_stats || {};
      const rate = (k) => (ms[k + "_details"] ? ms[k + "_details"].rate : 0);
      const s = { t: Date.now(), ready: o.queue_totals.messages_ready, unacked: o.queue_totals.messages_unacknowledged };
      SERIES.forEach(([k]) => { s[k] = rate(k); });
      state.samples.push(s);
      if (state.samples.length > 120) state.samples.shift();
      SERIES.forEach(([k]) => { window.warren.lastRates[k] = s[k]; });
      window.warren.lastQueued = { ready: s.ready, unacked: s.unacked };
      state.overview = o;
      await render(false);
    } catch (e) { /* shown on the next successful poll */ }
  }

  function drawChart(canvas, series, keys) {
    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth, h = canvas.clientHeight;
    canvas.width = w * dpr; canvas.height = h * dpr;
    const g = canvas.getContext("2d");
    g.scale(dpr, dpr);
    g.clearRect(0, 0, w, h);
    let max = 1;
    series.forEach((s) => keys.forEach(([k]) => { max = Math.max(max, s[k] || 0); }));
    const left = 50, bottom = h - 20, top = 10, right = w - 10;
    g.strokeStyle = "#ddd"; g.fillStyle = "#666"; g.font = "11px sans-serif";
    for (let i = 0; i <= 4; i++) {
      const y = bottom - (bottom - top) * i / 4;
      g.beginPath(); g.moveTo(left, y); g.lineTo(right, y); g.stroke();
      g.fillText((max * i / 4).toFixed(max < 10 ? 1 : 0), 4, y + 4);
    }
    const n = Math.min(120, Math.max(30, series.length));
    keys.forEach(([k, color]) => {
      g.strokeStyle = color; g.lineWidth = 2; g.beginPath();
      series.forEach((s, i) => {
        const x = left + (right - left) * (n - series.length + i) / (n - 1);
        const y = bottom - (bottom - top) * (s[k] || 0) / max;
        if (i === 0) g.moveTo(x, y); else g.lineTo(x, y);
      });
      g.stroke();
    });
    canvas.dataset.max = String(max);
  }

  function legend(keys, last) {
    return keys.map(([k, c]) => `<span><i style="background:${c}"></i>${k}: ${
      last ? Number(last[k] || 0).toFixed(1).replace(/\.0$/, "") : 0}</span>`).join("");
  }

  function table(cols, rows) {
    const head = cols.map((c) => `<th>${esc(c[0])}</th>`).join("");
    const body = rows.map((r) => "<tr>" + cols.map((c) => {
      const v = c[1](r);
      return typeof v === "number" ? `<td class="num">${v}</td>` : `<td>${v}</td>`;
    }).join("") + "</tr>").join("");
    return `<table><thead><tr>${head}</tr></thead><tbody>${body}</tbody></table>`;
  }

  // Views render a stable frame once (forms keep their input) and refresh a data area.
  function frame(id, html) {
    let el = document.getElementById(id);
    if (!el) {
      $("#view").innerHTML = html;
      el = document.getElementById(id);
    }
    return el;
  }

  const rateOf = (o, k) => (o.message_stats && o.message_stats[k + "_details"] ? o.message_stats[k + "_details"].rate : 0);

  async function render() {
    const v = state.view;
    if (v === "overview") return renderOverview();
    if (v === "connections") return renderConnections();
    if (v === "channels") return renderChannels();
    if (v === "exchanges") return renderExchanges();
    if (v === "queues") return renderQueues();
    if (v === "queue") return renderQueue();
    if (v === "exchange") return renderExchange();
  }

  async function renderOverview() {
    frame("overview", `<div id="overview">
      <div class="card totals" id="totals"></div>
      <div class="charts">
        <div class="card chart"><h3>Message rates (per second)</h3><canvas id="rates-chart"></canvas><div class="legend" id="rates-legend"></div></div>
        <div class="card chart"><h3>Queued messages</h3><canvas id="queued-chart"></canvas><div class="legend" id="queued-legend"></div></div>
      </div><div class="card" id="overview-queues"></div></div>`);
    const o = state.overview;
    if (o) {
      const t = o.object_totals;
      $("#totals").innerHTML = ["connections", "channels", "exchanges", "queues", "consumers"]
        .map((k) => `<div><b id="total-${k}">${t[k]}</b>${k}</div>`).join("");
    }
    drawChart($("#rates-chart"), state.samples, SERIES);
    drawChart($("#queued-chart"), state.samples, QSERIES);
    const last = state.samples[state.samples.length - 1];
    $("#rates-legend").innerHTML = legend(SERIES, last);
    $("#queued-legend").innerHTML = legend(QSERIES, last);
    const qs = await api("GET", "/queues");
    const el = $("#overview-queues");
    if (el) el.innerHTML = "<h3>Queues</h3>" + (qs.length ? table([
      ["Virtual host", (q) => esc(q.vhost)],
      ["Name", (q) => `<a class="drill" href="#queue/${enc(q.vhost)}/${enc(q.name)}">${esc(q.name)}</a>`],
      ["Ready", (q) => q.messages_ready], ["Unacked", (q) => q.messages_unacknowledged],
      ["Consumers", (q) => q.consumers], ["incoming/s", (q) => rateOf(q, "publish")],
      ["deliver/get/s", (q) => rateOf(q, "deliver_get")], ["ack/s", (q) => rateOf(q, "ack")],
    ], qs) : "No queues");
  }

  async function renderConnections() {
    const el = frame("connections", `<div id="connections"><div class="card" id="conn-table"></div></div>`);
    const rows = await api("GET", "/connections");
    el.querySelector("#conn-table").innerHTML = rows.length ? table([
      ["Name", (c) => esc(c.name)], ["User", (c) => esc(c.user)], ["Virtual host", (c) => esc(c.vhost)],
      ["Client", (c) => esc((c.client_properties || {}).product)], ["Channels", (c) => c.channels],
      ["From client (B)", (c) => c.recv_oct], ["To client (B)", (c) => c.send_oct],
      ["", (c) => `<a class="drill" data-close="${esc(c.name)}">close</a>`],
    ], rows) : "No connections";
    el.querySelectorAll("[data-close]").forEach((a) => a.onclick = async () => {
      await api("DELETE", "/connections/" + enc(a.dataset.close)); render();
    });
  }

  async function renderChannels() {
    const el = frame("channels", `<div id="channels"><div class="card" id="chan-table"></div></div>`);
    const rows = await api("GET", "/channels");
    el.querySelector("#chan-table").innerHTML = rows.length ? table([
      ["Channel", (c) => esc(c.name)], ["User", (c) => esc(c.user)], ["Virtual host", (c) => esc(c.vhost)],
      ["Consumers", (c) => c.consumer_count], ["Unacked", (c) => c.messages_unacknowledged],
      ["Prefetch", (c) => c.global_prefetch_count],
    ], rows) : "No channels";
  }

  async function renderExchanges() {
    const el = frame("exchanges", `<div id="exchanges"><div class="card" id="x-table"></div>
      <form class="card inline" id="declare-exchange"><h3>Add a new exchange</h3>
        <label>Virtual host <input name="vhost" value="/"></label>
        <label>Name <input name="name" required></label>
        <label>Type <select name="type"><option>direct</option><option>fanout</option><option>topic</option><option>headers</option></select></label>
        <label>Durable <input type="checkbox" name="durable" checked></label>
        <button>Add exchange</button> <span class="msg"></span></form></div>`);
    const f = el.querySelector("#declare-exchange");
    f.onsubmit = (ev) => submit(ev, f, () => api("PUT", `/exchanges/${enc(f.vhost.value)}/${enc(f.name.value)}`,
      { type: f.type.value, durable: f.durable.checked, auto_delete: false, internal: false, arguments: {} }));
    const rows = await api("GET", "/exchanges");
    el.querySelector("#x-table").innerHTML = table([
      ["Virtual host", (x) => esc(x.vhost)],
      ["Name", (x) => `<a class="drill" href="#exchange/${enc(x.vhost)}/${enc(xname(x.name))}">${esc(xname(x.name))}</a>`],
      ["Type", (x) => esc(x.type)], ["Features", (x) => (x.durable ? "D " : "") + (x.internal ? "I" : "")],
    ], rows);
  }

  async function renderQueues() {
    const el = frame("queues", `<div id="queues"><div class="card" id="q-table"></div>
      <form class="card inline" id="declare-queue"><h3>Add a new queue</h3>
        <label>Virtual host <input name="vhost" value="/"></label>
        <label>Name <input name="name" required></label>
        <label>Durable <input type="checkbox" name="durable" checked></label>
        <label>Arguments (JSON) <input name="args" value="{}"></label>
        <button>Add queue</button> <span class="msg"></span></form></div>`);
    const f = el.querySelector("#declare-queue");
    f.onsubmit = (ev) => submit(ev, f, () => api("PUT", `/queues/${enc(f.vhost.value)}/${enc(f.name.value)}`,
      { durable: f.durable.checked, auto_delete: false, arguments: JSON.parse(f.args.value || "{}") }));
    const rows = await api("GET", "/queues");
    el.querySelector("#q-table").innerHTML = rows.length ? table([
      ["Virtual host", (q) => esc(q.vhost)],
      ["Name", (q) => `<a class="drill queue-link" href="#queue/${enc(q.vhost)}/${enc(q.name)}">${esc(q.name)}</a>`],
      ["Features", (q) => (q.durable ? "D " : "") + (q.auto_delete ? "AD " : "") + (q.exclusive ? "Excl" : "")],
      ["Ready", (q) => q.messages_ready], ["Unacked", (q) => q.messages_unacknowledged], ["Total", (q) => q.messages],
      ["Consumers", (q) => q.consumers],
      ["incoming/s", (q) => rateOf(q, "publish")], ["deliver/get/s", (q) => rateOf(q, "deliver_get")],
      ["ack/s", (q) => rateOf(q, "ack")],
    ], rows) : "No queues";
  }

  async function submit(ev, form, action) {
    ev.preventDefault();
    const msg = form.querySelector(".msg");
    try { await action(); msg.className = "msg ok"; msg.textContent = "Done"; render(); }
    catch (e) { msg.className = "msg error"; msg.textContent = e.message; }
  }

  async function renderQueue() {
    const [vhost, name] = state.arg || [];
    const path = `/queues/${enc(vhost)}/${enc(name)}`;
    const el = frame("queue", `<div id="queue"><h2>Queue ${esc(name)} <small>(${esc(vhost)})</small></h2>
      <div class="card" id="q-info"></div><div class="card" id="q-bindings"></div>
      <form class="card inline" id="bind-queue"><h3>Add binding to this queue</h3>
        <label>From exchange <input name="source" required></label>
        <label>Routing key <input name="rk"></label><button>Bind</button> <span class="msg"></span></form>
      <form class="card inline" id="publish-queue"><h3>Publish message</h3>
        <label>Payload <textarea name="payload"></textarea></label>
        <label>Delivery mode <select name="dm"><option value="1">1 - non-persistent</option><option value="2">2 - persistent</option></select></label>
        <button>Publish message</button> <span class="msg"></span></form>
      <form class="card inline" id="get-queue"><h3>Get messages</h3>
        <label>Ack mode <select name="ackmode"><option value="ack_requeue_true">Nack message requeue true</option>
          <option value="ack_requeue_false">Automatic ack</option><option value="reject_requeue_false">Reject requeue false</option></select></label>
        <label>Messages <input name="count" value="1" size="3"></label><button>Get message(s)</button> <span class="msg"></span>
        <div id="got"></div></form>
      <form class="card inline" id="purge-queue"><h3>Purge</h3><button>Purge messages</button> <span class="msg"></span></form>
      <form class="card inline" id="delete-queue"><h3>Delete</h3><button>Delete queue</button> <span class="msg"></span></form></div>`);
    const bind = el.querySelector("#bind-queue");
    bind.onsubmit = (ev) => submit(ev, bind, () => api("POST",
      `/bindings/${enc(vhost)}/e/${enc(bind.source.value)}/q/${enc(name)}`, { routing_key: bind.rk.value, arguments: {} }));
    const pub = el.querySelector("#publish-queue");
    pub.onsubmit = (ev) => submit(ev, pub, () => api("POST", `/exchanges/${enc(vhost)}/amq.default/publish`,
      { routing_key: name, payload: pub.payload.value, payload_encoding: "string", properties: { delivery_mode: Number(pub.dm.value) } }));
    const get = el.querySelector("#get-queue");
    get.onsubmit = (ev) => submit(ev, get, async () => {
      const msgs = await api("POST", path + "/get", { count: Number(get.count.value), ackmode: get.ackmode.value, encoding: "auto", truncate: 50000 });
      el.querySelector("#got").innerHTML = msgs.length ? msgs.map((m) =>
        `<pre>exchange: ${esc(m.exchange)}\nrouting key: ${esc(m.routing_key)}\nredelivered: ${m.redelivered}\nproperties: ${esc(JSON.stringify(m.properties))}\npayload (${m.payload_bytes} bytes, ${m.payload_encoding}):\n${esc(m.payload)}</pre>`).join("") : "Queue is empty";
    });
    const purge = el.querySelector("#purge-queue");
    purge.onsubmit = (ev) => submit(ev, purge, () => api("DELETE", path + "/contents"));
    const del = el.querySelector("#delete-queue");
    del.onsubmit = (ev) => submit(ev, del, async () => { await api("DELETE", path); location.hash = "#queues"; });
    let q;
    try { q = await api("GET", path); } catch (e) { el.querySelector("#q-info").textContent = e.message; return; }
    el.querySelector("#q-info").innerHTML = table([
      ["Ready", (x) => x.messages_ready], ["Unacked", (x) => x.messages_unacknowledged], ["Total", (x) => x.messages],
      ["Consumers", (x) => x.consumers], ["Durable", (x) => String(x.durable)], ["Policy", (x) => esc(x.policy || "")],
      ["Arguments", (x) => esc(JSON.stringify(x.arguments))],
      ["incoming/s", (x) => rateOf(x, "publish")], ["deliver/get/s", (x) => rateOf(x, "deliver_get")], ["ack/s", (x) => rateOf(x, "ack")],
    ], [q]) + (q.consumer_details.length ? "<h3>Consumers</h3>" + table([
      ["Channel", (c) => esc(c.channel_details.name)], ["Tag", (c) => esc(c.consumer_tag)],
      ["Ack required", (c) => String(c.ack_required)], ["Prefetch", (c) => c.prefetch_count],
    ], q.consumer_details) : "");
    const bs = await api("GET", path + "/bindings");
    el.querySelector("#q-bindings").innerHTML = "<h3>Bindings</h3>" + table([
      ["From", (b) => esc(b.source || "(default exchange)")], ["Routing key", (b) => esc(b.routing_key)],
      ["Arguments", (b) => esc(JSON.stringify(b.arguments))],
    ], bs);
  }

  async function renderExchange() {
    const [vhost, name] = state.arg || [];
    const path = `/exchanges/${enc(vhost)}/${enc(name)}`;
    const el = frame("exchange", `<div id="exchange"><h2>Exchange ${esc(name)} <small>(${esc(vhost)})</small></h2>
      <div class="card" id="x-info"></div><div class="card" id="x-bindings"></div>
      <form class="card inline" id="bind-exchange"><h3>Add binding from this exchange</h3>
        <label>To <select name="kind"><option value="q">queue</option><option value="e">exchange</option></select></label>
        <label>Name <input name="dest" required></label><label>Routing key <input name="rk"></label>
        <button>Bind</button> <span class="msg"></span></form>
      <form class="card inline" id="publish-exchange"><h3>Publish message</h3>
        <label>Routing key <input name="rk"></label><label>Payload <textarea name="payload"></textarea></label>
        <button>Publish message</button> <span class="msg"></span></form></div>`);
    const bind = el.querySelector("#bind-exchange");
    bind.onsubmit = (ev) => submit(ev, bind, () => api("POST",
      `/bindings/${enc(vhost)}/e/${enc(name)}/${bind.kind.value}/${enc(bind.dest.value)}`, { routing_key: bind.rk.value, arguments: {} }));
    const pub = el.querySelector("#publish-exchange");
    pub.onsubmit = (ev) => submit(ev, pub, async () => {
      const r = await api("POST", path + "/publish", { routing_key: pub.rk.value, payload: pub.payload.value, payload_encoding: "string", properties: {} });
      if (!r.routed) throw new Error("Message published, but not routed");
    });
    let x;
    try { x = await api("GET", path); } catch (e) { el.querySelector("#x-info").textContent = e.message; return; }
    el.querySelector("#x-info").innerHTML = table([
      ["Type", (e) => esc(e.type)], ["Durable", (e) => String(e.durable)], ["Internal", (e) => String(e.internal)],
      ["Arguments", (e) => esc(JSON.stringify(e.arguments))],
    ], [x]);
    const bs = await api("GET", path + "/bindings/source");
    el.querySelector("#x-bindings").innerHTML = "<h3>Bindings from this exchange</h3>" + table([
      ["To", (b) => esc(b.destination) + " (" + b.destination_type + ")"], ["Routing key", (b) => esc(b.routing_key)],
    ], bs);
  }

  const saved = sessionStorage.getItem("warren-auth");
  if (saved) login(saved);
})();
