#!/usr/bin/env python3
"""Drives headless Chromium through the Strata console, as a person would.

Signs in with an API token through the sign-in form, finds the app on the
apps page, opens it, checks that its releases, instances, routes and checks
are shown, and saves a screenshot. Talks the Chrome DevTools Protocol over
--remote-debugging-pipe, so it needs nothing beyond Python's standard library
and Debian's chromium.

Usage: console_chromium.py BASE_URL TOKEN APP SCREENSHOT.png
"""

import base64
import json
import os
import subprocess
import sys
import tempfile
import time


class Browser:
    def __init__(self):
        # Chromium reads commands from fd 3 and writes replies to fd 4.
        to_chrome_r, self.to_chrome = os.pipe()
        self.from_chrome, from_chrome_w = os.pipe()

        def plumb():
            # Move both ends out of the way first: either may be fd 3 or 4.
            high_r, high_w = 100, 101
            os.dup2(to_chrome_r, high_r)
            os.dup2(from_chrome_w, high_w)
            os.dup2(high_r, 3)
            os.dup2(high_w, 4)

        self.profile = tempfile.mkdtemp(prefix="strata-chromium-")
        self.proc = subprocess.Popen(
            ["chromium", "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--remote-debugging-pipe", f"--user-data-dir={self.profile}", "--window-size=1280,900"],
            pass_fds=(3, 4), preexec_fn=plumb,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self.next_id = 0
        self.buffer = b""
        self.session = None

    def send(self, method, params=None, session=True):
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if session and self.session:
            message["sessionId"] = self.session
        os.write(self.to_chrome, json.dumps(message).encode() + b"\0")
        while True:
            reply = self.read()
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def read(self):
        while b"\0" not in self.buffer:
            chunk = os.read(self.from_chrome, 1 << 16)
            if not chunk:
                raise RuntimeError("chromium went away")
            self.buffer += chunk
        message, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(message)

    def open(self):
        target = self.send("Target.createTarget", {"url": "about:blank"}, session=False)
        attached = self.send("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}, session=False)
        self.session = attached["sessionId"]
        self.send("Page.enable")

    def eval(self, expression):
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        return result.get("result", {}).get("value")

    def wait_for(self, what, expression, limit=30):
        deadline = time.time() + limit
        while time.time() < deadline:
            if self.eval(expression):
                return
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}; page says:\n{self.eval('document.body.innerText')}")

    def close(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)


def main():
    base, token, app, screenshot = sys.argv[1:5]
    browser = Browser()
    try:
        browser.open()
        browser.send("Page.navigate", {"url": f"{base}/console"})
        browser.wait_for("the sign-in form", "!!document.querySelector('input[name=token]')")
        browser.eval(f"document.querySelector('input[name=token]').value = {json.dumps(token)};"
                     "document.querySelector('form').submit(); true")
        browser.wait_for("the apps page", f"document.body.innerText.includes({json.dumps(app)}) && "
                                          "location.pathname === '/console'")
        print(f"signed in; apps page lists {app}")
        browser.eval(f"document.querySelector('a[href=\"/console/apps/{app}\"]').click(); true")
        browser.wait_for("the app page", f"location.pathname === '/console/apps/{app}'")
        browser.wait_for("the app's sections", "['Releases','Instances','Routes','Checks','Databases']"
                                               ".every(h => document.body.innerText.includes(h))")
        if os.environ.get("EXPECT_ROUTES_AND_CHECKS") == "1":
            # The app's default check runs every few seconds: show it passing.
            deadline = time.time() + 60
            while time.time() < deadline and not browser.eval("document.body.innerText.includes('passing')"):
                time.sleep(1)
                browser.send("Page.reload")
                browser.wait_for("the app page", "document.readyState === 'complete'")
        text = browser.eval("document.body.innerText")
        rows = {h: browser.eval(
            f"(() => {{ const h = [...document.querySelectorAll('h3')].find(e => e.textContent === '{h}');"
            " return h ? h.nextElementSibling.querySelectorAll('tr').length - 1 : -1 })()")
            for h in ["Releases", "Instances", "Routes", "Checks", "Databases"]}
        print("app page rows: " + ", ".join(f"{k} {v}" for k, v in rows.items()))
        if "Partial" in text:
            print("partial overview: " + text.split("Partial:", 1)[1].split("\n", 1)[0].strip())
        assert rows["Releases"] >= 1 and rows["Instances"] >= 1, rows
        if os.environ.get("EXPECT_ROUTES_AND_CHECKS") == "1":
            assert rows["Routes"] >= 1 and rows["Checks"] >= 1, rows
        shot = browser.send("Page.captureScreenshot", {"format": "png"})
        with open(screenshot, "wb") as f:
            f.write(base64.b64decode(shot["data"]))
        print(f"screenshot: {screenshot}")
    finally:
        browser.close()


if __name__ == "__main__":
    main()
