// pairlab's annotation widget (Streamlit custom components v2; mounted by app/web/annotator.py).
// Everything a person does before an action stays in the browser: label toggles, the label filter,
// the verdict and the comment. Each action (submit, skip, flag, undo) sends ONE trigger, "action",
// carrying the whole answer and the slot and pair it was shown, so nothing typed is lost and the
// server can refuse an answer for a lease the person no longer holds.
// In a verification round (data.verification) the caption-match verdict comes first and is required:
// submitting without one is refused here (and by the server), labels are optional.
// Data from Python is only ever written with textContent, never parsed as HTML.

const DIGITS = ["1", "2", "3", "4", "5", "6", "7", "8", "9", "0"];
const VERDICT_KEYS = { m: "match", n: "mismatch", u: "unsure" };
const PENDING_TIMEOUT_MS = 15000; // give the controls back if the server never answers
const DRAFT_PREFIX = "pairlab.draft."; // sessionStorage: the unsent answer of the slot on screen (survives a reload)
const instances = new WeakMap(); // parentElement -> widget state

const TEMPLATE = `
<div class="pl-annotator" data-testid="plAnnotator">
  <div class="pl-row pl-verdict" role="group" aria-label="Does the caption match the image?">
    <span class="pl-caption pl-verdict-question">Caption matches the image?</span>
  </div>
  <input class="pl-comment" type="text" aria-label="Comment (optional)" placeholder="Comment (optional, c)" autocomplete="off">
  <div class="pl-row pl-actions">
    <button type="button" class="pl-action pl-primary" data-kind="submit" aria-label="Submit">Submit <kbd>Enter</kbd></button>
    <button type="button" class="pl-action" data-kind="skip" aria-label="Skip">Skip <kbd>s</kbd></button>
    <button type="button" class="pl-action" data-kind="flag" aria-label="Flag">Flag <kbd>f</kbd></button>
    <button type="button" class="pl-action" data-kind="undo" aria-label="Undo last">Undo <kbd>Ctrl+Z</kbd></button>
  </div>
  <div class="pl-status" role="status" aria-live="polite"></div>
  <div class="pl-marked"></div>
  <div class="pl-suggestions"></div>
  <input class="pl-filter" type="text" aria-label="Find a label" placeholder="Find a label (/)" autocomplete="off">
  <div class="pl-count"></div>
  <div class="pl-pills" role="group" aria-label="Labels"></div>
  <div class="pl-help">Keys (outside text fields): <kbd>1</kbd>–<kbd>9</kbd>, <kbd>0</kbd> toggle the numbered labels ·
    <kbd>m</kbd> match · <kbd>n</kbd> mismatch · <kbd>u</kbd> unsure · <kbd>Enter</kbd> or <kbd>Alt+A</kbd> submit ·
    <kbd>s</kbd> skip · <kbd>f</kbd> flag · <kbd>Ctrl+Z</kbd> or <kbd>Alt+U</kbd> undo · <kbd>/</kbd> find a label ·
    <kbd>c</kbd> comment · in a text field <kbd>Enter</kbd> submits (in the filter: toggles the first match),
    <kbd>Esc</kbd> leaves it</div>
</div>`;

function build(root) {
  const holder = document.createElement("div");
  holder.innerHTML = TEMPLATE; // static markup only
  const el = holder.firstElementChild;
  root.appendChild(el);
  const ui = {
    root, el, token: null, data: null, selected: new Set(), verdict: null, visible: [], pending: null,
    verdictBox: el.querySelector(".pl-verdict"), question: el.querySelector(".pl-verdict-question"),
    comment: el.querySelector(".pl-comment"),
    filter: el.querySelector(".pl-filter"), count: el.querySelector(".pl-count"),
    pills: el.querySelector(".pl-pills"), marked: el.querySelector(".pl-marked"),
    suggestionBox: el.querySelector(".pl-suggestions"), status: el.querySelector(".pl-status"),
    verdictButtons: {},
  };
  for (const [key, verdict] of Object.entries(VERDICT_KEYS)) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "pl-verdict-option";
    button.dataset.verdict = verdict;
    button.setAttribute("aria-label", verdict);
    button.append(verdict + " ", kbd(key));
    button.addEventListener("click", () => setVerdict(ui, verdict));
    ui.verdictBox.appendChild(button);
    ui.verdictButtons[verdict] = button;
  }
  const onPill = (event) => {
    const pill = event.target.closest("button[data-label]");
    if (pill) toggle(ui, pill.dataset.label);
  };
  ui.pills.addEventListener("click", onPill);
  ui.suggestionBox.addEventListener("click", onPill);
  ui.filter.addEventListener("input", () => renderPills(ui));
  ui.comment.addEventListener("input", () => saveDraft(ui));
  el.querySelector(".pl-actions").addEventListener("click", (event) => {
    const button = event.target.closest("button[data-kind]");
    if (button) act(ui, button.dataset.kind);
  });
  return ui;
}

function kbd(text) {
  const k = document.createElement("kbd");
  k.textContent = text;
  return k;
}

function draftKey(ui) {
  return DRAFT_PREFIX + ui.data.queue_item_id;
}

function readDraft(ui) {
  try {
    for (let i = sessionStorage.length - 1; i >= 0; i--) { // drafts of other slots are done with
      const key = sessionStorage.key(i);
      if (key.startsWith(DRAFT_PREFIX) && key !== draftKey(ui)) sessionStorage.removeItem(key);
    }
    const draft = JSON.parse(sessionStorage.getItem(draftKey(ui)) || "null");
    return draft && Array.isArray(draft.labels) && typeof draft.comment === "string" ? draft : null;
  } catch (error) {
    return null; // storage disabled or a draft from elsewhere: start from the server's answer
  }
}

function saveDraft(ui) {
  try {
    sessionStorage.setItem(draftKey(ui), JSON.stringify(
      { labels: [...ui.selected], verdict: ui.verdict, comment: ui.comment.value }));
  } catch (error) {
    // storage disabled: the answer still lives on screen until it is sent
  }
}

function reset(ui, data) {
  ui.token = data.token;
  ui.data = data;
  const draft = readDraft(ui);
  const answer = data.answer.fresh && draft ? draft : data.answer; // an unsent draft beats the pre-marks
  const known = new Set(data.labels);
  ui.selected = new Set((answer.labels || []).filter((name) => known.has(name)));
  ui.verdict = answer.verdict;
  ui.el.classList.toggle("pl-verify", Boolean(data.verification));
  ui.question.textContent = data.verification
    ? "Verification: does the caption match the image? Choose first (m / n / u); labels are optional."
    : "Caption matches the image?";
  ui.comment.value = answer.comment || "";
  ui.filter.value = "";
  clearPending(ui);
  ui.status.textContent = "";
  ui.verdictBox.classList.remove("pl-missing");
  const active = ui.root.activeElement; // hotkeys (Enter included) work at once on the new screen:
  if (active && ui.el.contains(active)) active.blur(); // not held by our last pressed button,
  const outside = document.activeElement; // nor by a link or button the person clicked to get here
  if (outside instanceof HTMLElement && outside !== document.body && !isTextField(outside) && !outside.shadowRoot) {
    outside.blur();
  }
  renderVerdict(ui);
  renderSuggestions(ui);
  renderPills(ui);
}

function renderVerdict(ui) {
  for (const [verdict, button] of Object.entries(ui.verdictButtons)) {
    const on = verdict === ui.verdict;
    button.classList.toggle("pl-on", on);
    button.setAttribute("aria-pressed", String(on));
  }
}

function pill(ui, label, badge, extra) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "pl-pill";
  button.dataset.label = label;
  button.setAttribute("aria-label", label);
  if (badge) button.append(kbd(badge));
  const name = document.createElement("span");
  name.textContent = label;
  button.append(name);
  if (extra) {
    const note = document.createElement("span");
    note.className = "pl-probability";
    note.textContent = extra;
    button.append(note);
  }
  paintPill(ui, button);
  return button;
}

function paintPill(ui, button) {
  const on = ui.selected.has(button.dataset.label);
  button.classList.toggle("pl-on", on);
  button.setAttribute("aria-pressed", String(on));
}

function renderSuggestions(ui) {
  ui.suggestionBox.replaceChildren();
  const suggestions = ui.data.suggestions || [];
  if (!suggestions.length) return;
  const title = document.createElement("span");
  title.className = "pl-caption";
  title.textContent = "Model suggests:";
  ui.suggestionBox.append(title);
  for (const s of suggestions) {
    const p = s.probability === null ? "" : ` ${Math.round(s.probability * 100)}%`;
    ui.suggestionBox.append(pill(ui, s.label, null, p));
  }
}

function renderPills(ui) {
  const query = ui.filter.value.trim().toLowerCase();
  const labels = ui.data.labels;
  ui.visible = query ? labels.filter((name) => name.toLowerCase().includes(query)) : labels;
  ui.pills.replaceChildren(...ui.visible.map((name, i) => pill(ui, name, DIGITS[i])));
  ui.count.textContent = `Labels (${ui.visible.length} of ${labels.length} shown)`;
  renderMarked(ui);
}

function renderMarked(ui) {
  const marked = ui.data.labels.filter((name) => ui.selected.has(name));
  const none = ui.data.verification ? "none (optional here: the pair's labels stay as they are)"
    : "none (submitting means no label applies)";
  ui.marked.textContent = "Marked: " + (marked.length ? marked.join(", ") : none);
}

function toggle(ui, label) {
  if (ui.pending) return;
  if (ui.selected.has(label)) ui.selected.delete(label); else ui.selected.add(label);
  saveDraft(ui);
  for (const button of ui.el.querySelectorAll("button[data-label]")) {
    if (button.dataset.label === label) paintPill(ui, button);
  }
  renderMarked(ui);
}

function setVerdict(ui, verdict) {
  if (ui.pending) return;
  ui.verdict = verdict;
  ui.verdictBox.classList.remove("pl-missing");
  saveDraft(ui);
  renderVerdict(ui);
}

function clearPending(ui) {
  if (ui.pending) clearTimeout(ui.pending);
  ui.pending = null;
  ui.el.classList.remove("pl-busy");
}

function act(ui, kind) {
  if (ui.pending || !ui.data) return; // one action per screen: a double press sends nothing twice
  if (kind === "submit" && ui.data.verification && !ui.verdict) {
    ui.status.textContent = "Choose the verdict first: match (m), mismatch (n) or unsure (u).";
    ui.verdictBox.classList.add("pl-missing");
    return;
  }
  ui.pending = setTimeout(() => { clearPending(ui); ui.status.textContent = "No answer from the server; try again."; },
    PENDING_TIMEOUT_MS);
  ui.el.classList.add("pl-busy");
  ui.status.textContent = kind === "undo" ? "Undoing…" : "Saving…";
  ui.send("action", {
    kind, token: ui.data.token, queue_item_id: ui.data.queue_item_id, pair_id: ui.data.pair_id,
    labels: ui.data.labels.filter((name) => ui.selected.has(name)), verdict: ui.verdict,
    comment: ui.comment.value, // read now: a comment typed just before Enter or Alt+A is never lost
  });
}

function isTextField(node) {
  if (!(node instanceof Element)) return false;
  if (node.isContentEditable) return true;
  const tag = node.tagName;
  if (tag === "TEXTAREA" || tag === "SELECT") return true;
  return tag === "INPUT" && !["button", "checkbox", "radio", "submit", "reset", "range", "color"].includes(node.type);
}

function onKey(ui, event) {
  if (!ui.el.isConnected || !ui.data || event.isComposing) return;
  const target = event.composedPath()[0];
  const ours = target instanceof Node && ui.el.contains(target);
  const handled = () => { event.preventDefault(); event.stopPropagation(); };
  if (event.altKey && !event.ctrlKey && !event.metaKey) { // Alt chords also work inside text fields
    if (event.code === "KeyA") { handled(); act(ui, "submit"); } else if (event.code === "KeyU") { handled(); act(ui, "undo"); }
    return;
  }
  if (isTextField(target)) {
    if (!ours) return;
    if (event.key === "Escape") { handled(); target.blur(); } else if (event.key === "Enter" && !event.shiftKey) {
      handled();
      if (target === ui.filter && ui.filter.value.trim()) {
        if (ui.visible.length) toggle(ui, ui.visible[0]);
        ui.filter.select();
      } else {
        act(ui, "submit");
      }
    }
    return;
  }
  if (!ours && target instanceof Element && target.closest('[data-testid="stSidebarNav"]')) {
    target.blur(); // the page link just clicked to get here keeps the focus: keys are for the widget
  } else if (!ours && target instanceof Element && target.closest("button, a, [role=button]")
      && (event.key === "Enter" || event.key === " ")) {
    return; // another control of the page has the focus: leave its Enter and Space alone
  }
  if ((event.ctrlKey || event.metaKey) && !event.altKey && !event.shiftKey && event.key.toLowerCase() === "z") {
    handled();
    act(ui, "undo");
    return;
  }
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  const key = event.key;
  const digit = DIGITS.indexOf(key);
  if (digit >= 0) {
    handled();
    if (digit < ui.visible.length) toggle(ui, ui.visible[digit]);
  } else if (key in VERDICT_KEYS) {
    handled();
    setVerdict(ui, VERDICT_KEYS[key]);
  } else if (key === "Enter") {
    handled();
    act(ui, "submit");
  } else if (key === "s") {
    handled();
    act(ui, "skip");
  } else if (key === "f") {
    handled();
    act(ui, "flag");
  } else if (key === "/") {
    handled();
    ui.filter.focus();
    ui.filter.select();
  } else if (key === "c") {
    handled();
    ui.comment.focus();
  }
}

export default function (component) {
  const { data, parentElement, setTriggerValue } = component;
  let ui = instances.get(parentElement);
  if (!ui) {
    ui = build(parentElement);
    instances.set(parentElement, ui);
  }
  ui.send = setTriggerValue;
  if (ui.token !== data.token) reset(ui, data); // a new pair or a new outcome; otherwise keep what is typed
  if (ui.onKey) document.removeEventListener("keydown", ui.onKey, true);
  ui.onKey = (event) => onKey(ui, event);
  document.addEventListener("keydown", ui.onKey, true);
  return () => {
    document.removeEventListener("keydown", ui.onKey, true);
    clearPending(ui);
    instances.delete(parentElement);
  };
}
