"""``VisionScriptedModel``: the scripted model with image parts checked and read.

Interim: until the wire layer itself carries images (``ChatRequest`` with its images, prompt
tokens that count them), this subclass checks every image part (:func:`.vision.split_images`),
answers image sub-calls with the number-card rule (:mod:`.image_policy`) and hands the rest,
images removed, to :class:`ScriptedModel`. Usable behind :class:`ScriptedServer` and
:class:`ScriptedTransport` alike.
"""

from __future__ import annotations

import json
import threading
from contextvars import ContextVar
from typing import Any

from . import image_policy, policies
from .model import Reply, ScriptedModel
from .vision import WireImage, split_images
from .wire import ChatRequest, WireError

__all__ = ["VisionScriptedModel"]

_images: ContextVar[tuple[WireImage, ...]] = ContextVar("scripted_request_images", default=())


class VisionScriptedModel(ScriptedModel):
    """:class:`ScriptedModel` that accepts OpenAI ``image_url`` parts and reads number cards.

    ``received``: ``(sha256, width, height, mime, detail)`` of every image of every answered or
    refused-later request, in arrival order, for tests to compare with what was sent.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.received: list[tuple[str, int, int, str, str | None]] = []
        self._received_lock = threading.Lock()

    async def handle(self, body: dict[str, Any] | bytes | str) -> Reply:
        if isinstance(body, (bytes, str)):
            try:
                body = json.loads(body or b"null")
            except ValueError:
                return await super().handle(body)  # the base class reports the bad JSON
        if isinstance(body, dict):
            try:
                messages, images = split_images(body.get("messages"))
            except WireError as exc:
                self.stats._enter()
                try:
                    return self._error(exc.status, exc.message, type=exc.type, code=exc.code)
                finally:
                    self.stats._leave()
            if images:
                with self._received_lock:
                    self.received += [(im.sha256, im.width, im.height, im.mime, im.detail)
                                      for im in images]
                body = {**body, "messages": messages}
            token = _images.set(tuple(images))
            try:
                return await super().handle(body)
            finally:
                _images.reset(token)
        return await super().handle(body)

    def answer(self, request: ChatRequest) -> tuple[bool, str, str]:
        images = _images.get()
        if images and not policies.is_root_request(request.messages):
            name, content = image_policy.answer_images(policies.sub_prompt(request.messages),
                                                       images)
            return False, name, content
        return super().answer(request)
