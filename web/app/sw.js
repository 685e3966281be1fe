// chatd's service worker: shows a Web Push as a notification (one per conversation: a later
// one replaces it) and opens the conversation when it is clicked. It handles no fetches.
// What a push holds: docs/protocol.md §12.

self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

self.addEventListener("push", (event) => {
  let data = null;
  try {
    data = event.data ? event.data.json() : null;
  } catch {
    data = null;
  }
  if (!data || data.type !== "message") return;
  const preview = typeof data.body === "string";
  const title = preview ? (data.title ? `${data.sender} in ${data.title}` : data.sender) : "chatd";
  const body = preview ? data.body : `New message from ${data.sender}`;
  event.waitUntil(
    self.registration.showNotification(title, {
      body,
      tag: `chatd-c-${data.conversation_id}`, // the page's own notifications use the same tag
      icon: "/web/icon.svg",
      data: { conversation_id: data.conversation_id },
    }),
  );
});

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  const cid = event.notification.data && event.notification.data.conversation_id;
  event.waitUntil(
    (async () => {
      const tabs = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
      const tab = tabs.find((client) => new URL(client.url).pathname === "/");
      if (tab) {
        await tab.focus();
        tab.postMessage({ type: "open", conversation_id: cid });
      } else {
        await self.clients.openWindow(cid ? `/#c${cid}` : "/");
      }
    })(),
  );
});
