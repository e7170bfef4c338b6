// The watch page: the stream's player and its chat room (docs/watch.md).
//
// Player: LL-HLS through hls.js (lowLatencyMode), native HLS where hls.js cannot run
// and the browser plays HLS itself (Safari), or HTTP-FLV / WebSocket-FLV through
// mpegts.js, chosen with the "Player" switch.  /api/streams/APP/NAME is polled: it
// says whether someone publishes (the page waits, and starts again by itself on
// a republish) and how many watch.
//
// Chat: the WebSocket /APP/NAME/chat (JSON).  Every text from the server is put in
// the page with textContent: never as HTML.
"use strict";

const config = JSON.parse(document.getElementById("watch-config").textContent);
const query = location.search; // a signed ?token= goes on every URL, as for the player
const $ = (id) => document.getElementById(id);
const video = $("video");
const statusLine = $("status");
const transport = $("transport");

const POLL_MS = 2000;
const RETRY_MS = 3000;
const MAX_SHOWN = 300;

// --- the player ----------------------------------------------------------------

let player = null;     // {kind, destroy()}
let publisher = null;  // the publisher's connection id while it publishes
let retry = null;

function stopPlayer() {
  clearTimeout(retry);
  if (player) { player.destroy(); player = null; }
  video.removeAttribute("src");
  video.load();
}

function again(text) {
  statusLine.textContent = text;
  if (player) { player.destroy(); player = null; }
  clearTimeout(retry);
  retry = setTimeout(startPlayer, RETRY_MS);
}

function play() {
  const started = video.play();
  if (started) started.catch(() => {});
}

function startHls() {
  const url = `${config.path}/index.m3u8${query}`;
  if (window.Hls && Hls.isSupported()) {
    const hls = new Hls({lowLatencyMode: true, backBufferLength: 30});
    hls.on(Hls.Events.ERROR, (event, data) => {
      if (data.fatal) again("The stream stalled; starting again...");
    });
    hls.on(Hls.Events.MANIFEST_PARSED, play);
    hls.loadSource(url);
    hls.attachMedia(video);
    return {kind: "hls.js", destroy: () => hls.destroy()};
  }
  if (video.canPlayType("application/vnd.apple.mpegurl")) {
    video.src = url;
    play();
    const failed = () => again("The stream stalled; starting again...");
    video.addEventListener("error", failed, {once: true});
    return {kind: "native HLS", destroy: () => video.removeEventListener("error", failed)};
  }
  statusLine.textContent = "This browser plays no HLS; using HTTP-FLV.";
  transport.value = "http-flv";
  return startFlv("http-flv");
}

function startFlv(kind) {
  if (!window.mpegts || !mpegts.getFeatureList().mseLivePlayback) {
    statusLine.textContent = "This browser cannot play FLV (no Media Source Extensions).";
    return null;
  }
  const base = kind === "ws-flv"
    ? (location.protocol === "https:" ? "wss://" : "ws://") + location.host
    : location.origin;
  const flv = mpegts.createPlayer(
    {type: "flv", isLive: true, url: `${base}${config.path}.flv${query}`},
    {enableStashBuffer: false, liveSync: true});
  flv.on(mpegts.Events.ERROR, () => again("Waiting for the publisher..."));
  flv.on(mpegts.Events.LOADING_COMPLETE, () => again("The stream ended; waiting for it..."));
  flv.attachMediaElement(video);
  flv.load();
  play();
  return {kind, destroy: () => flv.destroy()};
}

function startPlayer() {
  stopPlayer();
  if (publisher === null) {
    statusLine.textContent = "Waiting for the publisher...";
    return;
  }
  statusLine.textContent = "Connecting...";
  player = transport.value === "hls" ? startHls() : startFlv(transport.value);
}

video.addEventListener("playing", () => {
  statusLine.textContent = `Live (${player ? player.kind : transport.value})`;
});
transport.addEventListener("change", startPlayer);

async function poll() {
  let entry = null;
  try {
    const answer = await fetch(`/api/streams${config.path}`, {cache: "no-store"});
    entry = answer.ok ? await answer.json() : null;
  } catch (error) {
    return; // the server is unreachable: keep what plays, ask again later
  }
  const now = entry && entry.publisher ? entry.publisher.id : null;
  if (now !== publisher) {
    publisher = now;
    startPlayer(); // published, republished (a new session) or gone
  }
  // HLS players are not counted: the server sees their requests, not them
  const watching = entry ? entry.viewers.total : 0;
  const chatting = entry ? entry.chat.participants : 0;
  $("viewers").textContent = `${watching} watching (RTMP, FLV) \u00b7 ${chatting} in the chat`;
  if (entry && entry.title) $("title").textContent = entry.title;
}

// --- the chat ------------------------------------------------------------------

const list = $("messages");
const chatStatus = $("chat-status");
const nickField = $("nick");
const textField = $("text");
let socket = null;
let joined = false;
let nextRef = 1;
const pending = new Map(); // ref -> text, restored if refused

nickField.value = localStorage.getItem("streamserver.nick") || "";
textField.maxLength = config.maxLength;

function show(message) {
  const item = document.createElement("li");
  if (message.history) item.className = "history";
  const nick = document.createElement("span");
  nick.className = "nick";
  nick.textContent = message.nick;
  const text = document.createElement("span");
  text.className = "text";
  text.textContent = message.text;
  item.title = new Date(message.time).toLocaleTimeString();
  item.dataset.id = String(message.id);
  item.append(nick, text);
  const atBottom = list.scrollTop + list.clientHeight >= list.scrollHeight - 4;
  list.append(item);
  while (list.children.length > MAX_SHOWN) list.firstElementChild.remove();
  if (atBottom) list.scrollTop = list.scrollHeight;
}

const REFUSALS = {
  "Chat.Muted": "You are muted in this room.",
  "Chat.Empty": "Nothing to send.",
  "Chat.TooLong": `Messages are at most ${config.maxLength} characters.`,
  "Chat.RateLimited": "Too many messages: wait a few seconds.",
  "Chat.NotInRoom": "Not in the room yet: try again in a moment.",
  "Chat.Unauthorized": "This stream's chat needs a valid token.",
};

function received(message) {
  switch (message.type) {
    case "joined":
      joined = true;
      list.replaceChildren();
      chatStatus.textContent = "";
      nickField.placeholder = message.nick;
      break;
    case "message":
      show(message);
      break;
    case "sent":
      pending.delete(message.ref);
      break;
    case "error": {
      const words = REFUSALS[message.code] || message.description;
      chatStatus.textContent = `${words} (${message.code})`;
      if (pending.has(message.ref) && !textField.value) textField.value = pending.get(message.ref);
      pending.delete(message.ref);
      break;
    }
  }
}

function connectChat() {
  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  const ws = new WebSocket(`${scheme}${location.host}${config.path}/chat${query}`);
  socket = ws;
  joined = false;
  ws.addEventListener("open", () => {
    const join = {type: "join"};
    if (nickField.value.trim()) join.nick = nickField.value.trim();
    ws.send(JSON.stringify(join));
  });
  ws.addEventListener("message", (event) => received(JSON.parse(event.data)));
  ws.addEventListener("close", (event) => {
    if (socket !== ws) return; // replaced by a rejoin
    joined = false;
    socket = null;
    if (event.code === 1008 && chatStatus.textContent.includes("Chat.Unauthorized")) return;
    if (!chatStatus.textContent) chatStatus.textContent = "Chat disconnected; reconnecting...";
    setTimeout(connectChat, RETRY_MS);
  });
}

nickField.addEventListener("change", () => {
  localStorage.setItem("streamserver.nick", nickField.value.trim());
  if (socket) { const old = socket; socket = null; old.close(); }
  connectChat(); // a nick is given when joining: join again with the new one
});

$("chat-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = textField.value;
  if (!socket || !joined) {
    chatStatus.textContent = REFUSALS["Chat.NotInRoom"];
    return;
  }
  const ref = nextRef++;
  pending.set(ref, text);
  socket.send(JSON.stringify({type: "send", text, ref}));
  chatStatus.textContent = "";
  textField.value = "";
});

// --- moderation (with --api-token) -----------------------------------------------

const tokenField = $("token");
tokenField.value = sessionStorage.getItem("streamserver.token") || "";
tokenField.addEventListener("change", () => {
  sessionStorage.setItem("streamserver.token", tokenField.value);
});

list.addEventListener("click", (event) => {
  const nick = event.target.closest(".nick");
  if (nick && !$("moderation").hidden) $("target").value = nick.textContent;
});

$("moderation-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const action = event.submitter ? event.submitter.value : "mute";
  const line = $("moderation-status");
  const nick = $("target").value.trim();
  if (action !== "clear" && !nick) { line.textContent = "Which nick?"; return; }
  sessionStorage.setItem("streamserver.token", tokenField.value);
  try {
    const answer = await fetch(`/api/streams${config.path}/chat/${action}`, {
      method: "POST",
      headers: {"Authorization": `Bearer ${tokenField.value}`, "Content-Type": "application/json"},
      body: action === "clear" ? "{}" : JSON.stringify({nick}),
    });
    const body = await answer.json();
    if (!answer.ok) { line.textContent = `Refused: ${body.error}`; return; }
    if (action === "clear") {
      line.textContent = `Cleared ${body.cleared} messages from the history.`;
      list.replaceChildren();
    } else if (action === "kick") {
      line.textContent = `Kicked ${body.kicked.length} connection(s) of ${body.nick}.`;
    } else {
      line.textContent = `${body.nick} is ${body.muted ? "muted" : "not muted"}.`;
    }
  } catch (error) {
    line.textContent = "The server did not answer.";
  }
});

async function moderationAvailable() {
  try {
    const answer = await fetch("/api", {cache: "no-store"});
    if (answer.ok && (await answer.json()).writable) $("moderation").hidden = false;
  } catch (error) {
    // no API: no moderation panel
  }
}

// --- start -----------------------------------------------------------------------

statusLine.textContent = "Waiting for the publisher...";
poll();
setInterval(poll, POLL_MS);
connectChat();
moderationAvailable();
