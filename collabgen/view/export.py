"""`collabgen view OUT --export FILE`: the page as one self-contained HTML file.

The style and script are inlined, and the data (overview, every conversation's summary
and every conversation in full; the eval report and every seed's conversations) sits in
a `<script type="application/json">` block that the script reads with `JSON.parse`; the
page filters and pages it itself. `<` in the JSON
is written `\\u003c`, so no model text can close the block (`</script>`) or open a comment.
A Content-Security-Policy meta tag allows only the inlined script and style (by hash) and
no network at all: the file opens offline and calls nothing.
"""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

from collabgen.files import write_atomic
from collabgen.view.data import RunView
from collabgen.view.server import static_files, to_json

_STYLE_TAG = '<link rel="stylesheet" href="static/style.css">'
_SCRIPT_TAG = '<script src="static/app.js"></script>'


def embed_json(data: object) -> str:
    """JSON safe inside a script element: no `<`, `>` or `&` as such, no line separators."""
    text = to_json(data)
    for raw, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                         ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(raw, escaped)
    return text


def _sha256(text: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii")


def export_html(view: RunView) -> str:
    assets = static_files()
    script = assets["app.js"].decode("utf-8")
    style = assets["style.css"].decode("utf-8")
    overview = view.overview()
    data = {"overview": overview, "summary": view.summary().to_dicts() if overview["run"] else [],
            "conversations": {c["conv_id"]: c for c in view.all_conversations()} if overview["run"] else {},
            "eval": view.eval_report() if overview["eval"] else None,
            "eval_seeds": view.all_eval_seeds() if overview["eval"] else {}}
    csp = (f"default-src 'none'; script-src '{_sha256(script)}'; style-src '{_sha256(style)}'; img-src data:; "
           "connect-src 'none'; base-uri 'none'; form-action 'none'")
    for name, text in (("app.js", script), ("style.css", style)):
        if re.search(r"<!--|<script|</script|</style", text, re.IGNORECASE):
            raise RuntimeError(f"view/static/{name} holds a tag-like sequence that would end its inlined element")
    page = assets["index.html"].decode("utf-8")
    for tag in (_STYLE_TAG, _SCRIPT_TAG):
        if tag not in page:
            raise RuntimeError(f"view/static/index.html lost {tag!r}: the export cannot inline its assets")
    page = page.replace(_STYLE_TAG,
                        f'<meta http-equiv="Content-Security-Policy" content="{csp}">\n<style>{style}</style>')
    page = page.replace(_SCRIPT_TAG,
                        f'<script type="application/json" id="collabgen-data">{embed_json(data)}</script>\n'
                        f'<script>{script}</script>')
    return page


def export(view: RunView, target: Path) -> Path:
    return write_atomic(target, export_html(view))
