// innet's status page: reads the API with the bearer token and redraws every REFRESH_MS.
// The token comes from the URL fragment (#token=...: a fragment never reaches a server or its
// logs) or the form, is kept in this tab's sessionStorage only, and is taken out of the
// address bar at once. Everything the API answers goes into the page as text, never as HTML.

const REFRESH_MS = 2000;
const TOKEN_KEY = "innet-api-token";
const HEAVY_HITTER_NFS = new Set(["cms", "precision"]);
const GRAPH_LIBRARY = "./node_modules/cytoscape/dist/cytoscape.esm.min.mjs";   // make setup installs it

const $ = (id) => document.getElementById(id);
let graph = null;   // the cytoscape instance, once the library loaded and the first topology came

function takeTokenFromFragment() {
  const fragment = new URLSearchParams(location.hash.slice(1));
  if (fragment.has("token")) {
    sessionStorage.setItem(TOKEN_KEY, fragment.get("token"));
    history.replaceState(null, "", location.pathname + location.search);
  }
  return sessionStorage.getItem(TOKEN_KEY);
}

class Unauthorised extends Error {}

async function api(path) {
  const answer = await fetch(path, {headers: {Authorization: `Bearer ${sessionStorage.getItem(TOKEN_KEY)}`}});
  if (answer.status === 401) throw new Unauthorised();
  const body = await answer.json();
  if (!answer.ok) throw new Error(`${path}: ${body.error}`);
  return body;
}

function askForToken(why) {
  sessionStorage.removeItem(TOKEN_KEY);
  $("status").hidden = true;
  $("login").hidden = false;
  if (why) $("login-why").textContent = why;
}

function bits(perSecond) {
  const units = [["Gbit/s", 1e9], ["Mbit/s", 1e6], ["kbit/s", 1e3]];
  for (const [unit, size] of units) if (perSecond >= size) return `${(perSecond / size).toFixed(1)} ${unit}`;
  return `${Math.round(perSecond)} bit/s`;
}

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function fill(tableId, rows, write) {
  const body = $(tableId).tBodies[0];
  body.replaceChildren();
  for (const item of rows) write(body.insertRow(), item);
}

function linkName(link) {
  return `${link.a.node} – ${link.b.node}`;
}

function showLinks(topology) {
  fill("links", topology.links, (row, link) => {
    row.dataset.link = `${link.a.node}-${link.b.node}`;
    cell(row, `${linkName(link)} (${link.a.interface} – ${link.b.interface})`);
    const load = link.load;
    const forward = cell(row, load ? bits(load.a_to_b_bits_per_s) : "–", "rate");
    const backward = cell(row, load ? bits(load.b_to_a_bits_per_s) : "–", "rate");
    if (load) {
      forward.dataset.bps = load.a_to_b_bits_per_s;
      backward.dataset.bps = load.b_to_a_bits_per_s;
    }
    cell(row, load && load.utilisation !== null ? `${(100 * load.utilisation).toFixed(1)} %` : "", "rate");
    cell(row, load ? `${load.measured_at.node}/${load.measured_at.interface}` : "no router end read");
  });
}

function showNodes(topology, status) {
  const instances = new Map(status.nodes.map((n) => [n.name, n.instances]));
  fill("nodes", topology.nodes, (row, node) => {
    row.dataset.node = node.name;
    cell(row, node.name);
    cell(row, node.role);
    cell(row, node.target);
    cell(row, (instances.get(node.name) || [])
      .map((i) => (i.health === "ok" ? i.id : `${i.id} (${i.health})`)).join(", "));
  });
}

function showServices(services) {
  const rows = services.flatMap((s) => s.paths.map((p) => ({service: s, path: p})));
  fill("services", rows, (row, {service, path}) => {
    row.dataset.service = service.key;
    cell(row, service.key);
    cell(row, path.graph);
    cell(row, String(path.spi));
    const nfs = new Map(path.hops.map(([instance, node]) => [node, instance]));
    cell(row, path.routers.map((r) => (nfs.has(r) ? `${r} [${nfs.get(r)}]` : r)).join(" → "));
  });
  if (rows.length === 0) fill("services", [null], (row) => cell(row, "no service deployed"));
}

function showPaths(paths) {
  fill("paths", paths.overrides, (row, override) => {
    row.dataset.flow = override.flow;
    cell(row, override.shown);
    cell(row, override.path.join(" → ") + (override.retiring ? ` (${override.retiring} old entries retiring)` : ""));
    cell(row, new Date(1000 * override.since).toLocaleTimeString());
  });
  if (paths.overrides.length === 0) fill("paths", [null], (row) => cell(row, "every flow takes its routed path"));
  const last = paths.decisions[0];
  $("last-decision").textContent = last
    ? `latest decision, ${new Date(1000 * last.at).toLocaleTimeString()}: ${last.summary}` : "";
}

function showFlows(tops) {
  const sections = tops.map((top) => {
    const section = document.createElement("div");
    section.dataset.instance = `${top.node}/${top.instance}`;
    const title = document.createElement("h3");
    title.textContent = `${top.instance} on ${top.node}, interval ${top.interval} (${top.duration.toFixed(1)} s)`;
    const table = document.createElement("table");
    table.createTHead().insertRow().append(...["flow", "packets", "packets/s", "bytes/s"].map((h) => {
      const th = document.createElement("th");
      th.textContent = h;
      return th;
    }));
    const body = table.createTBody();
    for (const flow of top.flows) {
      const row = body.insertRow();
      cell(row, flow.flow);
      cell(row, String(flow.packets), "rate");
      cell(row, flow.packets_per_s.toFixed(1), "rate");
      cell(row, flow.bytes_per_s === null ? "–" : flow.bytes_per_s.toFixed(0), "rate");
    }
    if (top.flows.length === 0) cell(body.insertRow(), "no packets this interval");
    section.append(title, table);
    return section;
  });
  if (sections.length === 0) {
    const none = document.createElement("p");
    none.textContent = "no cms or precision instance runs";
    sections.push(none);
  }
  $("flows").replaceChildren(...sections);
}

async function drawGraph(topology, services) {
  const onPath = new Set(services.flatMap((s) => s.routers));
  const elements = [
    ...topology.nodes.map((n) => ({data: {id: n.name, label: n.name},
                                  classes: [n.role, onPath.has(n.name) ? "service" : ""].join(" ")})),
    ...topology.links.map((l) => ({data: {
      id: `link-${l.index}`, source: l.a.node, target: l.b.node,
      label: l.load ? `${bits(l.load.a_to_b_bits_per_s)} to ${l.b.node} · ${bits(l.load.b_to_a_bits_per_s)} to ${l.a.node}`
                    : "",
      width: l.load ? 2 + Math.min(10, Math.log10(1 + Math.max(l.load.a_to_b_bits_per_s,
                                                               l.load.b_to_a_bits_per_s)) * 1.2) : 2}}))];
  if (graph === null) {
    const {default: cytoscape} = await import(GRAPH_LIBRARY);
    graph = cytoscape({container: $("graph"), elements, layout: {name: "breadthfirst", directed: false},
      style: [
        {selector: "node", style: {label: "data(label)", "text-valign": "center", color: "#fff",
                                   "background-color": "#5b7db1", width: 44, height: 44}},
        {selector: "node.host", style: {shape: "round-rectangle", "background-color": "#888"}},
        {selector: "node.service", style: {"border-width": 4, "border-color": "#e0a000"}},
        {selector: "edge", style: {label: "data(label)", width: "data(width)", "font-size": 10,
                                   "line-color": "#9ab", "text-background-color": "#fff",
                                   "text-background-opacity": 0.8}}]});
    window.innetGraph = graph;   // for whoever inspects the drawing (the browser test does)
    return;
  }
  const ids = new Set(elements.map((e) => e.data.id));
  graph.elements().filter((e) => !ids.has(e.id())).remove();
  for (const element of elements) {
    const existing = graph.getElementById(element.data.id);
    if (existing.nonempty()) {
      existing.data(element.data);
      existing.classes(element.classes || "");
    } else {
      graph.add(element);
    }
  }
}

async function refresh() {
  const [topology, status, services, paths] = await Promise.all(
    [api("/topology"), api("/status"), api("/services"), api("/paths?limit=1")]);
  const watched = status.nodes.flatMap((n) => n.instances.filter((i) => HEAVY_HITTER_NFS.has(i.nf))
    .map((i) => ({node: n.name, instance: i.id})));
  const tops = await Promise.all(watched.map((w) =>
    api(`/flows/top?${new URLSearchParams({node: w.node, nf: w.instance, k: 5})}`)
      .catch((error) => ({node: w.node, instance: w.instance, interval: 0, duration: 0, flows: [],
                          error: error.message}))));
  $("testbed").textContent = topology.topology
    ? `testbed ${topology.topology} (${topology.running ? "running" : "not running"}), scope ${status.scope}`
    : `no testbed recorded, scope ${status.scope}`;
  showLinks(topology);
  showNodes(topology, status);
  showServices(services);
  showPaths(paths);
  showFlows(tops);
  $("updated").textContent = `load interval ${topology.interval}, ${new Date().toLocaleTimeString()}`;
  $("status").hidden = false;
  $("login").hidden = true;
  try {
    await drawGraph(topology, services);
  } catch (error) {
    problem(`cannot draw the topology (${error.message}); run \`make setup\`, which installs the graph library`);
    return;
  }
  problem(null);
}

function problem(text) {
  $("problem").hidden = text === null;
  $("problem").textContent = text || "";
}

async function loop() {
  if (!sessionStorage.getItem(TOKEN_KEY)) {
    askForToken();
    return;
  }
  try {
    await refresh();
  } catch (error) {
    if (error instanceof Unauthorised) {
      askForToken("The API refused that token. Give the one in the API's token file.");
      return;
    }
    problem(`cannot read the API: ${error.message}`);
  }
  setTimeout(loop, REFRESH_MS);
}

$("login").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
  $("token").value = "";
  loop();
});
takeTokenFromFragment();
loop();
