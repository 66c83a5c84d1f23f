"""A light Gradio client for the load benchmark: the browser's own protocol over one kept-alive
connection per user, with none of gradio_client's per-call machinery.

gradio_client opens a new HTTP client (and its SSL context) for every event stream, posts each join
on a fresh connection, runs a thread per job and accumulates the stream in one growing buffer: on
two cores, eight such users took ≈ 63 ms of CPU per call, half the machine. A browser keeps its
connections open and its CPU is on another machine. This client posts ``queue/join`` and reads
``queue/data`` (Server-Sent Events) on one ``httpx.Client``, the way Gradio's JavaScript client
does, so the cores stay with the server being measured.

    c = RawClient("http://127.0.0.1:7860/")
    outputs = c.predict("/readout", x=10, y=20)
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx


class AppError(RuntimeError):
    """The app answered an event with an error (its message as the app sent it)."""


def endpoints(config: dict, info: dict) -> dict[str, tuple[int, list[str | None], dict]]:
    """api name → (fn_index, one entry per input: a parameter name, or None for a gr.State the
    server fills from the session, defaults by parameter name), from the app's config and info."""
    types = {c["id"]: c["type"] for c in config["components"]}
    table = {}
    for dep in config["dependencies"]:
        name = dep.get("api_name")
        if not isinstance(name, str) or f"/{name}" not in info["named_endpoints"]:
            continue
        params = info["named_endpoints"][f"/{name}"]["parameters"]
        names = iter(p["parameter_name"] for p in params)
        slots = [None if types[i] == "state" else next(names) for i in dep["inputs"]]
        defaults = {p["parameter_name"]: p.get("parameter_default") for p in params}
        table[f"/{name}"] = (dep["id"], slots, defaults)
    return table


def payload(slots: list[str | None], defaults: dict, kwargs: dict) -> list[Any]:
    """The ``data`` list of a join: each input's keyword value or its default; None for states."""
    unknown = set(kwargs) - {s for s in slots if s}
    if unknown:
        raise TypeError(f"unknown parameter(s) {sorted(unknown)}; the endpoint takes {slots}")
    return [None if s is None else kwargs.get(s, defaults.get(s)) for s in slots]


def completion(lines, event_id: str) -> dict:
    """The ``process_completed`` message of ``event_id`` from an SSE line stream."""
    for line in lines:
        if not line.startswith("data:"):
            continue
        message = json.loads(line[5:])
        if message.get("event_id") == event_id and message["msg"] == "process_completed":
            return message
        if message["msg"] in ("close_stream", "unexpected_error"):
            raise AppError(f"stream ended before the event completed: {message}")
    raise AppError("the event stream closed before the event completed")


class RawClient:
    """One user's session on a Gradio app: ``predict(api_name, **kwargs)`` → the outputs."""

    def __init__(self, url: str, timeout: float = 120.0):
        self.url, self.session_hash = url.rstrip("/") + "/", uuid.uuid4().hex
        self.http = httpx.Client(timeout=timeout)
        config = self.http.get(f"{self.url}config").json()
        info = self.http.get(f"{self.url}gradio_api/info").json()
        self.endpoints = endpoints(config, info)

    def parameters(self, api_name: str) -> list[str]:
        return [s for s in self.endpoints[api_name][1] if s]

    def predict(self, api_name: str, **kwargs) -> list[Any]:
        fn_index, slots, defaults = self.endpoints[api_name]
        body = {"data": payload(slots, defaults, kwargs), "fn_index": fn_index}
        body |= {"session_hash": self.session_hash, "event_data": None, "trigger_id": None}
        joined = self.http.post(f"{self.url}gradio_api/queue/join", json=body)
        joined.raise_for_status()
        event_id = joined.json()["event_id"]
        params = {"session_hash": self.session_hash}
        with self.http.stream("GET", f"{self.url}gradio_api/queue/data", params=params) as r:
            message = completion(r.iter_lines(), event_id)
        if not message.get("success"):
            raise AppError(str(message.get("output", {}).get("error")))
        return message["output"]["data"]

    def close(self) -> None:
        self.http.close()
