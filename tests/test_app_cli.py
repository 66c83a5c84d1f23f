"""The app's command line: loopback by default, a login required off loopback, credentials from
the environment or a private file, the bound URL printed, and ``python launch.py`` unchanged."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import pytest

from app import cli, startup
from app.auth import (
    AUTH_ENV,
    AuthError,
    credentials_for,
    env_credentials,
    file_credentials,
    is_loopback,
)

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serving(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def no_env_auth(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(AUTH_ENV, raising=False)


def _auth_file(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "users.txt"
    path.write_text(text)
    path.chmod(mode)
    return path


# ------------------------------------------------------------------------------ hosts
@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("[::1]", True),
     ("localhost", True), ("LocalHost", True), ("::ffff:127.0.0.1", True),
     ("0.0.0.0", False), ("::", False), ("192.168.1.20", False), ("10.0.0.1", False),
     ("fe80::1", False), ("studio.example.org", False)],
)  # fmt: skip
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


# ------------------------------------------------------------------------------ refusing to start
@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20"])
def test_main_refuses_a_non_loopback_host_without_credentials(
    host: str, no_env_auth: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    opened = []
    monkeypatch.setattr(cli, "_open_studio", lambda args: opened.append(args))
    port = _free_port()
    assert cli.main(["--host", host, "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"--host {host} accepts connections from other machines" in err
    assert f"export {AUTH_ENV}='user:password'" in err and "--auth-file PATH" in err
    assert "chmod 600 PATH" in err and "127.0.0.1" in err
    assert opened == [] and not _serving(port)  # no studio opened, nothing listening


def test_launch_py_refuses_0_0_0_0_quickly() -> None:
    env = {k: v for k, v in os.environ.items() if k != AUTH_ENV}
    port = _free_port()
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "launch.py", "--host", "0.0.0.0", "--port", str(port)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2 and time.monotonic() - start < 15
    assert "requires a login" in done.stderr and f"{AUTH_ENV}=" in done.stderr
    assert f"python launch.py --host 0.0.0.0 --port {port} --auth-file PATH" in done.stderr
    assert done.stdout == "" and not _serving(port)


def test_launch_py_help_names_the_auth_options() -> None:
    done = subprocess.run(
        [sys.executable, "launch.py", "--help"], cwd=REPO, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 0 and done.stdout.startswith("usage: python launch.py")
    assert "--auth-file" in done.stdout and "DIDA_STUDIO_AUTH" in done.stdout


def test_main_refuses_a_group_readable_auth_file(
    tmp_path: Path, no_env_auth: None, capsys: pytest.CaptureFixture
) -> None:
    path = _auth_file(tmp_path, "ana:s3cret-pw\n", 0o644)
    assert cli.main(["--host", "0.0.0.0", "--auth-file", str(path)]) == 2
    err = capsys.readouterr().err
    assert "accessible by group or others (mode -rw-r--r--)" in err
    assert f"chmod 600 {path}" in err and "s3cret-pw" not in err


# ------------------------------------------------------------------------------ credentials
def test_env_credentials_are_comma_separated_pairs() -> None:
    env = {AUTH_ENV: " ana:pw1 , bo:pass:with:colons "}
    assert env_credentials(env) == [("ana", "pw1"), ("bo", "pass:with:colons")]
    assert env_credentials({}) == [] and env_credentials({AUTH_ENV: "  "}) == []


@pytest.mark.parametrize("bad", ["ana", "ana:", ":pw", "ana:pw,", "ana:pw,,bo:x"])
def test_bad_env_credentials_name_the_entry_not_the_password(bad: str) -> None:
    with pytest.raises(AuthError, match=rf"environment variable {AUTH_ENV}: entry \d is not") as e:
        env_credentials({AUTH_ENV: bad})
    assert "pw" not in str(e.value)


def test_file_credentials_skip_comments_and_blank_lines(tmp_path: Path) -> None:
    path = _auth_file(tmp_path, "# team\nana:pw one\n\n  bo:x:y\n")
    assert file_credentials(path) == [("ana", "pw one"), ("bo", "x:y")]


@pytest.mark.parametrize(
    ("text", "mode", "message"),
    [("ana:pw\n", 0o640, r"mode -rw-r-----.*chmod 600"),
     ("ana:pw\n", 0o602, r"mode -rw-----w-.*chmod 600"),
     ("# nobody\n\n", 0o600, "holds no user:password line"),
     ("ana:pw\nbo\n", 0o600, r"users.txt: entry 2 is not user:password")],
)  # fmt: skip
def test_bad_auth_files_are_refused(tmp_path: Path, text: str, mode: int, message: str) -> None:
    with pytest.raises(AuthError, match=message):
        file_credentials(_auth_file(tmp_path, text, mode))


def test_missing_auth_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(AuthError, match=r"auth file .*nope.txt cannot be read \(No such file"):
        file_credentials(tmp_path / "nope.txt")


def test_credentials_combine_file_and_environment(tmp_path: Path) -> None:
    path = _auth_file(tmp_path, "ana:pw\n")
    env = {AUTH_ENV: "bo:pw2"}
    assert credentials_for("0.0.0.0", 7860, str(path), env) == [("ana", "pw"), ("bo", "pw2")]
    assert credentials_for("127.0.0.1", 7860, None, {}) is None  # loopback: no login needed
    assert credentials_for("localhost", 7860, None, env) == [("bo", "pw2")]  # but honoured


# ------------------------------------------------------------------------------ serving
class _FakeStudio:
    def featured_runs(self) -> list[str]:
        return []

    def prefetch(self, runs: list[str]) -> None:
        pass

    def precompute(self, runs: list[str]) -> None:
        pass


def test_main_serves_with_the_credentials_and_prints_the_bound_address(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    calls = []

    def launch_app(studio, host, port, **kwargs):
        calls.append((host, port, kwargs))
        return types.SimpleNamespace(server_port=port), f"http://localhost:{port}/"

    fake_main = types.SimpleNamespace(launch_app=launch_app, build_app=lambda studio: "blocks")
    monkeypatch.setitem(sys.modules, "app.main", fake_main)
    monkeypatch.setattr(startup, "_generate_val", lambda args: None)
    monkeypatch.setattr(cli, "_open_studio", lambda args: _FakeStudio())
    monkeypatch.setattr(cli, "_background", lambda *args: None)
    monkeypatch.setattr(cli, "_block", lambda *args: None)
    monkeypatch.setenv(AUTH_ENV, "ana:top-secret")
    assert cli.main(["--host", "0.0.0.0", "--port", "7911"]) == 0
    assert calls == [("0.0.0.0", 7911, {"prevent_thread_lock": True, "quiet": True,
                                         "auth": [("ana", "top-secret")], "demo": "blocks"})]  # fmt: skip
    out = capsys.readouterr().out
    assert "DIDA Studio ready at http://0.0.0.0:7911 — reachable from every address" in out
    assert "http://<this machine's name or IP>:7911" in out and "login required (1 user(s))" in out
    assert "localhost" not in out and "top-secret" not in out


@pytest.mark.parametrize(
    ("host", "url", "reach"),
    [("127.0.0.1", "http://127.0.0.1:7860", "this machine only"),
     ("::", "http://[::]:7860", "every address of this machine"),
     ("::1", "http://[::1]:7860", "this machine only"),
     ("192.168.1.20", "http://192.168.1.20:7860", "other machines on the network"),
     ("studio.lan", "http://studio.lan:7860", "other machines on the network")],
)  # fmt: skip
def test_ready_line_shows_the_bound_url(host: str, url: str, reach: str) -> None:
    line = cli.ready_line(host, 7860, [("a", "b")])
    assert line.startswith(f"DIDA Studio ready at {url} — reachable from {reach}")


def test_sigterm_closes_the_server_and_stops_the_app_like_ctrl_c(
    capsys: pytest.CaptureFixture,
) -> None:
    class Studio:
        stopped = False

        def shutdown(self) -> None:
            self.stopped = True

    class Demo:
        closed_before_shutdown = None

        def close(self) -> None:
            self.closed_before_shutdown = not studio.stopped

    studio, demo = Studio(), Demo()
    stopping, previous = threading.Event(), signal.getsignal(signal.SIGTERM)
    threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGTERM)).start()
    try:
        cli._block(studio, stopping, demo)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert studio.stopped and stopping.is_set() and capsys.readouterr().out == "stopped\n"
    assert demo.closed_before_shutdown  # the server stops taking events first


def test_the_entry_point_ends_the_process_with_mains_code_without_joining_threads(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    ended = []
    monkeypatch.setattr(cli, "main", lambda: print("stopped") or 3)
    monkeypatch.setattr(cli.os, "_exit", ended.append)
    cli.run()
    assert ended == [3] and capsys.readouterr().out == "stopped\n"
