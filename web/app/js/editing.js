// Editing and deleting sent messages (docs/protocol.md §4.11), and @mention autocomplete in
// the message box. ↑ in an empty box, or a message's Edit, puts its text in the box; Enter
// saves the edit, Escape cancels. An edit or delete is acked with its own seq, and the change
// shows when its `message` event arrives, for everyone alike.
import { h, setText, $ } from "./view/dom.js";

/** @typedef {import("./store.js").Store} Store @typedef {import("./store.js").Conv} Conv */

/** @typedef {{cid: number, seq: number, draft: string}} Draft */

export class Editing {
  /** @param {Store} store @param {(frame: object) => boolean} raw sends a frame if connected */
  constructor(store, raw) {
    this.store = store;
    this.raw = raw;
    /** @type {Draft|null} */
    this.current = null;
    /** @type {Map<string, string>} refs of edits and deletes not answered yet -> what they were */
    this.waiting = new Map();
  }

  get input() {
    return /** @type {HTMLTextAreaElement} */ ($("#composer-input"));
  }

  /** Put the message at `seq` in the box to edit it. @param {number} cid @param {number} seq */
  begin(cid, seq) {
    const event = this.store.convs.get(cid)?.events.get(seq);
    if (!event || event.deleted_at) return;
    const draft = this.current ? this.current.draft : this.input.value;
    this.current = { cid, seq, draft };
    this.input.value = event.body;
    $("#editing").hidden = false;
    document.body.dataset.editing = String(seq);
    this.input.focus();
  }

  cancel() {
    if (!this.current) return;
    this.input.value = this.current.draft;
    this.current = null;
    $("#editing").hidden = true;
    delete document.body.dataset.editing;
  }

  /** My last message of the open conversation that I may still edit. @param {Conv} conv */
  lastOwn(conv) {
    const seqs = [...conv.events.keys()].sort((a, b) => b - a);
    for (const seq of seqs) {
      const event = conv.events.get(seq);
      if (event.kind === "text" && event.sender_id === this.store.me.user_id && !event.deleted_at) return seq;
    }
    return null;
  }

  /** Keys of the message box: ↑ edits the last own message, Escape cancels.
   * @param {KeyboardEvent} event @returns {boolean} whether the key was taken */
  key(event) {
    const cid = this.store.openId;
    if (event.key === "ArrowUp" && cid !== null && !this.current && this.input.value === "") {
      const seq = this.lastOwn(this.store.convs.get(cid));
      if (seq === null) return false;
      event.preventDefault();
      this.begin(cid, seq);
      return true;
    }
    if (event.key === "Escape" && this.current) {
      event.preventDefault();
      this.cancel();
      return true;
    }
    return false;
  }

  /** The box was submitted while editing: send the edit. @param {string} body @returns {boolean} */
  submit(body) {
    const editing = this.current;
    if (!editing || !body.trim()) return false;
    const original = this.store.convs.get(editing.cid)?.events.get(editing.seq);
    if (original && original.body === body) {
      this.cancel(); // nothing changed
      return true;
    }
    if (this.change({ type: "edit", conversation_id: editing.cid, seq: editing.seq, body }, "Not edited")) {
      this.current = null;
      this.input.value = editing.draft;
      $("#editing").hidden = true;
      delete document.body.dataset.editing;
    }
    return true;
  }

  /** @param {number} cid @param {number} seq */
  remove(cid, seq) {
    this.change({ type: "delete", conversation_id: cid, seq }, "Not deleted");
  }

  /** @param {Record<string, any>} frame @param {string} failure @returns {boolean} whether it went out */
  change(frame, failure) {
    const id = crypto.randomUUID();
    if (!this.raw({ ...frame, id, client_msg_id: crypto.randomUUID() })) {
      setText($("#composer-error"), `${failure}: not connected. Try again when online.`);
      return false;
    }
    this.waiting.set(id, failure);
    return true;
  }

  /** An `ack` or `error` that answers an edit or delete. @param {any} frame @returns {boolean} */
  answered(frame) {
    const failure = frame.ref ? this.waiting.get(frame.ref) : undefined;
    if (failure === undefined) return false;
    this.waiting.delete(frame.ref);
    if (frame.type === "error") setText($("#composer-error"), `${failure}: ${frame.message}`);
    return true;
  }
}

/** Mention autocomplete: members whose name starts with what follows the "@" being typed. */
export class Mentions {
  /** @param {Store} store */
  constructor(store) {
    this.store = store;
    this.index = 0;
    /** @type {string[]} */
    this.names = [];
  }

  get input() {
    return /** @type {HTMLTextAreaElement} */ ($("#composer-input"));
  }

  /** The `@prefix` just before the caret, if any. */
  typed() {
    const before = this.input.value.slice(0, this.input.selectionStart);
    const match = /(^|[^A-Za-z0-9_.-])@([A-Za-z0-9_.-]{0,32})$/.exec(before);
    return match ? match[2].toLowerCase() : null;
  }

  update() {
    const prefix = this.typed();
    const conv = this.store.openId !== null ? this.store.convs.get(this.store.openId) : null;
    const members = conv?.members ? [...conv.members.values()].map((m) => m.username) : [];
    this.names = prefix === null ? [] : members.filter((n) => n.startsWith(prefix) && n !== this.store.me.username).sort().slice(0, 8);
    this.index = 0;
    this.render();
  }

  render() {
    const list = $("#mention-list");
    list.replaceChildren(...this.names.map((name, i) => h("li", {
      role: "option", class: "mention-option", "aria-selected": String(i === this.index), "data-username": name,
      text: `@${name}`, onmousedown: (/** @type {Event} */ e) => { e.preventDefault(); this.choose(name); },
    })));
    list.hidden = this.names.length === 0;
  }

  /** @param {string} name */
  choose(name) {
    const input = this.input;
    const caret = input.selectionStart;
    const before = input.value.slice(0, caret).replace(/@[A-Za-z0-9_.-]*$/, `@${name} `);
    input.value = before + input.value.slice(caret);
    input.selectionStart = input.selectionEnd = before.length;
    this.names = [];
    this.render();
    input.focus();
  }

  /** @param {KeyboardEvent} event @returns {boolean} whether the key was taken */
  key(event) {
    if (!this.names.length) return false;
    if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      const step = event.key === "ArrowDown" ? 1 : -1;
      this.index = (this.index + step + this.names.length) % this.names.length;
      this.render();
    } else if (event.key === "Enter" || event.key === "Tab") {
      this.choose(this.names[this.index]);
    } else if (event.key === "Escape") {
      this.names = [];
      this.render();
    } else {
      return false;
    }
    event.preventDefault();
    return true;
  }
}
