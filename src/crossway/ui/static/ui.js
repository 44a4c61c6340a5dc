// Crossway console: the little script the pages need (CSP allows only same-origin scripts).
// Streamed playground answers: a form with data-stream posts itself and appends the text
// the server streams back into the element named by data-stream.
"use strict";
document.addEventListener("submit", async (event) => {
  const form = event.target;
  if (!(form instanceof HTMLFormElement) || !form.dataset.stream) return;
  event.preventDefault();
  const out = document.getElementById(form.dataset.stream);
  const status = form.querySelector("[data-status]");
  out.textContent = "";
  if (status) status.textContent = "Streaming…";
  const button = form.querySelector("button[type=submit]");
  if (button) button.disabled = true;
  try {
    const response = await fetch(form.action, {
      method: "POST",
      body: new URLSearchParams(new FormData(form)),
      headers: { "X-CSRF-Token": form.elements.csrf ? form.elements.csrf.value : "" },
    });
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      out.textContent += decoder.decode(value, { stream: true });
    }
    if (status) status.textContent = response.ok ? "Done." : `Failed (HTTP ${response.status}).`;
  } catch (err) {
    if (status) status.textContent = `Failed: ${err}`;
  } finally {
    if (button) button.disabled = false;
  }
});
