"""What a browser may see of an error: the message with every server path cut to ``…/file name``.

Handlers show ``client_text(err)`` (``gr.Error`` toasts, job and UMAP states); the full text,
traceback included, stays in the server's console, where Gradio prints it.
"""

from __future__ import annotations

import re
from pathlib import PureWindowsPath

_SEP = r"[\\/]"
_NAME = r"[^\s'\"`,;:()\[\]{}<>|*?\\/]+"
_ABSOLUTE = rf"(?:~|[A-Za-z]:)?{_SEP}(?:{_NAME}{_SEP}?)+"
"""/a/b/c, ~/a/b, C:\\a\\b (a trailing separator allowed)."""
_RELATIVE = rf"(?:\.{{1,2}}{_SEP})?{_NAME}{_SEP}{_NAME}(?:{_SEP}{_NAME})+"
"""a/b/c with two separators or more (``source/`` or ``a/b`` alone are words, not paths)."""
_QUOTED = re.compile(r"(['\"])((?:~|[A-Za-z]:)?[\\/][^'\"\n]*)\1")
"""A quoted absolute path, which may hold spaces (``No such file or directory: '/a b/c'``)."""
_BARE = re.compile(rf"(?<![\w:/\\.~…-])(?:{_ABSOLUTE}|{_RELATIVE})")
"""An unquoted path: not inside a URL (``http://host/x``) nor a longer word."""


def short_path(path: str) -> str:
    """``…/`` and the last component of ``path`` (POSIX or Windows separators)."""
    return "…/" + PureWindowsPath(path.rstrip("\\/")).name


def client_text(error: BaseException | str) -> str:
    """``error``'s message with server paths replaced by ``…/`` and their file names.

    A KeyError's message is its key (``str(KeyError("x"))`` would add quotes).
    """
    keyed = isinstance(error, KeyError) and error.args
    text = str(error.args[0] if keyed else error)
    text = _QUOTED.sub(lambda m: f"{m[1]}{short_path(m[2])}{m[1]}", text)
    return _BARE.sub(lambda m: short_path(m[0]), text)
