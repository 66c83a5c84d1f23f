"""Client-safe errors: messages reach browsers without server paths; a served app with credentials
refuses anonymous requests and hides the text of unexpected exceptions."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import gradio as gr
import httpx
import pytest
from gradio_client import Client

from app.errors import client_text
from app.main import launch_app
from app.views.common import user_errors
from dida.studio import Studio


@pytest.mark.parametrize(
    ("message", "shown"),
    [("cannot load /work/main/runs/x/model.safetensors: file is truncated",
      "cannot load …/model.safetensors: file is truncated"),
     ("[Errno 2] No such file or directory: '/home/ana/my data/val/a.png'",
      "[Errno 2] No such file or directory: '…/a.png'"),
     ("runs/x: cannot be listed (Permission denied: \"/srv/dida/runs/x/\")",
      "runs/x: cannot be listed (Permission denied: \"…/x\")"),
     ("data/synthcity/target/leftImg8bit/val/a.png is broken", "…/a.png is broken"),
     ("weights in C:\\Users\\ana\\w.pth and ~/models/w2.pth", "weights in …/w.pth and …/w2.pth"),
     ("run name 'a/../../x' is not allowed", "run name '…/x' is not allowed"),
     ("see http://example.org/docs/a/b for help", "see http://example.org/docs/a/b for help"),
     ("has source/ or target/ but no synthcity.json; tp=0.1",
      "has source/ or target/ but no synthcity.json; tp=0.1")],
)  # fmt: skip
def test_client_text_cuts_paths_to_file_names(message: str, shown: str) -> None:
    assert client_text(message) == shown


def test_client_text_of_exceptions_and_temp_paths() -> None:
    with tempfile.NamedTemporaryFile(suffix=".safetensors") as f:
        text = client_text(FileNotFoundError(f"checkpoint {f.name} is gone"))
    assert text == f"checkpoint …/{Path(f.name).name} is gone"
    assert f"{Path(f.name).parent}/" not in text
    assert client_text(KeyError("unknown run 'x'")) == "unknown run 'x'"  # no repr quotes


def test_user_errors_sends_a_path_free_gr_error() -> None:
    @user_errors
    def handler() -> None:
        raise FileNotFoundError("/work/main/runs/x/model.safetensors: no such file")

    with pytest.raises(gr.Error) as caught:
        handler()
    assert caught.value.message == "…/model.safetensors: no such file"
    assert "/work/main" in str(caught.value.__cause__)  # the server log keeps the full text


# ------------------------------------------------------------------------------ a served app
@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, synthcity_tiny: Path):
    runs_dir = tmp_path_factory.mktemp("runs-empty")
    studio = Studio(synthcity_tiny, [runs_dir], None, data_preset="tiny", cache_size=4)
    auth = [("ana", "pw-ana"), ("bo", "pw-bo")]
    demo, url = launch_app(studio, port=None, prevent_thread_lock=True, quiet=True, auth=auth)
    _wait_listening(url)
    yield demo, url
    studio.shutdown()
    demo.close()


def _wait_listening(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


def test_served_app_requires_the_login(served) -> None:
    demo, url = served
    assert httpx.get(f"{url}gradio_api/info", timeout=10).status_code == 401
    bad = httpx.post(f"{url}login", data={"username": "ana", "password": "wrong"}, timeout=10)
    assert bad.status_code == 400
    client = Client(url, auth=("bo", "pw-bo"), verbose=False, analytics_enabled=False)
    assert "/refresh" in client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert demo.show_error is False  # unexpected exceptions reach browsers as a bare "Error"
