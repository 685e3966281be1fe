"""The HTTP half of the protocol (docs/protocol.md §3), as the client needs it."""

from __future__ import annotations

from typing import Any

import httpx


class ApiError(Exception):
    def __init__(self, code: str, message: str, status: int = 0) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.status = status


class Api:
    def __init__(self, url: str, token: str | None = None) -> None:
        from chatd import __version__

        # The user agent names this client in the user's device list (GET /v1/me/sessions).
        headers = {"user-agent": f"chatd-client/{__version__}"}
        if token:
            headers["authorization"] = f"Bearer {token}"
        self.http = httpx.AsyncClient(base_url=url, headers=headers, timeout=10)

    async def __aenter__(self) -> Api:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.aclose()

    async def call(self, method: str, path: str, body: dict[str, Any] | None = None, **params: Any) -> Any:
        try:
            response = await self.http.request(method, path, json=body, params=params or None)
        except httpx.TransportError as exc:
            raise ApiError("unreachable", f"cannot reach {self.http.base_url}: {exc}") from None
        if response.status_code >= 400:
            try:
                error = response.json()["error"]
                raise ApiError(error["code"], error["message"], response.status_code)
            except (ValueError, KeyError, TypeError):
                raise ApiError(
                    f"http_{response.status_code}", response.text[:200], response.status_code
                ) from None
        return response.json() if response.content else None

    async def conversation(self, target: str) -> dict[str, Any]:
        """`#12` or `12`: that conversation; a username: the direct conversation with them."""
        if target.lstrip("#").isdigit():
            conv: dict[str, Any] = await self.call("GET", f"/v1/conversations/{target.lstrip('#')}")
        else:
            conv = await self.call("POST", "/v1/conversations/direct", {"username": target})
        return conv

    async def members(self, cid: int) -> dict[int, str]:
        names: dict[int, str] = {}
        after = 0
        while True:
            page = (await self.call("GET", f"/v1/conversations/{cid}/members", after=after, limit=1000))[
                "members"
            ]
            names.update({m["user_id"]: m["username"] for m in page})
            if len(page) < 1000:
                return names
            after = page[-1]["user_id"]

    async def history(self, cid: int, limit: int = 50) -> list[dict[str, Any]]:
        page: list[dict[str, Any]] = (
            await self.call("GET", f"/v1/conversations/{cid}/messages", limit=limit)
        )["messages"]
        return page

    async def receipts(self, cid: int, events: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
        """Read counts of these events' text messages, by seq (docs/protocol.md §3, at most 200)."""
        seqs = [e["seq"] for e in events if e["kind"] == "text"][-200:]
        if not seqs:
            return {}
        found = await self.call(
            "GET", f"/v1/conversations/{cid}/receipts", **{"from": seqs[0], "to": seqs[-1]}
        )
        return {c["seq"]: c for c in found["counts"]}
