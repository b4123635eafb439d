// llmlog's only script: copy buttons and keyboard stepping. The pages work without it.
"use strict";

// <button data-copy="ID">: copies the text of the element with that id.
document.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-copy]");
  if (!button) return;
  const source = document.getElementById(button.dataset.copy);
  if (!source) return;
  const done = () => {
    const label = button.textContent;
    button.textContent = "copied";
    setTimeout(() => { button.textContent = label; }, 1200);
  };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(source.textContent).then(done);
  } else {  // plain http on another host: the old way still works
    const area = document.createElement("textarea");
    area.value = source.textContent;
    document.body.appendChild(area);
    area.select();
    document.execCommand("copy");
    area.remove();
    done();
  }
});

// j/k move through the rows of a list marked data-step (the sample, the calls);
// Enter or o opens the current one. Typing in a form field is left alone.
document.addEventListener("keydown", (event) => {
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  if (event.target.closest("input, textarea, select, [contenteditable]")) return;
  const list = document.querySelector("[data-step]");
  if (!list) return;
  const items = Array.from(list.querySelectorAll("[data-step-item]"));
  if (!items.length) return;
  let at = items.findIndex((el) => el.classList.contains("current"));
  if (event.key === "j" || event.key === "k") {
    if (at >= 0) items[at].classList.remove("current");
    at = event.key === "j" ? Math.min(at + 1, items.length - 1) : Math.max(at - 1, 0);
    items[at].classList.add("current");
    items[at].scrollIntoView({ block: "nearest" });
    list.dispatchEvent(new CustomEvent("step", { detail: items[at] }));
    event.preventDefault();
  } else if ((event.key === "Enter" || event.key === "o") && at >= 0) {
    const link = items[at].querySelector("a[href]");
    if (link) window.location.href = link.getAttribute("href");
  }
});
