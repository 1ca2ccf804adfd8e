"""One-line summaries of model-API events, for people reading a cassette (``proxy
inspect``, the demo). Pure functions over parsed JSON; no I/O.

Understood: OpenAI Responses and Chat Completions (SSE and WebSocket, realtime audio
deltas), Anthropic Messages (``message_start`` ... ``content_block_delta`` with text,
tool input and thinking, ``message_delta``, ``error``), Gemini (``candidates`` chunks,
errors, Live API messages such as ``serverContent``) and AWS Bedrock (ConverseStream
events, and InvokeModelWithResponseStream ``chunk`` events whose ``bytes`` wrap the
provider's own event). Audio and other inline binary data are shown by size, never
printed. Anything else is summarised as compact JSON.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any


def short(text: str, width: int = 70) -> str:
    text = text.replace("\n", "\\n")
    return text if len(text) <= width else text[: width - 1] + "…"


def b64_size(data: Any) -> int | None:
    """Decoded size of base64 text (audio deltas, inline data), or None if it is not base64."""
    if not isinstance(data, str):
        return None
    try:
        return len(base64.b64decode(data, validate=True))
    except (binascii.Error, ValueError):
        return None


def _sized(mime: str, data: Any) -> str:
    n = b64_size(data)
    return f"{mime} {n if n is not None else len(str(data))} bytes"


def _parts(parts: Any) -> str:
    """Gemini content parts: text, function calls, inline data (audio, images) by size."""
    out = []
    for p in parts if isinstance(parts, list) else []:
        if not isinstance(p, dict):
            continue
        if isinstance(p.get("text"), str):
            out.append(repr(p["text"]))
        elif isinstance(p.get("inlineData"), dict):
            out.append(_sized(str(p["inlineData"].get("mimeType", "data")), p["inlineData"].get("data")))
        elif isinstance(p.get("functionCall"), dict):
            out.append(f"functionCall {p['functionCall'].get('name', '')}".strip())
        elif isinstance(p.get("functionResponse"), dict):
            out.append(f"functionResponse {p['functionResponse'].get('name', '')}".strip())
    return " ".join(out)


def _error(err: Any) -> str:
    if isinstance(err, dict):
        kind = err.get("type") or err.get("status") or err.get("code") or "error"
        return f"{kind}: {err.get('message', '')}".rstrip(": ")
    return str(err)


def _openai(doc: dict, kind: str) -> str | None:
    delta = doc.get("delta")
    if isinstance(delta, str):
        if "audio" in kind and b64_size(delta) is not None:
            return _sized("audio", delta)
        return repr(delta)
    if isinstance(doc.get("audio"), str):  # realtime input_audio_buffer.append
        return _sized("audio", doc["audio"])
    resp = doc.get("response")
    if isinstance(resp, dict):
        return f"response {resp.get('id', '')} {resp.get('status', '')}".replace("  ", " ").strip()
    if isinstance(doc.get("item"), dict):
        item = doc["item"]
        return f"{item.get('type', 'item')} {item.get('name') or item.get('id') or ''}".strip()
    if kind == "error" or "error" in doc:
        return _error(doc.get("error", doc))
    return None


def _anthropic(doc: dict, kind: str) -> str | None:
    if kind == "message_start" and isinstance(doc.get("message"), dict):
        m = doc["message"]
        return f"message {m.get('id', '')} {m.get('model', '')}".strip()
    if kind == "content_block_start" and isinstance(doc.get("content_block"), dict):
        b = doc["content_block"]
        return f"block {doc.get('index', '')} {b.get('type', '')} {b.get('name', '')}".strip()
    if kind == "content_block_delta" and isinstance(doc.get("delta"), dict):
        d = doc["delta"]
        for field in ("text", "partial_json", "thinking"):
            if isinstance(d.get(field), str):
                return repr(d[field])
        return str(d.get("type", ""))
    if kind == "content_block_stop":
        return f"block {doc.get('index', '')}".strip()
    if kind == "message_delta" and isinstance(doc.get("delta"), dict):
        reason = doc["delta"].get("stop_reason")
        return f"stop_reason={reason}" if reason else ""
    if kind in ("message_stop", "ping"):
        return ""
    if kind == "error":
        return _error(doc.get("error"))
    return None


def _gemini(doc: dict) -> tuple[str, str] | None:
    if isinstance(doc.get("candidates"), list):
        cand = doc["candidates"][0] if doc["candidates"] and isinstance(doc["candidates"][0], dict) else {}
        text = _parts((cand.get("content") or {}).get("parts"))
        if cand.get("finishReason"):
            text = f"{text} finishReason={cand['finishReason']}".strip()
        return "candidates", text
    if isinstance(doc.get("error"), dict) and "status" in doc["error"]:
        return "error", _error(doc["error"])
    if len(doc) == 1:  # Live API messages are one-key objects: setup, serverContent, realtimeInput, ...
        (key, value), = doc.items()
        if isinstance(value, dict):
            if isinstance(value.get("modelTurn"), dict):
                return key, _parts(value["modelTurn"].get("parts"))
            if key == "setup":
                return key, str(value.get("model", ""))
            if key == "realtimeInput":
                chunks = value.get("mediaChunks") or [v for v in value.values() if isinstance(v, dict)]
                return key, " ".join(_sized(str(c.get("mimeType", "data")), c.get("data"))
                                     for c in chunks if isinstance(c, dict))
            if key == "toolCall":
                calls = value.get("functionCalls") or []
                return key, " ".join(str(c.get("name", "")) for c in calls if isinstance(c, dict))
            flags = [k for k, v in value.items() if v is True]
            if flags:
                return key, " ".join(flags)
        return key, short(json.dumps(value, separators=(",", ":")))
    return None


def _bedrock(doc: dict, kind: str) -> str | None:
    if isinstance(doc.get("delta"), dict):  # ConverseStream contentBlockDelta
        d = doc["delta"]
        if isinstance(d.get("text"), str):
            return repr(d["text"])
        if isinstance(d.get("toolUse"), dict):
            return repr(d["toolUse"].get("input", ""))
        if isinstance(d.get("reasoningContent"), dict):
            return repr(d["reasoningContent"].get("text", ""))
    if "stopReason" in doc:
        return f"stopReason={doc['stopReason']}"
    if kind == "messageStart":
        return str(doc.get("role", ""))
    return None


def summarize(doc: Any, name: str | None = None, width: int = 70) -> tuple[str, str]:
    """(name, summary) of one event, parsed from JSON; ``name`` is the SSE ``event:`` field
    or Bedrock's ``:event-type`` when there is one."""
    if not isinstance(doc, dict):
        return name or "json", short(json.dumps(doc, separators=(",", ":")), width)
    if isinstance(doc.get("bytes"), str):  # Bedrock InvokeModelWithResponseStream: the provider's event inside
        try:
            inner = json.loads(base64.b64decode(doc["bytes"], validate=True))
        except (binascii.Error, ValueError):
            inner = None
        if inner is not None:
            return summarize(inner, None, width)
    kind = str(doc.get("type") or name or doc.get("object") or "")
    text = None
    if kind.startswith(("message_", "content_block_")) or kind == "ping" or (
            kind == "error" and isinstance(doc.get("error"), dict)):
        text = _anthropic(doc, kind)
    if text is None and isinstance(doc.get("choices"), list):  # chat completions chunk
        choice = doc["choices"][0] if doc["choices"] and isinstance(doc["choices"][0], dict) else {}
        delta = choice.get("delta") or {}
        if delta.get("content") is not None:
            text = repr(delta["content"])
        elif delta.get("tool_calls"):
            call = delta["tool_calls"][0] or {}
            text = repr((call.get("function") or {}).get("arguments") or (call.get("function") or {}).get("name", ""))
        elif choice.get("finish_reason"):
            text = f"finish_reason={choice['finish_reason']}"
        else:
            text = json.dumps(delta)
        kind = kind or "chat.completion.chunk"
    if text is None and "type" in doc:
        text = _openai(doc, kind)
    if text is None and not doc.get("type"):
        gem = _gemini(doc)
        if gem is not None and name is None:
            kind, text = gem
        elif gem is not None and gem[0] == "candidates":
            text = gem[1]
    if text is None:
        text = _bedrock(doc, kind)
    if text is None:
        text = json.dumps(doc, separators=(",", ":"), ensure_ascii=False)
    return kind or "json", short(text, width)
