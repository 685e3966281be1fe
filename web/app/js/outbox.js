// The outbox (docs/protocol.md §8): my sends, edits and deletes not yet acknowledged, in the
// order they were made (an edit or delete made offline waits here like a send). It is kept in localStorage, so closing a tab does not lose what it had not sent: each
// tab keeps its list under a key of its own and holds a Web Lock of that name while it is open.
// When a tab goes away with sends still pending, one other open tab of the same user (the first
// to get the lock), or the next one opened, takes the list over and sends it. The lock lets
// exactly one tab send each pending message; a resend of one already stored is answered
// `duplicate` by the server (client_msg_id), so nothing is stored twice.

/** @typedef {{client_msg_id: string, conversation_id: number, body: string, created_at: string,
 *   kind?: "send"|"edit"|"delete", seq?: number,
 *   attachments?: import("./files.js").FileInfo[]}} OutboxEntry
 *   kind: a send (also when absent, as older versions of the app wrote them), or an edit or
 *   delete of my message at `seq` (§4.11; a delete's `body` is "") */

/** Whether the entry is an edit or delete (not a send). @param {OutboxEntry} entry */
export const isChange = (entry) => entry.kind === "edit" || entry.kind === "delete";

const PREFIX = "chatd.outbox.";
const TAB_KEY = "chatd.tab";

/** @param {string} key @returns {OutboxEntry[]} */
function read(key, storage = localStorage) {
  try {
    const entries = JSON.parse(storage.getItem(key) || "[]");
    return Array.isArray(entries) ? entries : [];
  } catch {
    return [];
  }
}

export class Outbox {
  /** @param {number} userId @param {(entries: OutboxEntry[]) => void} adopted sends taken over from a closed tab */
  constructor(userId, adopted) {
    this.prefix = `${PREFIX}${userId}.`;
    this.legacyKey = `${PREFIX}${userId}`; // an older version of the app kept it per tab, in sessionStorage
    this.adopted = adopted;
    /** @type {Map<string, OutboxEntry>} in the order typed */
    this.entries = new Map();
    this.key = "";
    this.closed = false;
    /** @type {() => void} */
    this.release = () => {};
    this.stopWatching = new AbortController();
    /** @type {Set<string>} other tabs' keys whose lock this tab waits for */
    this.watching = new Set();
  }

  /** Take this tab's list (and its lock), then the lists of tabs that are gone. */
  async open() {
    let id = sessionStorage.getItem(TAB_KEY);
    // A duplicated tab copies sessionStorage: its id is then taken, and it starts a list of its own.
    if (!id || !(await this.hold(this.prefix + id))) {
      id = crypto.randomUUID();
      await this.hold(this.prefix + id);
    }
    sessionStorage.setItem(TAB_KEY, id);
    this.key = this.prefix + id;
    for (const entry of read(this.key)) this.entries.set(entry.client_msg_id, entry);
    for (const entry of read(this.legacyKey, sessionStorage)) {
      if (!this.entries.has(entry.client_msg_id)) {
        this.entries.set(entry.client_msg_id, { ...entry, created_at: entry.created_at || new Date().toISOString() });
      }
    }
    sessionStorage.removeItem(this.legacyKey);
    this.save();
    for (let i = 0; i < localStorage.length; i++) this.watch(localStorage.key(i));
    window.addEventListener("storage", (event) => event.newValue && this.watch(event.key), {
      signal: this.stopWatching.signal,
    });
  }

  /** Hold the lock `name` until this outbox is closed; false if another tab holds it.
   * @param {string} name @returns {Promise<boolean>} */
  hold(name) {
    return new Promise((resolve) => {
      navigator.locks.request(name, { ifAvailable: true }, (lock) => {
        resolve(lock !== null);
        return lock ? new Promise((release) => (this.release = () => release(undefined))) : null;
      });
    });
  }

  /** Wait for another tab's list to be let go (its tab closed), then take it over.
   * @param {string|null} key */
  watch(key) {
    if (this.closed || !key || !key.startsWith(this.prefix) || key === this.key || this.watching.has(key)) return;
    this.watching.add(key);
    navigator.locks
      .request(key, { signal: this.stopWatching.signal }, () => {
        this.watching.delete(key);
        if (this.closed) return;
        const fresh = read(key).filter((entry) => !this.entries.has(entry.client_msg_id));
        localStorage.removeItem(key);
        for (const entry of fresh) this.entries.set(entry.client_msg_id, entry);
        if (fresh.length) {
          this.save();
          this.adopted(fresh);
        }
      })
      .catch(() => {}); // aborted: this tab logged out
  }

  /** Log out: forget this tab's pending sends and those of closed tabs of this user (not kept
   * on a shared computer); another open tab's are its own to send or drop. */
  discard() {
    this.closed = true;
    this.stopWatching.abort();
    this.entries.clear();
    if (this.key) localStorage.removeItem(this.key);
    this.release();
    for (let i = 0; i < localStorage.length; i++) {
      const key = localStorage.key(i);
      if (!key || !key.startsWith(this.prefix)) continue;
      navigator.locks.request(key, { ifAvailable: true }, (lock) => lock && localStorage.removeItem(key));
    }
  }

  save() {
    if (this.closed || !this.key) return;
    if (this.entries.size) localStorage.setItem(this.key, JSON.stringify([...this.entries.values()]));
    else localStorage.removeItem(this.key);
  }

  /** Add at the end (a send, edit or delete, or a retry of a failed send). @param {OutboxEntry} entry */
  add(entry) {
    this.entries.delete(entry.client_msg_id);
    this.entries.set(entry.client_msg_id, entry);
    this.save();
  }

  /** @param {string} cmid */
  remove(cmid) {
    const had = this.entries.delete(cmid);
    if (had) this.save();
    return had;
  }

  /** @param {string} cmid */
  get(cmid) {
    return this.entries.get(cmid);
  }

  get size() {
    return this.entries.size;
  }

  values() {
    return this.entries.values();
  }
}
