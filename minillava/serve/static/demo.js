// The web demo: pick a picture, ask about it, read the answer as it is generated.
//
// It talks to `minillava serve` through the same OpenAI-compatible API as any client would:
// POST v1/chat/completions with `stream: true`, the picture as a data: URL in an image_url part
// of the first user turn, and the whole conversation sent again each turn (a chat model has no
// memory between calls). The answer comes back as server-sent events, one text piece each.
// URLs are relative, so the page also works behind a proxy that serves it under a sub-path.
// Open it as /?seed=N to start with that toy scene.
// The model's text is only ever set as textContent, never parsed as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { model: null, image: null, messages: [], controller: null };

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("api-key").value.trim();   // kept in this page only: never stored, never logged
  if (key) h.Authorization = `Bearer ${key}`;
  return h;
}

function showError(text) {
  $("error").textContent = text;
  $("error").hidden = !text;
}

async function errorText(response) {   // the server's errors are in OpenAI's shape: {"error": {"message"}}
  try {
    return (await response.json()).error.message;
  } catch {
    return `${response.status} ${response.statusText}`;
  }
}

async function loadModel() {
  const response = await fetch("v1/models", { headers: headers() });
  if (!response.ok) {
    $("model").textContent = "not connected";
    showError(await errorText(response));
    return;
  }
  state.model = (await response.json()).data[0].id;
  $("model").textContent = state.model;
}

function setBusy(busy) {
  document.body.dataset.state = busy ? "answering" : "idle";   // tests wait for "idle"
  for (const id of ["send", "scene", "reset", "upload"]) $(id).disabled = busy;
  $("stop").hidden = !busy;
}

function newConversation() {
  state.messages = [];
  $("log").replaceChildren();
  showError("");
}

function setPicture(dataUrl, label, seed) {
  state.image = dataUrl;
  $("image").src = dataUrl;
  $("image-label").textContent = label;
  if (seed === undefined) delete $("image").dataset.seed;
  else $("image").dataset.seed = seed;
  newConversation();   // another picture: another conversation
}

function asDataUrl(blob) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(blob);
  });
}

// A toy scene: the one with this seed, or (seed null) one the server draws from the scenes the
// assistant never trained on.
async function showScene(seed) {
  const query = seed === null ? "" : `?seed=${encodeURIComponent(seed)}`;
  const response = await fetch(`v1/toy_scene${query}`, { headers: headers() });
  if (!response.ok) return showError(await errorText(response));
  const scene = await response.json();
  setPicture(scene.image_url, `toy scene ${scene.seed}`, scene.seed);
}

async function upload(event) {
  const file = event.target.files[0];
  if (file) setPicture(await asDataUrl(file), file.name);
  event.target.value = "";   // choosing the same file again is a change too
}

function addMessage(role, text) {
  const item = document.createElement("li");
  item.className = role;
  item.textContent = text;
  $("log").append(item);
  return item;
}

// The text pieces of a streamed chat completion: one server-sent event per chunk, "[DONE]" last.
async function* deltas(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      for (const line of event.split("\n")) {
        if (!line.startsWith("data:")) continue;
        const data = line.slice(5).trim();
        if (data === "[DONE]") return;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new Error(chunk.error.message);
        const piece = chunk.choices?.[0]?.delta?.content;
        if (piece) yield piece;
      }
    }
  }
}

async function ask(event) {
  event.preventDefault();
  const question = $("question").value.trim();
  if (!question || document.body.dataset.state !== "idle") return;
  showError("");
  // The picture goes with the first question only, as the assistant was trained.
  const first = state.messages.length === 0 && state.image;
  const content = first ? [{ type: "image_url", image_url: { url: state.image } }, { type: "text", text: question }]
                        : question;
  const sent = [...state.messages, { role: "user", content }];
  const asked = addMessage("user", question);
  const bubble = addMessage("assistant", "");
  bubble.classList.add("streaming");
  $("question").value = "";
  state.controller = new AbortController();
  setBusy(true);
  let answer = "";
  try {
    const response = await fetch("v1/chat/completions", {
      method: "POST", headers: headers(), signal: state.controller.signal,
      body: JSON.stringify({ model: state.model, messages: sent, stream: true }),
    });
    if (!response.ok) throw new Error(await errorText(response));
    for await (const piece of deltas(response)) {
      answer += piece;
      bubble.textContent = answer.trimStart();
    }
    state.messages = [...sent, { role: "assistant", content: answer.trim() }];
    bubble.classList.add("done");
  } catch (err) {
    if (err.name === "AbortError") {   // Stop: the partial answer stays on screen, the turn is forgotten
      bubble.classList.add("stopped");
    } else {   // refused or failed: take the turn back, and give the question back to edit
      asked.remove();
      bubble.remove();
      $("question").value = question;
      showError(err.message);
    }
  } finally {
    bubble.classList.remove("streaming");
    setBusy(false);
    $("question").focus();
  }
}

$("scene").addEventListener("click", () => showScene(null));
$("upload").addEventListener("change", upload);
$("reset").addEventListener("click", newConversation);
$("stop").addEventListener("click", () => state.controller?.abort());
$("ask").addEventListener("submit", ask);
loadModel();
const linked = new URLSearchParams(location.search).get("seed");   // a link to one scene: /?seed=1000042
if (linked !== null) showScene(linked);
