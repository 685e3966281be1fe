"""The HTTP half of the protocol (docs/protocol.md §3), as the client needs it."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import unquote

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

    async def upload(self, path: str) -> dict[str, Any]:
        """Upload a file, streamed from disk; its description (id, name, size, type)."""

        async def chunks() -> AsyncIterator[bytes]:
            with open(path, "rb") as source:  # noqa: ASYNC230 (a local file, read in small pieces)
                while chunk := source.read(256 * 1024):
                    yield chunk

        size = os.stat(path).st_size  # raises OSError for a missing file, before any request
        headers = {"content-length": str(size)}
        params = {"name": os.path.basename(path)}
        try:
            response = await self.http.post("/v1/files", content=chunks(), headers=headers, params=params)
        except httpx.TransportError as exc:
            raise ApiError("unreachable", f"cannot reach {self.http.base_url}: {exc}") from None
        if response.status_code != 201:
            self._raise(response)
        file: dict[str, Any] = response.json()["file"]
        return file

    async def download(self, file_id: int, target: str | None) -> tuple[str, int]:
        """Save a file (streamed) as `target`, or under its own name in the current directory;
        where it went and how many bytes."""
        try:
            async with self.http.stream("GET", f"/v1/files/{file_id}", timeout=60) as response:
                if response.status_code != 200:
                    await response.aread()
                    self._raise(response)
                name = target or _disposition_name(response.headers.get("content-disposition", ""))
                name = name or f"file-{file_id}"
                written = 0
                with open(name, "xb" if target is None else "wb") as sink:  # noqa: ASYNC230
                    async for chunk in response.aiter_bytes():
                        sink.write(chunk)
                        written += len(chunk)
        except httpx.TransportError as exc:
            raise ApiError("unreachable", f"cannot reach {self.http.base_url}: {exc}") from None
        return name, written

    @staticmethod
    def _raise(response: httpx.Response) -> None:
        try:
            error = response.json()["error"]
        except (ValueError, KeyError, TypeError):
            raise ApiError(
                f"http_{response.status_code}", response.text[:200], response.status_code
            ) from None
        raise ApiError(error["code"], error["message"], response.status_code)

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

    async def search(self, q: str, before: int | None = None, limit: int = 20) -> dict[str, Any]:
        """Full-text search over my conversations, newest first (docs/protocol.md §3)."""
        params: dict[str, Any] = {"q": q, "limit": limit}
        if before is not None:
            params["before"] = before
        found: dict[str, Any] = await self.call("GET", "/v1/search", **params)
        return found

    async def receipts(self, cid: int, events: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
        """Read counts of these events' text messages, by seq (docs/protocol.md §3, at most 200)."""
        seqs = [e["seq"] for e in events if e["kind"] == "text"][-200:]
        if not seqs:
            return {}
        found = await self.call(
            "GET", f"/v1/conversations/{cid}/receipts", **{"from": seqs[0], "to": seqs[-1]}
        )
        return {c["seq"]: c for c in found["counts"]}


def _disposition_name(header: str) -> str:
    """The file name of a Content-Disposition (its UTF-8 form if given), without any path."""
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key.lower() == "filename*" and value.lower().startswith("utf-8''"):
            return os.path.basename(unquote(value[7:])).lstrip(".")
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key.lower() == "filename":
            return os.path.basename(value.strip('"')).lstrip(".")
    return ""
