"""``ScriptedTransport``: the scripted model inside the client process, no sockets.

Why: the embedded default (no API key, no base URL) should not open a port, and library users and
fast tests should not pay for one; yet the openai client must still see real HTTP responses (status
codes, headers, JSON bodies, SSE streams), so its retries, error classes and stream parsing are the
real ones. Give it to the client as
``openai.AsyncOpenAI(api_key="scripted", base_url="http://scripted.local/v1",
http_client=httpx2.AsyncClient(transport=ScriptedTransport(model)))``.

It runs on the client's event loop and shares :meth:`ScriptedModel.handle` with the HTTP server.
The client's read timeout is honoured (an injected hang longer than it raises
``httpx2.ReadTimeout``, as a socket would), since no socket layer is there to enforce it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx2

from .model import Reply, ScriptedModel
from .wire import DEFAULT_MODELS, NOT_AN_LLM, encode_json, error_body

__all__ = ["ScriptedTransport"]


class _Body(httpx2.AsyncByteStream):
    def __init__(self, payload: AsyncIterator[bytes]) -> None:
        self._payload = payload

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._payload:
            yield chunk

    async def aclose(self) -> None:
        await self._payload.aclose()  # type: ignore[attr-defined]


class ScriptedTransport(httpx2.AsyncBaseTransport):
    """An httpx2 transport that answers from a :class:`ScriptedModel` in-process."""

    def __init__(self, model: ScriptedModel | None = None) -> None:
        self.model = model or ScriptedModel()

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        path = request.url.path.rstrip("/")
        if path.startswith("/v1/"):
            path = path[3:]
        if path == "/chat/completions" and request.method == "POST":
            body = await request.aread()
            timeout = (request.extensions.get("timeout") or {}).get("read")
            try:
                reply = await asyncio.wait_for(self.model.handle(body), timeout)
            except TimeoutError:
                raise httpx2.ReadTimeout(
                    f"the scripted model did not answer within {timeout} s", request=request
                ) from None
        elif path == "/models" and request.method == "GET":
            reply = self.model.models()
        else:
            reply = Reply(404, {"content-type": "application/json"}, error_body(
                f"No route {request.method} {path} in the scripted transport ({NOT_AN_LLM}); "
                f"it serves POST /chat/completions and GET /models ({', '.join(DEFAULT_MODELS)}).",
                code="not_found"))
        status, headers, payload = reply
        if isinstance(payload, dict):
            return httpx2.Response(status, headers=headers, content=encode_json(payload),
                                   request=request)
        return httpx2.Response(status, headers=headers, stream=_Body(payload), request=request)
