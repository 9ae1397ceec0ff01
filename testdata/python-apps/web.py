"""A flask app served by gunicorn. basic: the test client; more: gunicorn serving it."""

import json
import subprocess
import sys
import time
import urllib.request
from importlib.metadata import version

from flask import Flask, jsonify, render_template_string, request

app = Flask(__name__)


@app.get("/")
def index() -> str:
    return "hello"


@app.get("/sum")
def total() -> object:
    a, b = int(request.args["a"]), int(request.args["b"])
    page = render_template_string("{{ items|join('+') }}={{ total }}", items=[a, b], total=a + b)
    return jsonify(total=a + b, page=page)


def serve(path: str) -> tuple[bytes, str]:
    """Start gunicorn on this app, GET ``path``, stop it: (body, Server header)."""
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--bind",
            "127.0.0.1:8123",
            "--workers",
            "1",
            "--worker-tmp-dir",
            "/dev/shm",
            "--chdir",
            "/srv/web",
            "app:app",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        for _ in range(200):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:8123{path}") as answer:
                    return answer.read(), answer.headers.get("Server", "")
            except OSError:
                if server.poll() is not None:
                    raise SystemExit(
                        server.stderr.read().decode() if server.stderr else "died"
                    ) from None
                time.sleep(0.1)
        raise SystemExit("gunicorn did not answer")
    finally:
        server.terminate()
        server.wait(timeout=10)


def basic() -> dict[str, object]:
    body, _server = serve("/")
    return {"index": body.decode()}


def more() -> dict[str, object]:
    body, server = serve("/sum?a=19&b=23")
    return {
        "body": json.loads(body),
        "server": server.split("/")[0],
        "client": app.test_client().get("/").get_data(as_text=True),
        "versions": {d: version(d) for d in ("flask", "gunicorn", "werkzeug", "jinja2")},
    }


if __name__ == "__main__":
    print(json.dumps({"basic": basic, "more": more}[sys.argv[1]](), sort_keys=True))
