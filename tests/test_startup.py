"""app.startup: the port answers with a progress page before the Studio is ready, the page reports
the stage (and the val images written so far), and the app takes the port over when prepared."""

from __future__ import annotations

import json
import socket
import sys
import types
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from app import startup


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, ""


def _port_free(port: int) -> bool:
    """Can a server bind the port now (with SO_REUSEADDR, as uvicorn binds)?"""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_progress_page_reports_stage_and_val_images(tmp_path: Path) -> None:
    val = tmp_path / "target" / "leftImg8bit" / "val" / "town"
    val.mkdir(parents=True)
    for i in range(3):
        (val / f"town_{i}_leftImg8bit.png").write_bytes(b"")
    readiness, port = startup.Readiness(tmp_path), _free_port()
    server = startup.serve_progress("127.0.0.1", port, readiness)
    try:
        status, page = _get(port, "/")
        assert status == 200 and "DIDA Studio is starting" in page
        state = json.loads(_get(port, "/startup/state")[1])
        assert state["step"] == 1 and state["steps"] == len(startup.STAGES) == 3
        assert state["detail"] == "3 val images written (first launch only)"
        assert state["ready"] is False and str(tmp_path) not in json.dumps(state)
        assert _get(port, "/gradio_api/info")[0] == 503  # clients waiting for the app keep waiting
        readiness.enter(startup.STAGES[1])
        state = json.loads(_get(port, "/startup/state")[1])
        assert state["step"] == 2 and state["detail"] == ""
    finally:
        startup.stop(server)
    assert _port_free(port)
    with pytest.raises(ValueError, match="unknown stage"):
        readiness.enter("dancing")


class _Studio:
    def featured_runs(self) -> list[str]:
        return ["run:dida"]

    def prefetch(self, runs: list[str]) -> None:
        self.prefetched = runs

    def precompute(self, runs: list[str]) -> None:
        self.precomputed = runs


def _args(port: int, data: Path) -> types.SimpleNamespace:
    return types.SimpleNamespace(host="127.0.0.1", port=port, data=str(data), data_preset="tiny")


def test_the_page_answers_before_the_studio_is_ready_then_the_app_takes_the_port(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port, seen, studio = _free_port(), {}, _Studio()

    def open_studio(args) -> _Studio:  # the slow part: the page must already answer
        seen["while_opening"] = _get(port, "/startup/state")
        return studio

    def launch_app(studio, host, port, **kwargs):
        seen["port_free_at_launch"] = _port_free(port)
        seen["launch"] = (studio, host, port, kwargs)

    fake = types.SimpleNamespace(build_app=lambda s: f"blocks of {s.featured_runs()}",
                                 launch_app=launch_app)  # fmt: skip
    monkeypatch.setitem(sys.modules, "app.main", fake)
    monkeypatch.setattr(startup, "_generate_val", lambda args: None)
    opened = startup.open_app(_args(port, tmp_path), [("a", "b")], open_studio)
    status, body = seen["while_opening"]
    assert status == 200 and json.loads(body)["stage"] == startup.STAGES[1]
    assert seen["port_free_at_launch"] is True
    assert opened == (studio, ["run:dida"], "blocks of ['run:dida']")
    assert studio.prefetched == studio.precomputed == ["run:dida"]
    assert seen["launch"] == (studio, "127.0.0.1", port, {"prevent_thread_lock": True,
                              "quiet": True, "auth": [("a", "b")], "demo": opened[2]})  # fmt: skip


def test_a_refused_studio_frees_the_port(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    port = _free_port()
    monkeypatch.setitem(sys.modules, "app.main", types.SimpleNamespace(build_app=None))
    monkeypatch.setattr(startup, "_generate_val", lambda args: None)
    assert startup.open_app(_args(port, tmp_path), None, lambda args: None) is None
    assert _port_free(port)


def test_a_busy_port_is_named(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert startup.open_app(_args(port, tmp_path), None, lambda args: None) is None
    assert f"error: cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


def test_only_a_new_or_synthcity_folder_is_generated_early(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    fake = types.SimpleNamespace(ensure_synthcity=lambda *a, **k: calls.append((*a, k)))
    monkeypatch.setitem(sys.modules, "dida.data.synthcity", fake)
    cityscapes = tmp_path / "cityscapes"
    (cityscapes / "leftImg8bit").mkdir(parents=True)
    startup._generate_val(_args(0, cityscapes))
    assert calls == []  # a folder of another dataset: nothing is written into it
    startup._generate_val(_args(0, tmp_path / "new"))
    assert calls == [(tmp_path / "new", "tiny", ("val",), {"nice": startup.GENERATOR_NICE})]


def test_the_studio_opens_once_the_manifest_exists_while_the_split_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    release, seen = threading.Event(), {}

    def generate(args) -> None:  # writes the manifest, then "renders" until released
        (Path(args.data) / "synthcity.json").write_text("{}")
        release.wait(10)

    def open_studio(args) -> None:
        seen["writing"] = args.val_writing()
        release.set()
        return None

    monkeypatch.setitem(sys.modules, "app.main", types.SimpleNamespace(build_app=None))
    monkeypatch.setattr(startup, "_generate_val", generate)
    tmp_path.mkdir(exist_ok=True)
    args = _args(_free_port(), tmp_path)
    assert startup.open_app(args, None, open_studio) is None
    assert seen == {"writing": True} and release.is_set()


def test_the_console_hears_each_stage_with_its_elapsed_time() -> None:
    lines: list[str] = []
    readiness = startup.Readiness(None, echo=lines.append)
    readiness.enter(startup.STAGES[1])
    readiness.done()
    assert [line.split("] ", 1)[1] for line in lines] == [
        f"{startup.STAGES[0]} (step 1 of 3)",
        f"{startup.STAGES[1]} (step 2 of 3)",
        "the app is serving",
    ]
    seconds = [float(line[1:].split(" s]")[0]) for line in lines]
    assert seconds == sorted(seconds) and seconds[0] >= 0
