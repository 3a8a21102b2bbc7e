// The gateway's dashboard. Every REFRESH_MS it reads the admin API's JSON
// routes (same origin, nothing else) and redraws. The short history the
// sparklines draw lives here, in the page: the server keeps nothing for it.
// To change a column of the services table: edit its <th> in index.html and
// the matching cell in serviceRow below.
"use strict";

const REFRESH_MS = 2000;
const HISTORY = 150; // points per sparkline: 5 minutes at REFRESH_MS
const TOP = 50; // service rows drawn; the search box finds the rest

const $ = (id) => document.getElementById(id);
const state = {
	gateway: "", // the gateway shown
	prev: null, // {t, totals: {gateway: requests}, services: {gateway: {service: requests}}}
	rps: {}, // gateway -> [points]
	p95: {}, // gateway -> [points]
	last: null, // the last data read
};

async function getJSON(path, options) {
	const resp = await fetch(path, Object.assign({ headers: { Accept: "application/json" } }, options));
	const body = await resp.json().catch(() => ({}));
	if (!resp.ok) {
		throw new Error(path + ": " + resp.status + " " + (body.error || ""));
	}
	return body;
}

async function refresh() {
	const started = performance.now();
	try {
		const [stats, profile, health, pools, memory] = await Promise.all([
			getJSON("/gateway/stats"), getJSON("/gateway/profile"), getJSON("/gateway/health"),
			getJSON("/gateway/pools"), getJSON("/gateway/memory"),
		]);
		const data = { t: Date.now(), stats, profile, health, pools, memory };
		record(data);
		state.last = data;
		draw();
		setStatus("updated " + new Date(data.t).toLocaleTimeString() + " (" + Math.round(performance.now() - started) + " ms)", false);
	} catch (err) {
		setStatus("cannot read the admin API: " + err.message, true);
	}
}

function setStatus(text, bad) {
	const s = $("status");
	s.textContent = text;
	s.className = bad ? "bad" : "";
}

// record turns counters into rates against the previous refresh and keeps
// the sparkline history.
function record(data) {
	const gws = data.stats.gateways || {};
	const cur = { t: data.t, totals: {}, services: {} };
	for (const [name, g] of Object.entries(gws)) {
		cur.totals[name] = g.total.requests;
		cur.services[name] = {};
		for (const [svc, s] of Object.entries(g.services || {})) {
			cur.services[name][svc] = s.requests;
		}
	}
	data.rates = {};
	const prev = state.prev;
	for (const name of Object.keys(gws)) {
		const rates = (data.rates[name] = {});
		const dt = prev ? (cur.t - prev.t) / 1000 : 0;
		for (const [svc, n] of Object.entries(cur.services[name])) {
			const before = prev && prev.services[name] ? prev.services[name][svc] : undefined;
			rates[svc] = dt > 0 && before !== undefined ? Math.max(0, (n - before) / dt) : null;
		}
		if (dt > 0 && prev.totals[name] !== undefined) {
			push(state.rps, name, Math.max(0, (cur.totals[name] - prev.totals[name]) / dt));
		}
		push(state.p95, name, worstP95(data.profile.gateways[name] || {}));
	}
	state.prev = cur;
}

function push(series, name, v) {
	const pts = (series[name] = series[name] || []);
	pts.push(v);
	if (pts.length > HISTORY) pts.shift();
}

// worstP95 is the highest p95 of the last minute over the services: what
// the slowest service's users see.
function worstP95(prof) {
	let worst = 0;
	for (const [key, s] of Object.entries(prof)) {
		if (!key.includes("/")) worst = Math.max(worst, latency(s).p95_ms || 0);
	}
	return worst;
}

// latency is the last minute's window when it saw requests, else the whole run.
function latency(s) {
	return s && s.window && s.window.count > 0 ? s.window : s || {};
}

function draw() {
	const data = state.last;
	const names = Object.keys(data.stats.gateways || {}).sort();
	drawGatewaySelect(names);
	const name = state.gateway;
	const g = data.stats.gateways[name];
	if (!g) {
		$("shown").textContent = "no gateway in the running config";
		return;
	}
	const rps = state.rps[name] || [];
	$("rps-now").textContent = rps.length ? fmt(rps[rps.length - 1], 1) : "–";
	const p95 = state.p95[name] || [];
	$("p95-now").textContent = p95.length ? fmt(p95[p95.length - 1], 2) : "–";
	spark($("spark-rps"), rps);
	spark($("spark-p95"), p95);
	drawServices(name, data);
	drawCache(g.cache);
	drawMemory(data.memory.monitor);
}

function drawGatewaySelect(names) {
	const sel = $("gateway");
	if (!names.includes(state.gateway)) state.gateway = names[0] || "";
	if (sel.options.length !== names.length || [...sel.options].some((o, i) => o.value !== names[i])) {
		sel.replaceChildren(...names.map((n) => new Option(n, n)));
	}
	sel.value = state.gateway;
}

function drawServices(name, data) {
	const services = data.stats.gateways[name].services || {};
	const rates = data.rates[name] || {};
	const query = $("search").value.trim().toLowerCase();
	let names = Object.keys(services);
	const total = names.length;
	if (query) names = names.filter((n) => n.toLowerCase().includes(query));
	names.sort((a, b) => (rates[b] || 0) - (rates[a] || 0) || services[b].requests - services[a].requests || (a < b ? -1 : 1));
	const shown = names.slice(0, TOP);
	$("shown").textContent = shown.length < total
		? "showing " + shown.length + " of " + total + " services (busiest first" + (query ? ", matching the search" : "; search to find the others") + ")"
		: total + " services";
	const health = (data.health.gateways[name] || {}).services || {};
	const pools = (data.pools.gateways[name] || {}).services || {};
	const prof = data.profile.gateways[name] || {};
	$("services").tBodies[0].replaceChildren(...shown.map((svc) =>
		serviceRow(svc, services[svc], rates[svc], health[svc] || {}, pools[svc] || {}, latency(prof[svc]))));
}

function serviceRow(svc, s, rate, h, p, lat) {
	const tr = document.createElement("tr");
	tr.dataset.service = svc;
	const adm = p.admission || {};
	const targets = h.targets || [];
	const unhealthy = targets.filter((t) => !t.healthy || t.breaker === "open");
	const queued = adm.queued > 0;
	tr.className = unhealthy.length ? "bad" : queued ? "warn" : "";
	cell(tr, svc, "", "th");
	cell(tr, rate === null || rate === undefined ? "–" : fmt(rate, 1), "num");
	cell(tr, String(s.requests), "num requests");
	cell(tr, pct(s.cache_hit_ratio), "num");
	cell(tr, pct(s.error_rate), s.error_rate > 0.05 ? "num bad" : "num");
	cell(tr, fmt(lat.p50_ms, 2), "num");
	cell(tr, fmt(lat.p95_ms, 2), "num");
	cell(tr, fmt(lat.p99_ms, 2), "num");
	cell(tr, (adm.in_flight || 0) + " / " + (p.max_conns ? p.max_conns : "∞"), "num");
	cell(tr, (adm.queued || 0) + " / " + (p.max_pending || 0) + (queued ? " QUEUED" : ""), queued ? "num warn" : "num");
	const tcell = cell(tr, "", "targets");
	for (const t of targets) {
		const bad = !t.healthy || t.breaker === "open";
		let text = t.address + ": " + (t.healthy ? "healthy" : "UNHEALTHY");
		if (t.breaker && t.breaker !== "closed") text += ", breaker " + t.breaker.toUpperCase();
		if (t.last_error) text += " (" + t.last_error + ")";
		const span = document.createElement("span");
		span.className = "target " + (bad ? "bad" : "ok");
		span.textContent = text;
		tcell.append(span);
	}
	const c = h.credential;
	if (c) {
		let text = c.kind + ": " + c.state;
		if (c.refreshed_at) text += ", refreshed " + ago(c.refreshed_at);
		if (c.last_error) text += " (" + c.last_error + ")";
		cell(tr, text, c.state === "failing" ? "bad" : "");
	} else {
		cell(tr, "client's own", "muted");
	}
	return tr;
}

function cell(tr, text, cls, tag) {
	const td = document.createElement(tag || "td");
	if (tag === "th") td.scope = "row";
	td.textContent = text;
	if (cls) td.className = cls;
	tr.append(td);
	return td;
}

function drawCache(c) {
	const rows = [];
	if (!c) {
		rows.push(["Cache", "not configured for this gateway"]);
	} else {
		const meter = document.createElement("meter");
		meter.min = 0;
		meter.max = c.max_bytes || 1;
		meter.value = c.bytes;
		rows.push(["Size", [meter, " " + bytes(c.bytes) + " of " + bytes(c.max_bytes) + " (" + pct(c.bytes / (c.max_bytes || 1)) + ")"]]);
		rows.push(["Entries", String(c.entries)]);
		const served = c.hits + c.misses + c.stale + c.bypass;
		const share = (n) => n + " (" + pct(served ? n / served : 0) + ")";
		rows.push(["Hits", share(c.hits)], ["Misses", share(c.misses)], ["Stale served", share(c.stale)], ["Bypassed", share(c.bypass)]);
		rows.push(["Coalesced", String(c.coalesced)], ["Evictions", String(c.evictions)], ["Purged", String(c.purged)]);
		const r = c.redis;
		if (r) {
			rows.push(["Redis tier", r.up ? "up" : "DOWN since " + new Date(r.down_since).toLocaleTimeString(), r.up ? "ok" : "bad"]);
			rows.push(["Redis hits / misses / errors", r.hits + " / " + r.misses + " / " + r.errors, r.errors ? "warn" : ""]);
		}
	}
	kv($("cache"), rows);
}

function drawMemory(m) {
	const leak = $("leak");
	if (!m) {
		kv($("memory"), [["Monitor", "off"]]);
		leak.hidden = true;
		return;
	}
	const s = m.samples && m.samples.length ? m.samples[m.samples.length - 1] : {};
	const trend = m.trend || {};
	kv($("memory"), [
		["Heap in use", bytes(s.heap_inuse_bytes)],
		["Goroutines", String(s.goroutines)],
		["Heap trend", (trend.bytes_per_second >= 0 ? "+" : "") + bytes(trend.bytes_per_second) + "/s over " + Math.round(trend.window_seconds || 0) + " s"],
		["RSS", bytes(s.rss_bytes)],
		["Samples", String((m.samples || []).length) + ", every " + m.interval_seconds + " s"],
	]);
	leak.hidden = !m.leak_warning;
	leak.textContent = m.leak_warning ? "LEAK WARNING: the heap grew by more than " + bytes(m.leak_threshold_bytes) + " over the window" : "";
}

function kv(table, rows) {
	table.tBodies[0].replaceChildren(...rows.map(([k, v, cls]) => {
		const tr = document.createElement("tr");
		cell(tr, k, "", "th");
		const td = cell(tr, "", cls || "");
		td.append(...(Array.isArray(v) ? v : [v]));
		return tr;
	}));
}

function spark(svg, pts) {
	const NS = "http://www.w3.org/2000/svg";
	if (pts.length < 2) {
		svg.replaceChildren();
		return;
	}
	const max = Math.max(...pts, 1e-9);
	const step = 300 / (HISTORY - 1);
	const x0 = 300 - step * (pts.length - 1);
	const line = document.createElementNS(NS, "polyline");
	line.setAttribute("points", pts.map((v, i) => (x0 + i * step).toFixed(1) + "," + (38 - (v / max) * 36).toFixed(1)).join(" "));
	const title = document.createElementNS(NS, "title");
	title.textContent = "max " + fmt(max, 2) + ", last " + fmt(pts[pts.length - 1], 2);
	svg.replaceChildren(title, line);
}

async function purge(ev) {
	ev.preventDefault();
	const kind = $("purge-kind").value;
	const svc = $("purge-service").value.trim();
	const val = $("purge-value").value.trim();
	const q = new URLSearchParams();
	if (state.gateway) q.set("name", state.gateway);
	let what = "everything in the cache";
	if (kind === "service" || kind === "path") {
		q.set("service", svc);
		what = "everything of service " + svc;
	}
	if (kind === "path") {
		q.set("path", val);
		what = "path " + val + " of service " + svc;
	}
	if (kind === "tag") {
		q.set("tag", val);
		if (svc) q.set("service", svc);
		what = "every entry tagged " + val + (svc ? " in service " + svc : "");
	}
	const out = $("purge-result");
	if (!window.confirm("Purge " + what + "?")) {
		out.textContent = "not purged";
		return;
	}
	try {
		const res = await getJSON("/gateway/cache?" + q, { method: "DELETE" });
		out.textContent = "removed " + res.removed;
		out.className = "ok";
	} catch (err) {
		out.textContent = err.message;
		out.className = "bad";
	}
	refresh();
}

function fmt(v, digits) {
	return v === undefined || v === null || Number.isNaN(v) ? "–" : Number(v).toFixed(digits);
}
function pct(v) {
	return v === undefined || v === null ? "–" : (100 * v).toFixed(1) + " %";
}
function bytes(n) {
	if (n === undefined || n === null) return "–";
	const units = ["B", "KiB", "MiB", "GiB"];
	let i = 0;
	let v = Math.abs(n);
	while (v >= 1024 && i < units.length - 1) {
		v /= 1024;
		i++;
	}
	return (n < 0 ? "-" : "") + v.toFixed(i ? 1 : 0) + " " + units[i];
}
function ago(iso) {
	const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
	return s < 120 ? s + " s ago" : Math.round(s / 60) + " min ago";
}

$("gateway").addEventListener("change", (e) => {
	state.gateway = e.target.value;
	draw();
});
$("search").addEventListener("input", () => state.last && draw());
$("purge").addEventListener("submit", purge);
refresh();
setInterval(refresh, REFRESH_MS);
