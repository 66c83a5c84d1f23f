"""scripts/raw_client.py, the load bench's browser-weight client, against a real Gradio app: the same
answers as gradio_client, session state kept per client, defaults filled, errors raised."""

from __future__ import annotations

import gradio as gr
import pytest
from gradio_client import Client

from scripts.raw_client import AppError, RawClient, completion, payload


def _app() -> gr.Blocks:
    with gr.Blocks() as demo:
        count = gr.State(0)
        x, y, out = gr.Number(3), gr.Number(4), gr.Textbox()

        def add(n: int, a: float, b: float):
            if a < 0:
                raise gr.Error("x must be ≥ 0")
            return n + 1, f"{n + 1}:{a + b:g}"

        gr.Button().click(add, [count, x, y], [count, out], api_name="add")
    return demo


@pytest.fixture(scope="module")
def url():
    demo = _app()
    _, local_url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    yield local_url
    demo.close()


def test_raw_client_matches_gradio_client_and_keeps_session_state(url):
    raw = RawClient(url)
    assert raw.parameters("/add") == ["a", "b"]
    assert raw.predict("/add", a=1, b=2) == [None, "1:3"]  # the state's output slot is None
    reference = Client(url, verbose=False, analytics_enabled=False, download_files=False)
    again = RawClient(url)
    assert again.predict("/add", a=1, b=2)[-1] == reference.predict(a=1, b=2, api_name="/add")
    assert raw.predict("/add")[-1] == "2:7"  # this session's second call, defaults 3 and 4
    assert again.predict("/add", b=10)[-1] == "2:13"  # its own session: second call


def test_an_app_error_is_raised_with_its_message(url):
    with pytest.raises(AppError, match="x must be"):
        RawClient(url).predict("/add", a=-1)


def test_payload_fills_states_and_defaults_and_refuses_unknown_names():
    slots = [None, "a", "b"]
    assert payload(slots, {"a": 3, "b": 4}, {"b": 9}) == [None, 3, 9]
    with pytest.raises(TypeError, match="unknown parameter"):
        payload(slots, {}, {"c": 1})


def test_completion_skips_other_events_and_fails_on_a_closed_stream():
    lines = [
        'data: {"msg": "estimation", "event_id": "e1"}',
        'data: {"msg": "process_completed", "event_id": "e0", "success": true}',
        "",
        'data: {"msg": "process_completed", "event_id": "e1", "success": true, "output": {}}',
    ]
    assert completion(iter(lines), "e1")["event_id"] == "e1"
    with pytest.raises(AppError, match="closed"):
        completion(iter(lines[:2]), "e1")
    with pytest.raises(AppError, match="stream ended"):
        completion(iter(['data: {"msg": "close_stream"}']), "e1")
