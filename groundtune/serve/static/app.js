// The chat page: streams /v1/chat/completions (OpenAI's SSE chunks) and shows the `citations` extension.
"use strict";
const $ = (id) => document.getElementById(id);
const history = [];  // {role, content} of the conversation so far

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("api-key").value.trim();
  if (key) h["Authorization"] = "Bearer " + key;
  return h;
}

async function loadModels() {
  try {
    const r = await fetch("/v1/models", { headers: headers() });
    const body = await r.json();
    if (!r.ok) throw new Error(body.error ? body.error.message : r.statusText);
    const select = $("model");
    select.textContent = "";
    for (const m of body.data) {
      const o = document.createElement("option");
      o.value = m.id;
      o.textContent = m.method ? `${m.id} (${m.method})` : `${m.id} (base model)`;
      select.appendChild(o);
    }
    if (body.data.length > 1) select.value = body.data[1].id;  // the first adapter
    $("status").textContent = "";
  } catch (e) {
    $("status").textContent = "Could not list the models: " + e.message;
  }
}

function turn(role) {
  const div = document.createElement("div");
  div.className = "turn " + role;
  const label = document.createElement("div");
  label.className = "role";
  label.textContent = role === "user" ? "You" : "Assistant";
  const text = document.createElement("div");
  text.className = "answer";
  div.append(label, text);
  $("log").appendChild(div);
  return div;
}

function showCitations(div, citations) {
  if (!citations || !citations.length) return;
  const list = document.createElement("ol");
  list.className = "citations";
  list.setAttribute("aria-label", "Cited passages");
  for (const c of citations) {
    const li = document.createElement("li");
    li.className = "citation";
    const details = document.createElement("details");
    const summary = document.createElement("summary");
    // a user's file shows where the passage is: "handbook.pdf p. 12 · Renewals › Fees"
    summary.textContent = c.source && c.source !== c.doc_id ? c.source
      : (c.title || c.doc_id) + (c.title && c.doc_id ? ` (${c.doc_id})` : "");
    const p = document.createElement("p");
    p.textContent = c.text;
    details.append(summary, p);
    li.appendChild(details);
    list.appendChild(li);
  }
  div.appendChild(list);
}

async function ask(question) {
  const userDiv = turn("user");
  userDiv.querySelector(".answer").textContent = question;
  history.push({ role: "user", content: question });
  const div = turn("assistant");
  div.setAttribute("aria-busy", "true");
  const out = div.querySelector(".answer");
  $("send").disabled = true;
  $("status").textContent = "Answering…";
  const body = {
    model: $("model").value, messages: history, stream: true,
    temperature: Number($("temperature").value), max_tokens: Number($("max-tokens").value),
    retrieval: $("retrieval").checked,
  };
  let answer = "";
  try {
    const r = await fetch("/v1/chat/completions", { method: "POST", headers: headers(), body: JSON.stringify(body) });
    if (!r.ok) {
      const err = await r.json().catch(() => ({}));
      throw new Error(err.error ? err.error.message : r.statusText);
    }
    const reader = r.body.getReader();
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
        if (!event.startsWith("data: ")) continue;
        const data = event.slice(6);
        if (data === "[DONE]") continue;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new Error(chunk.error.message);
        if (chunk.citations) showCitations(div, chunk.citations);
        for (const choice of chunk.choices || []) {
          if (choice.delta && choice.delta.content) { answer += choice.delta.content; out.textContent = answer; }
        }
      }
    }
    history.push({ role: "assistant", content: answer });
    $("status").textContent = "Done.";
  } catch (e) {
    out.textContent = answer;
    const p = document.createElement("p");
    p.className = "error";
    p.textContent = "Error: " + e.message;
    div.appendChild(p);
    history.pop();
    $("status").textContent = "Error: " + e.message;
  } finally {
    div.setAttribute("aria-busy", "false");
    div.dataset.done = "true";
    $("send").disabled = false;
    $("question").focus();
  }
}

$("ask").addEventListener("submit", (e) => {
  e.preventDefault();
  const q = $("question").value.trim();
  if (!q || $("send").disabled) return;
  $("question").value = "";
  ask(q);
});
$("question").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $("ask").requestSubmit(); }
});
$("clear").addEventListener("click", () => { history.length = 0; $("log").textContent = ""; $("question").focus(); });
$("api-key").addEventListener("change", loadModels);
loadModels();
