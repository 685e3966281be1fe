// Search results: each a button that opens the message in its conversation. Snippets come as
// plain-text segments (§3, GET /v1/search); hits are <mark> elements holding text, never markup.
import { $, h, clock, setText } from "./dom.js";

/** @typedef {import("../store.js").Store} Store
 * @typedef {{text: string, hit: boolean}} Segment
 * @typedef {{id: number, conversation_id: number, seq: number, sender_id: number|null,
 *   created_at: string, snippet: Segment[]}} SearchResult */

/**
 * @param {Store} store @param {SearchResult[]} results @param {boolean} append a further page
 * @param {boolean} more whether another page exists @param {(cid: number, seq: number) => void} open
 */
export function renderResults(store, results, append, more, open) {
  const list = $("#search-list");
  if (!append) list.replaceChildren();
  for (const r of results) {
    const conv = store.convs.get(r.conversation_id);
    const where = conv ? store.title(conv) : `conversation ${r.conversation_id}`;
    const who = r.sender_id === null ? "" : store.name(r.sender_id);
    const snippet = h("span", { class: "search-snippet" },
      ...r.snippet.map((seg) => (seg.hit ? h("mark", { text: seg.text }) : seg.text)));
    list.append(h("li", { "data-conversation-id": r.conversation_id, "data-seq": r.seq },
      h("button", { type: "button", onclick: () => open(r.conversation_id, r.seq) },
        h("span", { class: "search-where", text: `${where} · ${who} · ${clock(r.created_at)}` }), snippet)));
  }
  const count = list.childElementCount;
  setText($("#search-summary"), count ? `${count}${more ? "+" : ""} ${count === 1 ? "result" : "results"}` : "No messages found");
  $("#search-more").hidden = !more;
  $("#search-results").hidden = false;
}

export function closeResults() {
  $("#search-results").hidden = true;
  $("#search-list").replaceChildren();
}
