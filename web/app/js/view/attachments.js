// Files in the app: the uploads waiting under the message box (paste, drop or choose; with
// progress), the files a message carries (image previews sized before they load, other files
// as name and size to save), and the lightbox that shows an image whole.
import { h, $, setText } from "./dom.js";
import { blobUrl, save, sizeText, thumbSize, upload } from "../files.js";

/** @typedef {import("../files.js").FileInfo} FileInfo
 * @typedef {{key: number, name: string, fraction: number, file: FileInfo|null, error: string|null}} Pending */

export class Attachments {
  /** @param {() => string|null} token */
  constructor(token) {
    this.token = token;
    /** @type {Pending[]} */
    this.pending = [];
    this.nextKey = 1;
  }

  /** Upload each file now; it is sent with the next message. @param {Iterable<File>} files */
  add(files) {
    for (const file of files) {
      const name = file.name || `pasted.${(file.type.split("/")[1] || "bin").replace(/[^a-z0-9]/g, "")}`;
      /** @type {Pending} */
      const entry = { key: this.nextKey++, name, fraction: 0, file: null, error: null };
      this.pending.push(entry);
      const token = this.token();
      if (!token) continue;
      upload(token, file, name, (fraction) => {
        entry.fraction = fraction;
        this.render();
      }).then(
        (info) => { entry.file = info; },
        (err) => { entry.error = String(err.message || err); },
      ).finally(() => this.render());
    }
    this.render();
  }

  /** @returns {string|null} why the message cannot be sent yet */
  problem() {
    if (this.pending.some((p) => p.error)) return "Remove the files that could not be uploaded";
    if (this.pending.some((p) => !p.file)) return "Wait for the upload to finish";
    return null;
  }

  /** The uploaded files, handed to a message; the list empties. @returns {FileInfo[]} */
  take() {
    const files = this.pending.map((p) => /** @type {FileInfo} */ (p.file));
    this.pending = [];
    this.render();
    return files;
  }

  render() {
    const list = $("#pending-files");
    list.replaceChildren(...this.pending.map((p) => h("li", { class: "pending-file", "data-state": p.error ? "failed" : p.file ? "done" : "uploading" },
      h("span", { class: "name", text: p.name }),
      p.file ? h("span", { class: "muted", text: sizeText(p.file.size) })
        : p.error ? h("span", { class: "error", role: "alert", text: p.error })
        : h("progress", { max: "1", value: String(p.fraction), "aria-label": `Uploading ${p.name}` }),
      h("button", { type: "button", class: "link-button", "aria-label": `Remove ${p.name}`, text: "✕",
        onclick: () => { this.pending = this.pending.filter((x) => x !== p); this.render(); } }),
    )));
    list.hidden = this.pending.length === 0;
  }

  /** What a message shows of its files. @param {FileInfo[]} files @returns {HTMLElement} */
  view(files) {
    const box = h("div", { class: "attachments" });
    for (const file of files) {
      const size = thumbSize(file);
      if (size) {
        const img = /** @type {HTMLImageElement} */ (h("img", { class: "thumb", alt: file.name, width: size.width, height: size.height }));
        const token = this.token();
        if (token) blobUrl(token, file.id, true).then((url) => { img.src = url; }, () => { img.alt = `${file.name} (not available)`; });
        box.append(h("button", { type: "button", class: "thumb-button", "aria-label": `Show ${file.name}`,
          onclick: () => this.show(file) }, img));
      } else {
        box.append(h("button", { type: "button", class: "link-button file", onclick: () => this.save(file),
          text: `${file.name} (${sizeText(file.size)})` }));
      }
    }
    return box;
  }

  /** @param {FileInfo} file */
  save(file) {
    const token = this.token();
    if (token) save(token, file).catch((err) => console.warn("chatd: file", err));
  }

  /** The lightbox: the image whole, closed by Escape, its button or a click. @param {FileInfo} file */
  async show(file) {
    const token = this.token();
    if (!token) return;
    const dialog = /** @type {HTMLDialogElement} */ ($("#lightbox"));
    const img = /** @type {HTMLImageElement} */ ($("#lightbox-image"));
    img.alt = file.name;
    if (file.width && file.height) {
      img.width = file.width;
      img.height = file.height;
    }
    setText($("#lightbox-name"), `${file.name} (${sizeText(file.size)})`);
    img.src = await blobUrl(token, file.id, false);
    if (!dialog.open) dialog.showModal();
  }
}

/** Paste, drop and the file chooser all hand their files to `attachments`.
 * @param {Attachments} attachments */
export function bindAttachments(attachments) {
  const input = /** @type {HTMLInputElement} */ ($("#file-input"));
  input.addEventListener("change", () => {
    if (input.files) attachments.add([...input.files]);
    input.value = "";
  });
  $("#composer-input").addEventListener("paste", (event) => {
    const files = /** @type {ClipboardEvent} */ (event).clipboardData?.files;
    if (files && files.length) {
      event.preventDefault();
      attachments.add([...files]);
    }
  });
  const zone = $("#thread");
  zone.addEventListener("dragover", (event) => {
    if (event.dataTransfer?.types.includes("Files")) event.preventDefault();
  });
  zone.addEventListener("drop", (event) => {
    const files = event.dataTransfer?.files;
    if (files && files.length) {
      event.preventDefault();
      attachments.add([...files]);
    }
  });
  const dialog = /** @type {HTMLDialogElement} */ ($("#lightbox"));
  dialog.addEventListener("click", () => dialog.close());
}
