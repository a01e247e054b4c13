#!/usr/bin/env python
"""Screenshot a page of the built documentation site with headless Chromium.

Serves the built site (default ``site/``, from ``scripts/build_docs.sh``) on a local HTTP port, loads a page in
headless Chromium with a virtual-time budget so that MathJax finishes typesetting, and saves a PNG. By default the
page is the GradientBalancer API page; ``--from-files`` opens it from disk (``file://``) instead of serving it.
With ``--check`` it also dumps the rendered DOM and reports how many
formulas MathJax typeset, failing when there are none or when raw TeX delimiters are left over.

    scripts/build_docs.sh
    python scripts/screenshot_docs.py /tmp/balancer_api.png --check

Chromium is not a Python dependency: install it with ``apt-get install -y chromium`` (Debian) or point
``--chromium`` at any Chrome/Chromium binary. Nothing is fetched from the network; the page only loads files of
the local site.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # silence the per-request log lines
        pass


def find_chromium(explicit: str | None) -> str:
    if explicit:
        return explicit
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    raise SystemExit("error: no Chromium found; install it (apt-get install -y chromium) or pass --chromium PATH")


def chromium_command(browser: str, url: str, args: argparse.Namespace, *extra: str) -> list[str]:
    return [
        browser,
        "--headless",
        "--no-sandbox",  # needed when running as root (containers, CI)
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        f"--user-data-dir={args.profile}",
        f"--window-size={args.width},{args.height}",
        f"--virtual-time-budget={args.budget_ms}",
        *extra,
        url,
    ]


def check_dom(dom: str) -> tuple[int, list[str]]:
    """Count MathJax's typeset formulas and list arithmatex spans still holding raw TeX delimiters."""
    typeset = len(re.findall(r"<mjx-container\b", dom))
    leftovers = re.findall(r'<span class="arithmatex">\s*(\\\(.{0,60})', dom)
    return typeset, leftovers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output", type=Path, help="PNG file to write (keep it out of git, e.g. under /tmp)")
    parser.add_argument("--site", type=Path, default=REPO / "site", help="built site folder (default: site/)")
    parser.add_argument(
        "--page", default="api/balancer.html", help="page path within the site (default: api/balancer.html)"
    )
    parser.add_argument(
        "--from-files",
        action="store_true",
        help="open the page from disk (file://), as a user who opens site/index.html does, instead of serving it",
    )
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=3400)
    parser.add_argument("--budget-ms", type=int, default=20000, help="virtual time for scripts and MathJax")
    parser.add_argument("--chromium", help="path of the Chromium/Chrome binary (default: found on PATH)")
    parser.add_argument("--check", action="store_true", help="also check that MathJax typeset the page's math")
    parser.add_argument("--timeout", type=float, default=180.0, help="wall-clock limit per Chromium call, seconds")
    args = parser.parse_args(argv)

    site = args.site.resolve()
    if not (site / "index.html").is_file():
        raise SystemExit(f"error: no built site at {site}; run scripts/build_docs.sh first")
    if not (site / "assets" / "mathjax" / "tex-mml-chtml.js").is_file():
        print(
            f"warning: {site}/assets/mathjax/ is missing: math will not render (build with scripts/build_docs.sh)",
            file=sys.stderr,
        )
    browser = find_chromium(args.chromium)

    handler = functools.partial(_QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    if args.from_files:
        url = (site / args.page.lstrip("/")).as_uri()
    else:
        url = f"http://127.0.0.1:{server.server_address[1]}/{args.page.lstrip('/')}"
    output = args.output.resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    status = 0
    try:
        with tempfile.TemporaryDirectory(prefix="hmdc-chromium-") as profile:
            args.profile = profile
            env = dict(os.environ, HOME=profile)  # keep Chromium's caches out of the real home
            shot = subprocess.run(
                chromium_command(browser, url, args, f"--screenshot={output}"),
                capture_output=True,
                text=True,
                timeout=args.timeout,
                env=env,
            )
            if shot.returncode != 0 or not output.is_file():
                print(shot.stdout, shot.stderr, sep="\n", file=sys.stderr)
                raise SystemExit(f"error: Chromium did not write {output} (exit code {shot.returncode})")
            print(f"screenshot of {url}: {output} ({args.width}x{args.height})")
            if args.check:
                dump = subprocess.run(
                    chromium_command(browser, url, args, "--dump-dom"),
                    capture_output=True,
                    text=True,
                    timeout=args.timeout,
                    env=env,
                )
                typeset, leftovers = check_dom(dump.stdout)
                print(f"MathJax typeset {typeset} formulas; {len(leftovers)} arithmatex spans left as raw TeX")
                for raw in leftovers[:5]:
                    print(f"  raw: {raw}")
                if dump.returncode != 0 or typeset == 0 or leftovers:
                    status = 1
    finally:
        server.shutdown()
        server.server_close()
    return status


if __name__ == "__main__":
    sys.exit(main())
