"""Headless Chromium driven through the DevTools protocol (a websocket client: ``websockets``, which kedro-viz's
server brings in), for the browser tests of the report, its explorers and the kedro-viz build
(tests/integration/test_browser.py, tests/reporting/test_explorers.py). Debian's ``chromium``; .ci/run installs it."""

from __future__ import annotations

import contextlib
import itertools
import json
import shutil
import subprocess
import time
from pathlib import Path

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars"]


class DevToolsPage:
    """One Chromium tab: JavaScript in the page, polled until true (within `timeout` seconds unless a call says)."""

    def __init__(self, websocket, timeout: float = 60):
        self._ws = websocket
        self._ids = itertools.count(1)
        self.timeout = timeout

    def send(self, method: str, **params) -> dict:
        call = next(self._ids)
        self._ws.send(json.dumps({"id": call, "method": method, "params": params}))
        while True:  # events (no id) are skipped
            message = json.loads(self._ws.recv(timeout=60))
            if message.get("id") == call:
                assert "error" not in message, f"{method}: {message['error']}"
                return message["result"]

    def js(self, expression: str):
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        assert "exceptionDetails" not in result, f"{expression}: {result['exceptionDetails']}"
        return result["result"].get("value")

    def poll(self, expression: str, timeout: float | None = None):
        """The expression's value once it is truthy, or its last value after `timeout` seconds."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not (value := self.js(expression)) and time.monotonic() < deadline:
            time.sleep(0.1)
        return value

    def wait(self, expression: str, timeout: float | None = None, what: str = ""):
        value = self.poll(expression, timeout)
        if not value:
            raise AssertionError(f"not seen within {self.timeout if timeout is None else timeout:.0f} s: "
                                 f"{what or expression}")
        return value


@contextlib.contextmanager
def devtools(folder: Path, url: str, window: str = "1600,1000", timeout: float = 60):
    """A Chromium of its own (profile and log in `folder`) with one tab at `url`, as a ``DevToolsPage``."""
    from urllib.request import urlopen

    from websockets.sync.client import connect

    profile = folder / "devtools-profile"
    profile.mkdir()
    with open(folder / "chromium.log", "w") as log:
        browser = subprocess.Popen([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0",
                                    f"--window-size={window}", "about:blank"], stdout=subprocess.DEVNULL, stderr=log)
        try:
            port_file = profile / "DevToolsActivePort"  # Chromium writes its port here
            deadline = time.monotonic() + 60
            while not (port_file.exists() and port_file.read_text().strip()):
                assert browser.poll() is None, (folder / "chromium.log").read_text()[-2000:]
                assert time.monotonic() < deadline, "Chromium did not open its DevTools port"
                time.sleep(0.1)
            port = int(port_file.read_text().split()[0])
            with urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30) as response:
                tab = next(t for t in json.load(response) if t["type"] == "page")
            with connect(tab["webSocketDebuggerUrl"], max_size=None, open_timeout=30) as websocket:
                page = DevToolsPage(websocket, timeout)
                page.send("Page.navigate", url=url)
                yield page
        finally:
            browser.terminate()
            try:
                browser.wait(30)
            except subprocess.TimeoutExpired:
                browser.kill()
                browser.wait()
