"""A scripted LLM for livekit-agents tests: each user turn emits the next scripted tool calls.

livekit-agents ships no fake LLM in its wheel; this one follows the documented way
to write an LLM plugin (subclass ``llm.LLM``, push ``ChatChunk``s from the stream's
``_run``). A turn is a list of ``(tool name, arguments)`` to call, or a text reply.
After tool calls (and once the script is exhausted) the LLM answers with the last tool
output it saw, so a test can assert what the LLM was told.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from typing import Any

import orjson
from livekit.agents import APIConnectOptions, llm
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, NotGivenOr

Turn = str | Sequence[tuple[str, dict[str, Any]]]

_ids = itertools.count(1)


class ScriptedLLM(llm.LLM):
    """Emits the scripted turns in order, one per ``chat`` call."""

    def __init__(self, turns: Iterable[Turn]) -> None:
        super().__init__()
        self.turns = list(turns)
        self.outputs: list[str] = []
        """Every tool output the LLM was given, in order."""

    def chat(
        self,
        *,
        chat_ctx: llm.ChatContext,
        tools: list[llm.Tool] | None = None,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
        parallel_tool_calls: NotGivenOr[bool] = NOT_GIVEN,
        tool_choice: NotGivenOr[llm.ToolChoice] = NOT_GIVEN,
        extra_kwargs: NotGivenOr[dict[str, Any]] = NOT_GIVEN,
    ) -> llm.LLMStream:
        items = chat_ctx.items
        self.outputs = [str(i.output) for i in items if i.type == "function_call_output"]
        answering = bool(items) and items[-1].type == "function_call_output"
        if self.turns and not answering:
            turn = self.turns.pop(0)
        else:
            turn = self.outputs[-1] if self.outputs else "done"
        return _Stream(self, turn, chat_ctx=chat_ctx, tools=tools or [], conn_options=conn_options)


class _Stream(llm.LLMStream):
    def __init__(
        self,
        owner: ScriptedLLM,
        turn: Turn,
        *,
        chat_ctx: llm.ChatContext,
        tools: list[llm.Tool],
        conn_options: APIConnectOptions,
    ) -> None:
        super().__init__(owner, chat_ctx=chat_ctx, tools=tools, conn_options=conn_options)
        self._turn = turn

    async def _run(self) -> None:
        request = f"req-{next(_ids)}"
        if isinstance(self._turn, str):
            delta = llm.ChoiceDelta(role="assistant", content=self._turn)
        else:
            calls = [
                llm.FunctionToolCall(
                    name=name, arguments=orjson.dumps(args).decode(), call_id=f"call-{next(_ids)}"
                )
                for name, args in self._turn
            ]
            delta = llm.ChoiceDelta(role="assistant", tool_calls=calls)
        self._event_ch.send_nowait(llm.ChatChunk(id=request, delta=delta))
