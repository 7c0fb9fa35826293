// The lane page: everything arrives as Server-Sent Events from /events (no polling here).
// Text from the agent is only ever set with textContent, never parsed as HTML.
"use strict";

const MAX_CROSSINGS = 20;
const MAX_READS = 40;

const $ = (id) => document.getElementById(id);

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

function clock(iso) {
  if (!iso) return "";
  const at = new Date(iso);
  return Number.isNaN(at.getTime()) ? String(iso) : at.toLocaleTimeString([], { hour12: false });
}

function seconds(value) {
  if (value === null || value === undefined) return "–";
  if (value < 120) return `${Number(value).toFixed(1)} s`;
  if (value < 7200) return `${Math.round(value / 60)} min`;
  return `${(value / 3600).toFixed(1)} h`;
}

// --- the vehicle at the booth -------------------------------------------------------------

function cardRow(card) {
  const row = el("tr");
  row.dataset.association = card.association || "";
  row.dataset.result = card.result || "";
  row.append(
    el("td", card.ref, "ref"),
    el("td", card.result, `result result-${card.result}`),
    el("td", card.program || "–"),
    el("td", card.association, `assoc assoc-${card.association}`),
    el("td", card.reads),
    el("td", card.best_rssi_dbm),
    el("td", (card.antennas || []).join(", ")),
  );
  return row;
}

function renderBooth(crossing) {
  const booth = $("booth");
  if (!crossing) {
    booth.dataset.state = "empty";
    booth.dataset.crossingId = "";
    $("booth-empty").hidden = false;
    $("booth-vehicle").hidden = true;
    return;
  }
  booth.dataset.state = crossing.phase || "opened";
  booth.dataset.crossingId = crossing.crossing_id || "";
  $("booth-empty").hidden = true;
  $("booth-vehicle").hidden = false;
  const rec = $("booth-recommendation");
  rec.textContent = crossing.recommendation || "";
  rec.dataset.rec = crossing.recommendation || "";
  $("booth-phase").textContent = crossing.phase === "closed" ? "departed" : crossing.vehicle_detected ? "vehicle on the loop" : "cards, no vehicle on the loop";
  $("booth-provisional").hidden = !crossing.provisional;
  const reasons = $("booth-reasons");
  reasons.replaceChildren(...(crossing.reasons || []).map((reason) => el("li", reason)));
  $("booth-pending").textContent = (crossing.pending || []).length ? `may still change: ${crossing.pending.join(", ")}` : "";
  const plate = crossing.plate;
  const plateBox = $("booth-plate");
  plateBox.replaceChildren();
  if (plate && plate.text) {
    plateBox.append(el("span", plate.text, "plate-text"), el("span", ` ${Math.round((plate.confidence || 0) * 100)} % · ${plate.match}`, "plate-meta"));
  } else {
    plateBox.append(el("span", plate ? `plate: ${plate.match}` : "no plate", "plate-meta"));
  }
  const crop = $("booth-plate-crop");
  if (crossing.plate_crop && crossing.crossing_id) {
    crop.src = `/plate/${encodeURIComponent(crossing.crossing_id)}.jpg?r=${crossing.revision}`;
    crop.hidden = false;
  } else {
    crop.hidden = true;
    crop.removeAttribute("src");
  }
  $("booth-cards").replaceChildren(...(crossing.cards || []).map(cardRow));
}

// --- crossings and reads ------------------------------------------------------------------

function crossingRow(crossing) {
  const row = el("tr");
  row.dataset.crossingId = crossing.crossing_id || "";
  row.dataset.rec = crossing.recommendation || "";
  const cards = (crossing.cards || []).map((card) => `${card.ref} ${card.result}`).join("; ");
  const plate = crossing.plate && crossing.plate.text ? `${crossing.plate.text} (${crossing.plate.match})` : "–";
  row.append(
    el("td", clock(crossing.closed_at)),
    el("td", crossing.seq),
    el("td", crossing.recommendation, "rec"),
    el("td", (crossing.reasons || []).join(", ") || "–"),
    el("td", cards || "none"),
    el("td", plate),
  );
  row.cells[2].dataset.rec = crossing.recommendation || "";
  return row;
}

function addCrossing(crossing) {
  const body = $("crossings");
  body.prepend(crossingRow(crossing));
  while (body.rows.length > MAX_CROSSINGS) body.deleteRow(-1);
}

function readRow(read) {
  const row = el("tr");
  row.dataset.antenna = read.antenna;
  const bar = el("span", "", "bar");
  const strength = Math.max(0, Math.min(1, ((read.rssi_dbm ?? -90) + 90) / 60));
  bar.style.width = `${Math.round(strength * 100)}%`;
  const cell = el("td", null, "bar-cell");
  cell.append(bar);
  row.append(el("td", clock(read.at)), el("td", read.ref, "ref"), el("td", read.antenna), el("td", read.rssi_dbm), cell);
  return row;
}

function addReads(reads) {
  const body = $("reads");
  // Newest first: the batch arrives oldest first.
  for (const read of reads) body.prepend(readRow(read));
  while (body.rows.length > MAX_READS) body.deleteRow(-1);
}

// --- health -------------------------------------------------------------------------------

const FAULT_GROUPS = [
  ["camera", (code) => code.startsWith("camera_") || code === "reader_unavailable"],
  ["loops", (code) => code.startsWith("loop_")],
  ["reader", (code) => /^(reader_|controller_|clock_|link_)/i.test(code) || code.toUpperCase().startsWith("READER")],
  ["uplink", (code) => /^(publish_|uplink|ack_|broker)/i.test(code)],
  ["outbox", (code) => /^(outbox_|journal_)/i.test(code)],
  ["cache", (code) => code.startsWith("cache_") || code.startsWith("bundle_")],
];

function groupOf(code) {
  for (const [group, test] of FAULT_GROUPS) if (test(code)) return group;
  return "other";
}

function setHealth(name, level, detail) {
  const row = $(`health-${name}`);
  if (!row) return;
  row.dataset.level = level;
  row.querySelector(".detail").textContent = detail;
}

function renderHealth(doc) {
  if (doc.lane) {
    const name = `Lane ${doc.lane.port_id}/${doc.lane.lane_id}`;
    $("lane-name").textContent = name;
    document.title = name;
  }
  const faults = Array.isArray(doc.faults) ? doc.faults : [];
  const byGroup = {};
  for (const fault of faults) (byGroup[groupOf(fault.code)] ||= []).push(fault);
  const faultText = (group) => (byGroup[group] || []).map((f) => f.code).join(", ");

  const reader = doc.reader;
  if (reader && !reader.error) {
    const link = reader.link || {};
    const frames = reader.frames ?? link.frames_ok;
    const crc = reader.crc_errors ?? link.crc_errors;
    const who = [reader.family, reader.controller_id || reader.reader_id, reader.firmware && `fw ${reader.firmware}`].filter(Boolean).join(" ");
    const parts = [reader.up ? "up" : `down${reader.down_reason ? `: ${reader.down_reason}` : ""}`, who];
    if (frames !== undefined) parts.push(`${frames} frames`);
    if (crc !== undefined) parts.push(`${crc} CRC errors`);
    if (faultText("reader")) parts.push(faultText("reader"));
    setHealth("reader", !reader.up ? "fail" : byGroup.reader ? "warn" : "ok", parts.join(" · "));
  } else {
    setHealth("reader", "unknown", "no reader section");
  }

  setHealth("loops", byGroup.loops ? "warn" : "ok", faultText("loops") || "no loop fault");

  const camera = doc.camera;
  if (camera && !camera.error) {
    const streaming = camera.state === "streaming";
    const parts = [camera.state, `${camera.fps ?? 0} fps`];
    if (camera.last_inference_ms !== null && camera.last_inference_ms !== undefined) parts.push(`plate read ${camera.last_inference_ms} ms`);
    if (camera.plate_fault) parts.push(camera.plate_fault);
    setHealth("camera", !streaming ? "fail" : camera.plate_fault ? "warn" : "ok", parts.join(" · "));
  } else {
    setHealth("camera", "off", "no camera on this lane");
  }

  const uplink = doc.uplink;
  if (uplink && !uplink.error) {
    const up = uplink.state === "connected";
    const parts = [uplink.state, uplink.broker, `${uplink.in_flight ?? 0} in flight`];
    if (faultText("uplink")) parts.push(faultText("uplink"));
    setHealth("uplink", up ? (byGroup.uplink ? "warn" : "ok") : "fail", parts.filter(Boolean).join(" · "));
  } else {
    setHealth("uplink", "unknown", "no uplink section");
  }

  const outbox = doc.outbox;
  if (outbox && !outbox.error) {
    const held = outbox.held_in_memory || 0;
    const age = outbox.oldest_unsent_age_s;
    const parts = [`${outbox.depth} waiting`, `oldest ${seconds(age)}`];
    if (held) parts.push(`${held} held in memory`);
    if (faultText("outbox")) parts.push(faultText("outbox"));
    const level = held || byGroup.outbox ? "fail" : age !== null && age > 60 ? "warn" : "ok";
    setHealth("outbox", level, parts.join(" · "));
  } else {
    setHealth("outbox", "unknown", "no outbox section");
  }

  const cache = doc.cache;
  if (cache && !cache.error) {
    const parts = [cache.bundle_version === null || cache.bundle_version === undefined ? "plain import" : `bundle ${cache.bundle_version}`, `age ${seconds(cache.age_s)}`];
    if (cache.stale) parts.push("STALE");
    if (faultText("cache")) parts.push(faultText("cache"));
    setHealth("cache", cache.stale ? "warn" : byGroup.cache ? "warn" : "ok", parts.join(" · "));
  } else {
    setHealth("cache", "unknown", "no cache section");
  }

  $("faults").replaceChildren(...faults.map((fault) => el("li", `${fault.code}: ${fault.message}`)));
  const count = $("fault-count");
  count.hidden = faults.length === 0;
  count.textContent = `${faults.length} fault${faults.length === 1 ? "" : "s"}`;
}

// --- camera -------------------------------------------------------------------------------

function setCamera(present) {
  $("snapshot-none").hidden = present;
  if (!present) $("snapshot").hidden = true;
}

function loadSnapshot(n) {
  const image = $("snapshot");
  image.onload = () => { image.hidden = false; };
  image.src = `/snapshot.jpg?n=${n}`;
}

// --- the event stream ---------------------------------------------------------------------

function connect() {
  const source = new EventSource("/events");
  const connection = $("connection");
  source.onopen = () => { connection.dataset.state = "live"; connection.textContent = "live"; };
  source.onerror = () => { connection.dataset.state = "reconnecting"; connection.textContent = "reconnecting…"; };
  const on = (kind, handler) => source.addEventListener(kind, (event) => handler(JSON.parse(event.data)));
  on("hello", (data) => {
    renderBooth(data.crossing);
    $("crossings").replaceChildren(...(data.crossings || []).map(crossingRow));
    $("reads").replaceChildren(...(data.reads || []).map(readRow));
    setCamera(Boolean(data.camera));
    if (data.status) renderHealth(data.status);
    if (data.camera) loadSnapshot(0);
    document.body.dataset.ready = "true";
  });
  on("live", (data) => renderBooth(data.crossing));
  on("crossing", addCrossing);
  on("reads", (data) => addReads(data.reads || []));
  on("status", renderHealth);
  on("snapshot", (data) => loadSnapshot(data.n));
  on("dropped", (data) => {
    const note = $("dropped");
    const total = Number(note.dataset.total || 0) + data.count;
    note.dataset.total = String(total);
    note.textContent = `${total} updates missed (this screen was too slow)`;
    note.hidden = false;
  });
  on("full", (data) => { connection.dataset.state = "full"; connection.textContent = data.message; source.close(); });
}

connect();
