// Lexora console: the two things a server-rendered page cannot do on its own. No libraries.
// 1. Copy buttons: <button data-copy="input-id">.
// 2. The playground: streams /v1/chat/completions (SSE) with the key the user gives.
"use strict";

document.addEventListener("click", async (event) => {
  const button = event.target.closest("[data-copy]");
  if (!button) return;
  const field = document.getElementById(button.dataset.copy);
  field.select();
  try { await navigator.clipboard.writeText(field.value); } catch (_) { document.execCommand("copy"); }
  button.textContent = "Copied";
});

function csrfToken() {
  return document.querySelector('meta[name="csrf-token"]').content;
}

async function createPlaygroundKey() {
  const response = await fetch("/v1/keys", {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": csrfToken() },
    body: JSON.stringify({ name: "Playground" }),
  });
  const body = await response.json();
  if (!response.ok) throw new Error(body.error ? body.error.message : "could not create a key");
  return body.api_key;
}

async function streamChat(form) {
  const answer = document.getElementById("pg-answer");
  const usage = document.getElementById("pg-usage");
  const key = document.getElementById("pg-key").value.trim();
  answer.textContent = "";
  usage.textContent = "";
  if (!key) { usage.textContent = "Enter an API key first, or create a playground key."; return; }
  const response = await fetch("/v1/chat/completions", {
    method: "POST",
    headers: { "Content-Type": "application/json", Authorization: "Bearer " + key },
    body: JSON.stringify({
      model: document.getElementById("pg-model").value,
      messages: [{ role: "user", content: document.getElementById("pg-message").value }],
      max_tokens: Number(document.getElementById("pg-max").value) || 128,
      stream: true,
      stream_options: { include_usage: true },
    }),
  });
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    usage.textContent = body.error ? body.error.message : "HTTP " + response.status;
    return;
  }
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = event.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("");
      if (!data || data === "[DONE]") continue;
      const chunk = JSON.parse(data);
      if (chunk.error) { usage.textContent = chunk.error.message; continue; }
      for (const choice of chunk.choices || []) answer.textContent += (choice.delta && choice.delta.content) || "";
      if (chunk.usage) {
        usage.textContent = `${chunk.usage.prompt_tokens} tokens in, ${chunk.usage.completion_tokens} out, cost $${chunk.usage.cost}`;
      }
    }
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("playground");
  if (!form) return;
  const keyField = document.getElementById("pg-key");
  keyField.value = sessionStorage.getItem("lexora-playground-key") || "";
  keyField.addEventListener("change", () => sessionStorage.setItem("lexora-playground-key", keyField.value.trim()));
  document.getElementById("pg-new-key").addEventListener("click", async () => {
    try {
      keyField.value = await createPlaygroundKey();
      sessionStorage.setItem("lexora-playground-key", keyField.value);
    } catch (error) {
      document.getElementById("pg-usage").textContent = error.message;
    }
  });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    streamChat(form).catch((error) => { document.getElementById("pg-usage").textContent = error.message; });
  });
});
