"""Files the app offers for download (CSV tables, the panel grid as PNG).

Every view redraw refreshes its download, so writing each one into a fresh temporary folder left one
folder per redraw behind in the system's temp directory for as long as the machine lived (thousands
after a day of use). Downloads now live in one folder owned by this process and removed when it
exits (``atexit``; the app's ``os._exit`` calls ``remove_exports`` first); a file's path is named by
its content, so a redraw with the same content reuses the file and two users' different tables never
overwrite each other.
"""

from __future__ import annotations

import atexit
import csv
import hashlib
import io
import os
import shutil
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

PREFIX = "dida-studio-"


_folder: list[Path] = []
"""This process's download folder once made (a list so that it can be emptied)."""
_lock = threading.Lock()


def export_folder() -> Path:
    """This process's download folder (created on first use, removed at exit)."""
    with _lock:
        if not _folder:
            _folder.append(Path(tempfile.mkdtemp(prefix=PREFIX)))
            atexit.register(shutil.rmtree, _folder[0], ignore_errors=True)
        return _folder[0]


def remove_exports() -> None:
    """Remove this process's download folder now, for exits that skip ``atexit`` (the app ends
    with ``os._exit``); a later download makes a new one."""
    with _lock:
        for folder in _folder:
            shutil.rmtree(folder, ignore_errors=True)
        _folder.clear()


def export_bytes(name: str, data: bytes) -> str:
    """Write ``data`` as ``name`` under a folder named by its hash; returns the path (existing or new)."""
    path = export_folder() / hashlib.sha256(data).hexdigest()[:20] / Path(name).name
    if not path.exists():
        path.parent.mkdir(exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
        partial.write_bytes(data)
        partial.replace(path)
    return str(path)


def csv_bytes(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> bytes:
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(headers)
    writer.writerows(rows)
    return text.getvalue().encode()


def write_csv(name: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A CSV download of ``rows`` under ``headers``; returns its path."""
    return export_bytes(name, csv_bytes(headers, rows))


def write_png(name: str, image: np.ndarray) -> str:
    """A PNG download of a uint8 RGB image; returns its path."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return export_bytes(name, buffer.getvalue())
