"""Headless Chromium driven over the DevTools protocol on a pipe, for the report's browser test.

``--remote-debugging-pipe`` makes Chromium read protocol commands from file descriptor 3 and
write responses and events to descriptor 4, as NUL-terminated JSON (the transport Playwright and
Puppeteer use). That needs nothing beyond the standard library: no websocket client, no
downloaded browser, no network port. Console errors, uncaught exceptions, failed loads and every
request are recorded from protocol events, so a broken page is detected for real.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars", "--remote-debugging-pipe",
)

# Decodes every <img> (a broken one rejects) and reports what the page shows.
_INSPECT = """
Promise.all(Array.from(document.images).map(img => img.decode().then(
    () => ({src: img.src.slice(0, 40), complete: img.complete, width: img.naturalWidth}),
    error => ({src: img.src.slice(0, 40), complete: img.complete, width: 0,
               error: String(error)}))))
  .then(images => ({images, text: document.body.innerText,
                    scrollWidth: document.documentElement.scrollWidth}))
"""


def find_chromium() -> str | None:
    """Path of a Chromium executable on PATH (Debian: ``chromium``), or None."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclass
class PageCheck:
    """What loading one page produced."""

    images: list[dict[str, Any]]
    text: str
    scroll_width: int
    errors: list[str]
    requests: list[str]
    screenshot: bytes = field(repr=False)


class Chromium:
    """One headless Chromium process with a fresh profile; call :meth:`close` when done."""

    def __init__(self, executable: str, *, timeout: float = 30.0) -> None:
        self.timeout = timeout
        self._profile = tempfile.mkdtemp(prefix="ti-chromium-")
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        # Move the child's ends above 9, so bash's 3<& / 4>& cannot clobber one of them.
        child_r = fcntl.fcntl(to_browser_r, fcntl.F_DUPFD_CLOEXEC, 10)
        child_w = fcntl.fcntl(from_browser_w, fcntl.F_DUPFD_CLOEXEC, 10)
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._stderr = open(Path(self._profile) / "stderr.txt", "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            ["bash", "-c", f'exec "$@" 3<&{child_r} 4>&{child_w} {child_r}<&- {child_w}>&-', "bash",
             executable,
             *FLAGS, f"--user-data-dir={self._profile}", "about:blank"],
            pass_fds=(child_r, child_w), stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=self._stderr,
        )
        os.close(child_r)
        os.close(child_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []

    def close(self) -> None:
        """Ask Chromium to quit, kill it if it does not, and remove the profile."""
        if self.process.poll() is None:
            try:
                self.call("Browser.close")
            except (OSError, EOFError, TimeoutError, RuntimeError):
                pass
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)
        self._stderr.close()
        shutil.rmtree(self._profile, ignore_errors=True)

    def _receive(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([self._from_browser], [], [], remaining)[0]:
                raise TimeoutError(f"no answer from Chromium within {self.timeout} s")
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                log = (Path(self._profile) / "stderr.txt").read_text(errors="replace")
                raise EOFError(f"Chromium closed the pipe; its stderr:\n{log[-2000:]}")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, params: dict | None = None, session: str | None = None
             ) -> dict[str, Any]:
        """Send one command and return its result; events arriving meanwhile are kept in
        :attr:`events`."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._receive(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method} failed: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def _wait_for(self, method: str, session: str) -> None:
        deadline = time.monotonic() + self.timeout
        while not any(e.get("method") == method and e.get("sessionId") == session
                      for e in self.events):
            self.events.append(self._receive(deadline))

    def check_page(self, url: str, *, width: int = 1280, height: int = 800) -> PageCheck:
        """Load ``url`` in a new tab with a ``width`` x ``height`` viewport, decode its images
        and take a full-page screenshot."""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget",
                            {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable", session=session)
        self.call("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
                  session)
        first = len(self.events)
        self.call("Page.navigate", {"url": url}, session)
        self._wait_for("Page.loadEventFired", session)
        state = self.call("Runtime.evaluate", {"expression": _INSPECT, "awaitPromise": True,
                                               "returnByValue": True}, session)
        if "exceptionDetails" in state:
            raise RuntimeError(f"inspecting the page failed: {state['exceptionDetails']}")
        value = state["result"]["value"]
        size = self.call("Page.getLayoutMetrics", session=session)["cssContentSize"]
        shot = self.call("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"],
                     "scale": 1}}, session)
        events = [e for e in self.events[first:] if e.get("sessionId") == session]
        self.call("Target.closeTarget", {"targetId": target})
        return PageCheck(
            images=value["images"], text=value["text"], scroll_width=value["scrollWidth"],
            errors=_errors(events),
            requests=[e["params"]["request"]["url"] for e in events
                      if e.get("method") == "Network.requestWillBeSent"],
            screenshot=base64.b64decode(shot["data"]),
        )


def _errors(events: list[dict[str, Any]]) -> list[str]:
    """Console errors and assertions, uncaught exceptions, error log entries and failed loads."""
    errors = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in params["args"])
            errors.append(f"console.{params['type']}: {text}")
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            errors.append("exception: " + details.get("exception", {}).get(
                "description", details.get("text", "")))
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            errors.append(f"log: {params['entry']['text']} {params['entry'].get('url', '')}")
        elif method == "Network.loadingFailed":
            errors.append(f"load failed: {params.get('errorText', '')}")
    return errors
