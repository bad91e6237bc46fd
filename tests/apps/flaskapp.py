"""
A Flask application, served with C{--wsgi tests.apps.flaskapp:app}.

Its handlers call C{app.config["DURING"]} (a no-op unless a test sets it)
while they run: an in-memory test uses it to do what the reactor would do
meanwhile, such as reaching the drain's cut, at a chosen point of the
handler's thread.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from flask import Flask, Response, jsonify


def makeApp() -> Flask:
    """
    @return: a new application with C{/hello}, C{/users/<int:userID>},
        C{/started} (calls the hook after its first chunk),
        C{/sleep/<seconds>} (blocks its thread) and C{/fails}.
    """
    app = Flask(__name__)
    app.config["DURING"] = lambda where: None

    def during(where: str) -> None:
        app.config["DURING"](where)

    @app.route("/hello")
    def hello() -> str:
        during("hello")
        return "hello from flask\n"

    @app.route("/users/<int:userID>")
    def user(userID: int) -> Response:
        during("user")
        return jsonify(id=userID)

    @app.route("/started")
    def started() -> Response:
        def chunks() -> Iterator[bytes]:
            yield b"first\n"
            during("started")
            yield b"second\n"

        return Response(chunks(), mimetype="text/plain")

    @app.route("/sleep/<float:seconds>")
    def sleep(seconds: float) -> str:
        time.sleep(seconds)
        return "slept\n"

    @app.route("/fails")
    def fails() -> str:
        during("fails")
        raise RuntimeError("the handler failed")

    return app


app = makeApp()


def createApp() -> Flask:
    """
    An application factory: C{--wsgi 'tests.apps.flaskapp:createApp()'}.
    """
    return makeApp()
