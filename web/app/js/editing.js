// Editing and deleting sent messages (docs/protocol.md §4.11), and @mention autocomplete in
// the message box. ↑ in an empty box, or a message's Edit, puts its text in the box; Enter
// saves the edit, Escape cancels. An edit or delete goes into the outbox like a send (kept
// while offline, sent in order, resent until answered): its message shows it pending until
// the ack, a refusal stays on the message until dismissed, and the stored change shows when
// its `message` event arrives, for everyone alike.
import { ERROR_TEXT } from "./api.js";
import { h, $ } from "./view/dom.js";

/** @typedef {import("./store.js").Store} Store @typedef {import("./store.js").Conv} Conv
 * @typedef {import("./outbox.js").OutboxEntry} OutboxEntry */

/** @typedef {{cid: number, seq: number, draft: string}} Draft */

const FAILURE = { edit: "Not edited", delete: "Not deleted" };

export class Editing {
  /** @param {Store} store @param {(entry: OutboxEntry) => void} queue puts a change in the outbox
   * @param {(conv: Conv) => void} refresh shows a conversation's changed rows */
  constructor(store, queue, refresh) {
    this.store = store;
    this.queue = queue;
    this.refresh = refresh;
    /** @type {Draft|null} */
    this.current = null;
  }

  get input() {
    return /** @type {HTMLTextAreaElement} */ ($("#composer-input"));
  }

  /** The text the message at `seq` shows: my edit not saved yet, else its stored text.
   * @param {Conv} conv @param {number} seq */
  shown(conv, seq) {
    const amend = this.store.pendingAmend(conv, seq);
    return amend?.kind === "edit" ? amend.body : conv.events.get(seq)?.body;
  }

  /** Whether I asked to delete the message at `seq` (not refused). @param {Conv} conv @param {number} seq */
  deleting(conv, seq) {
    return this.store.pendingAmend(conv, seq)?.kind === "delete";
  }

  /** Put the message at `seq` in the box to edit it. @param {number} cid @param {number} seq */
  begin(cid, seq) {
    const conv = this.store.convs.get(cid);
    const event = conv?.events.get(seq);
    if (!event || event.deleted_at || this.deleting(conv, seq)) return;
    const draft = this.current ? this.current.draft : this.input.value;
    this.current = { cid, seq, draft };
    this.input.value = this.shown(conv, seq);
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
      const mine = event.kind === "text" && event.sender_id === this.store.me.user_id;
      if (mine && !event.deleted_at && !this.deleting(conv, seq)) return seq;
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

  /** The box was submitted while editing: queue the edit. @param {string} body @returns {boolean} */
  submit(body) {
    const editing = this.current;
    if (!editing || !body.trim()) return false;
    const conv = this.store.convs.get(editing.cid);
    if (conv && this.shown(conv, editing.seq) !== body) {
      this.change({ kind: "edit", conversation_id: editing.cid, seq: editing.seq, body });
    }
    this.current = null;
    this.input.value = editing.draft;
    $("#editing").hidden = true;
    delete document.body.dataset.editing;
    return true;
  }

  /** @param {number} cid @param {number} seq */
  remove(cid, seq) {
    this.change({ kind: "delete", conversation_id: cid, seq, body: "" });
  }

  /** Show the change pending on its message and queue it.
   * @param {{kind: "edit"|"delete", conversation_id: number, seq: number, body: string}} change */
  change(change) {
    const entry = { ...change, client_msg_id: crypto.randomUUID(), created_at: new Date().toISOString() };
    this.show([entry]);
    this.queue(entry);
  }

  /** Queued edits and deletes, pending on their messages (new ones, those left in the outbox
   * when the page was reloaded, and those taken over from a closed tab).
   * @param {Iterable<OutboxEntry>} entries */
  show(entries) {
    for (const entry of entries) {
      const conv = this.store.convs.get(entry.conversation_id);
      if (!conv || conv.amends.has(entry.client_msg_id) || (entry.kind !== "edit" && entry.kind !== "delete")) continue;
      const { client_msg_id, kind, seq, body } = entry;
      conv.amends.set(client_msg_id, { client_msg_id, kind, seq, body, state: "pending", error: null, done: null });
      this.refresh(conv);
    }
  }

  /** @param {OutboxEntry} entry */
  amend(entry) {
    const conv = this.store.convs.get(entry.conversation_id);
    return { conv, amend: conv?.amends.get(entry.client_msg_id) };
  }

  /** Stored: shown as the message's current version once its event is in (store.change).
   * @param {any} ack @param {OutboxEntry} entry */
  acked(ack, entry) {
    const { conv, amend } = this.amend(entry);
    if (!amend) return;
    if (conv.changes.has(ack.seq)) conv.amends.delete(amend.client_msg_id);
    else Object.assign(amend, { state: "saved", error: null, done: ack.seq });
    this.refresh(conv);
  }

  /** Refused for good: the message says why until dismissed. @param {OutboxEntry} entry @param {any} error */
  failed(entry, error) {
    const { conv, amend } = this.amend(entry);
    if (!amend) return;
    amend.state = "failed";
    amend.error = `${FAILURE[amend.kind]}: ${error.message}`;
    this.refresh(conv);
  }

  /** Held, to be resent: say why it waits. @param {OutboxEntry} entry @param {any} error */
  waiting(entry, error) {
    const { conv, amend } = this.amend(entry);
    if (!amend || amend.state !== "pending") return;
    amend.error = ERROR_TEXT[error.code] || error.message;
    this.refresh(conv);
  }

  /** @param {number} cid @param {string} cmid */
  dismiss(cid, cmid) {
    const conv = this.store.convs.get(cid);
    if (conv?.amends.delete(cmid)) this.refresh(conv);
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
