/* The files panel: upload (picker or drop), the file list keyed by name, print and delete. */

import { $, KeyedList, el, fromTemplate, safeId, setHidden, setText } from "./dom.js";
import { NBSP, fmt } from "./format.js";
import { toast } from "./notifications.js";

function describe(file) {
  const meta = [fmt.bytes(file.size_bytes)];
  const uploaded = fmt.ago(file.uploaded_at);
  if (uploaded) meta.push(`uploaded ${uploaded}`);
  const m = file.metadata || {};
  if (m.estimated_seconds) meta.push(`about ${fmt.duration(m.estimated_seconds)}`);
  if (m.filament_g) meta.push(`${Number(m.filament_g).toFixed(1)}${NBSP}g`);
  else if (m.filament_mm) meta.push(`${(m.filament_mm / 1000).toFixed(2)}${NBSP}m filament`);
  if (m.layer_height_mm) meta.push(`${m.layer_height_mm}${NBSP}mm layers`);
  if (m.slicer) meta.push(String(m.slicer));
  return meta.join(" · ");
}

export class FilesPanel {
  /**
   * @param {{client: object, printers: () => string[], confirm: Function, onJob: (frame: object) => void,
   *          onUnauthorized: () => void, canControl: () => boolean}} ctx
   */
  constructor(ctx) {
    this.ctx = ctx;
    this.available = false;
    this.printerNames = [];
    this.items = new KeyedList($("file-list"), {
      key: (file) => file.name,
      create: (file) => this.create(file),
      update: (node, file) => setText(node.querySelector(".file-meta"), describe(file)),
    });
    this.setupUpload();
  }

  async load() {
    let response;
    try {
      response = await fetch("/api/files", { cache: "no-store" });
    } catch (err) {
      return;
    }
    if (response.status === 401) {
      this.ctx.onUnauthorized();
      return;
    }
    if (!response.ok) {
      this.available = false;
      setHidden($("files-panel"), true);
      return;
    }
    const body = await response.json().catch(() => ({}));
    this.available = true;
    setHidden($("files-panel"), false);
    this.render(Array.isArray(body.files) ? body.files : []);
  }

  render(files) {
    this.items.render(files.filter((file) => file && typeof file.name === "string"));
    setHidden($("files-empty"), this.items.size > 0);
  }

  create(file) {
    const name = file.name;
    const node = fromTemplate("file-template");
    node.dataset.file = name;
    node.querySelector(".file-name").textContent = name;
    const select = node.querySelector(".file-printer");
    const selectId = `file-${safeId(name)}-printer`;
    select.id = selectId;
    const label = node.querySelector(".file-printer-label");
    label.htmlFor = selectId;
    label.textContent = `Printer for ${name}`;
    this.fillPrinters(select);
    const print = node.querySelector(".file-print");
    print.setAttribute("aria-label", `Print ${name}`);
    print.addEventListener("click", () => this.start(name, select.value, print));
    const remove = node.querySelector(".file-delete");
    remove.setAttribute("aria-label", `Delete ${name}`);
    remove.addEventListener("click", () => this.remove(name));
    return node;
  }

  /** The printer choices of one select, keeping what was chosen; options are only replaced when they differ. */
  fillPrinters(select) {
    const names = this.ctx.printers();
    const current = [...select.options].map((option) => option.value);
    if (current.join("\u0000") !== names.join("\u0000")) {
      const previous = select.value;
      select.replaceChildren(...names.map((name) => {
        const option = el("option", null, name);
        option.value = name;
        return option;
      }));
      if (names.includes(previous)) select.value = previous;
    }
    setHidden(select, names.length < 2);
  }

  refreshPrinters() {
    document.querySelectorAll(".file-printer").forEach((select) => this.fillPrinters(select));
  }

  async start(name, printer, button) {
    if (!printer) {
      toast("No printer to print on.", "warning");
      return;
    }
    button.disabled = true;
    try {
      const reply = await this.ctx.client.request({ type: "job_start", printer, file: name });
      toast(`${printer}: ${name} ${reply && reply.state === "queued" ? "queued" : "started"}.`, "info");
    } catch (err) {
      toast(`Cannot print ${name}: ${err.message}`, "error");
    } finally {
      button.disabled = false;
    }
  }

  async remove(name) {
    if (!(await this.ctx.confirm("Delete this file?", name, "Delete"))) return;
    const response = await fetch(`/api/files/${encodeURIComponent(name)}`, { method: "DELETE" }).catch(() => null);
    if (!response || !response.ok) {
      const body = response ? await response.json().catch(() => ({})) : {};
      toast(`Cannot delete ${name}: ${(body.error && body.error.message) || "the gateway is unreachable"}`, "error");
    }
    this.load();
  }

  upload(fileList) {
    const queue = [...fileList];
    const status = $("upload-status");
    const progress = $("upload-progress");
    const next = () => {
      const file = queue.shift();
      if (!file) {
        progress.hidden = true;
        this.load();
        return;
      }
      const form = new FormData();
      form.append("file", file, file.name);
      const xhr = new XMLHttpRequest();
      xhr.open("POST", "/api/files");
      progress.hidden = false;
      progress.value = 0;
      status.textContent = `Uploading ${file.name}…`;
      xhr.upload.onprogress = (event) => {
        if (event.lengthComputable) progress.value = event.loaded / event.total;
      };
      xhr.onload = () => {
        if (xhr.status >= 200 && xhr.status < 300) {
          status.textContent = `Uploaded ${file.name}.`;
        } else {
          let message = `HTTP ${xhr.status}`;
          try { message = JSON.parse(xhr.responseText).error.message || message; } catch (err) { /* not JSON */ }
          status.textContent = `${file.name}: ${message}`;
          toast(`Upload of ${file.name} failed: ${message}`, "error");
        }
        next();
      };
      xhr.onerror = () => {
        status.textContent = `${file.name}: the gateway is unreachable.`;
        next();
      };
      xhr.send(form);
    };
    next();
  }

  setupUpload() {
    const input = $("file-input");
    const zone = $("dropzone");
    $("file-choose").addEventListener("click", () => input.click());
    input.addEventListener("change", () => {
      if (input.files && input.files.length) this.upload(input.files);
      input.value = "";
    });
    zone.addEventListener("dragover", (event) => {
      event.preventDefault();
      event.dataTransfer.dropEffect = "copy";
      zone.classList.add("dragging");
    });
    zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
    zone.addEventListener("drop", (event) => {
      event.preventDefault();
      zone.classList.remove("dragging");
      if (!this.ctx.canControl()) return;
      if (event.dataTransfer.files && event.dataTransfer.files.length) this.upload(event.dataTransfer.files);
    });
    // A file dropped next to the zone must not make the browser navigate away.
    window.addEventListener("dragover", (event) => event.preventDefault());
    window.addEventListener("drop", (event) => event.preventDefault());
  }
}
