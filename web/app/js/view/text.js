// Message text as DOM: http(s) URLs become links and @mentions of members are highlighted.
// Built from text nodes and elements only (never innerHTML), so a body can never add markup,
// and only http: and https: URLs are ever links (no javascript:, data:, ...).
import { h } from "./dom.js";

// A URL runs to the next whitespace; trailing punctuation is left out of it. Usernames are
// [a-z0-9_.-]{3,32} (accounts.py), matched without regard to case.
const TOKEN = /\bhttps?:\/\/[^\s<>"]+|(^|[^A-Za-z0-9_.-])@([A-Za-z0-9_.-]{3,32})/g;
const TRAILING = /[.,;:!?)\]}'"]+$/;

/** Whether `body` mentions `name` (as `@name`, any case). @param {string} body @param {string} name */
export function mentions(body, name) {
  if (!name) return false;
  for (const match of body.matchAll(TOKEN)) {
    if (match[2] && match[2].toLowerCase().replace(/[.-]+$/, "") === name.toLowerCase()) return true;
  }
  return false;
}

/** @param {string} raw @returns {string|null} the URL if it is an http(s) URL */
function safeUrl(raw) {
  try {
    const url = new URL(raw);
    return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
  } catch {
    return null;
  }
}

/**
 * The nodes of a message body.
 * @param {string} body
 * @param {Set<string>} members usernames of the conversation's members (lower case)
 * @param {string} me my username
 * @returns {(Node|string)[]}
 */
export function richText(body, members, me) {
  /** @type {(Node|string)[]} */
  const out = [];
  let at = 0;
  for (const match of body.matchAll(TOKEN)) {
    let start = match.index;
    let text = match[0];
    if (match[2] !== undefined) {
      start += match[1].length; // the character before the @ stays text
      const name = match[2].replace(/[.-]+$/, "");
      text = `@${name}`;
      if (!members.has(name.toLowerCase())) continue;
      out.push(body.slice(at, start));
      const mine = name.toLowerCase() === me.toLowerCase();
      out.push(h("span", { class: mine ? "mention mention-me" : "mention", "data-mention": name.toLowerCase(), text }));
      at = start + text.length;
      continue;
    }
    text = text.replace(TRAILING, "");
    const href = safeUrl(text);
    if (href === null) continue;
    out.push(body.slice(at, start));
    out.push(h("a", { href, rel: "noopener noreferrer", target: "_blank", text }));
    at = start + text.length;
  }
  out.push(body.slice(at));
  return out.filter((part) => part !== "");
}
