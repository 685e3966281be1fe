"""HTTP endpoints for attachments (docs/protocol.md §13): uploads, and downloads that chatd
authorizes and nginx serves (X-Accel-Redirect to its internal location: from the host's
download cache, or on a miss from `blob` here)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from chatd import frames
from chatd.errors import ChatdError, Code
from chatd.http_request import JSON, api, authenticated, runtime


@api
async def upload(request: Request) -> Response:
    """The body is the file, streamed; `?name=` what it is called."""
    user_id, _ = await authenticated(request)
    declared = request.headers.get("content-length")
    size = frames.digits_value(declared) if declared is not None else None
    if declared is not None and size is None:  # too many digits for any limit
        size = frames.MAX_ID
    name = request.query_params.get("name")
    result = await runtime(request).attachments.upload(user_id, name, size, request.stream())
    return JSON({"file": result}, status_code=201)


def file_id(request: Request) -> int:
    value: int = request.path_params["file_id"]
    if not 0 < value <= frames.MAX_ID:
        raise ChatdError(Code.NOT_FOUND, "no such file")
    return value


async def _download(request: Request, thumbnail: bool) -> Response:
    user_id, _ = await authenticated(request)
    served = await runtime(request).attachments.download(user_id, file_id(request), thumbnail)
    # nginx serves the bytes from its internal location (nginx/chatd.conf.j2), not this worker,
    # and keeps these headers whether the bytes come from its cache or from `blob`.
    headers = {
        "X-Accel-Redirect": served.location,
        "Content-Type": served.content_type,
        "Content-Disposition": served.disposition,
        "Cache-Control": "private, no-store",
    }
    return Response(status_code=200, headers=headers)


@api
async def download(request: Request) -> Response:
    return await _download(request, thumbnail=False)


@api
async def thumbnail(request: Request) -> Response:
    return await _download(request, thumbnail=True)


@api
async def blob(request: Request) -> Response:
    """The bytes for nginx's internal location when its cache does not have them; reached only
    through X-Accel-Redirect (nginx refuses the path from outside), by a random key nobody is
    shown. They are written to the cache on the way (filecache.py)."""
    part = frames.digits_value(request.path_params["part"])
    found = await runtime(request).attachments.blob(request.path_params["key"], -1 if part is None else part)
    headers = {
        "Content-Length": str(found.size),
        "Content-Disposition": found.disposition,
        "Cache-Control": "private, no-store",
    }
    return StreamingResponse(found.chunks, media_type=found.content_type, headers=headers)


routes = [
    Route("/v1/files", upload, methods=["POST"]),
    Route("/v1/files/{file_id:id}", download),
    Route("/v1/files/{file_id:id}/thumbnail", thumbnail),
    Route("/.chatd-files/{key:str}/{part:str}", blob),
]
