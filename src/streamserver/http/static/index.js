// The stream list at /: redraws the table from /api/streams every few seconds.
// Every value from the server is set with textContent or as an attribute: never as HTML.
"use strict";

const REFRESH_MS = 3000;

function describeMedia(video, audio) {
  const parts = [];
  if (video) {
    const words = [video.codec, video.profile, video.level];
    if (video.width && video.height) words.push(`${video.width}x${video.height}`);
    if (video.fps) words.push(`${Number(video.fps.toFixed(3))} fps`);
    parts.push(words.filter(Boolean).join(" "));
  }
  if (audio) {
    const words = [audio.codec, audio.profile];
    if (audio.sample_rate) words.push(`${audio.sample_rate / 1000} kHz`);
    if (audio.channels) words.push(`${audio.channels} ch`);
    parts.push(words.filter(Boolean).join(" "));
  }
  return parts.join(", ") || "-";
}

function describeUptime(seconds) {
  const total = Math.max(0, Math.floor(seconds));
  const two = (n) => String(n).padStart(2, "0");
  if (total < 60) return `${total} s`;
  if (total < 3600) return `${Math.floor(total / 60)} min ${two(total % 60)} s`;
  return `${Math.floor(total / 3600)} h ${two(Math.floor((total % 3600) / 60))} min`;
}

function streamPath(stream) {
  const app = stream.app.split("/").map(encodeURIComponent).join("/");
  return `/${app}/${encodeURIComponent(stream.name)}`;
}

function link(href, text) {
  const a = document.createElement("a");
  a.href = href;
  a.textContent = text;
  return a;
}

function cell(row, ...content) {
  const td = row.insertCell();
  for (const part of content) td.append(part);
  return td;
}

function render(streams) {
  const live = streams.filter((s) => s.publisher);
  const table = document.getElementById("streams");
  const body = table.tBodies[0];
  const rows = live.map((stream) => {
    const path = streamPath(stream);
    const key = `${stream.app}/${stream.name}`;
    const title = stream.title || key;
    const row = document.createElement("tr");
    const first = cell(row, link(`/watch${path}`, title));
    if (title !== key) {
      const name = document.createElement("span");
      name.className = "name";
      name.textContent = key;
      first.append(" ", name);
    }
    cell(row, describeMedia(stream.video, stream.audio));
    cell(row, String(stream.viewers.total));
    cell(row, describeUptime(stream.publisher.uptime));
    cell(row, link(`/watch${path}`, "watch"), " \u00b7 ", link(`${path}.flv`, `${path}.flv`),
         " \u00b7 ", link(`/api/streams${path}`, "API"));
    return row;
  });
  body.replaceChildren(...rows);
  table.hidden = rows.length === 0;
  document.getElementById("summary").textContent = rows.length
    ? `${rows.length} live stream${rows.length === 1 ? "" : "s"}:`
    : "No stream is live right now.";
}

async function refresh() {
  try {
    const answer = await fetch("/api/streams", {cache: "no-store"});
    if (answer.ok) render((await answer.json()).streams);
  } catch (error) {
    // the server restarts or the network is gone: try again at the next tick
  }
}

setInterval(refresh, REFRESH_MS);
