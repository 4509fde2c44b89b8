#!/usr/bin/env python
"""Open report pages (``index.html``) in headless Chromium, screenshot each and check the picture is not blank.

    python scripts/screenshot_reports.py                          # every index.html below reports/
    python scripts/screenshot_reports.py reports/latency/cpu/index.html --out /tmp/shots
    python scripts/screenshot_reports.py reports --window-size 1280,6000

Needs a Chromium binary (``apt-get install -y chromium`` on Debian: /usr/bin/chromium; or ``--chromium PATH`` /
``$CHROMIUM``). Network access is switched off for the browser (every host name fails to resolve), so a page that
needed anything outside its own file would show it. For each page the script checks that Chromium exits 0, that the
DOM it loaded has the page's ``<h1>`` (not an error page), and that the PNG has at least ``--min-ink`` of its pixels
not white. Exit status 0 when every page passes, 1 otherwise, 2 without Chromium. Screenshots go to ``--out``
(default: a temporary folder, printed).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium(explicit: str | None = None) -> str | None:
    for name in ([explicit] if explicit else []) + ([os.environ["CHROMIUM"]] if os.environ.get("CHROMIUM") else []) \
            + list(CANDIDATES):
        path = shutil.which(name) or (name if os.path.isfile(name) and os.access(name, os.X_OK) else None)
        if path:
            return path
    return None


def _flags(profile: str, width: int, height: int) -> list[str]:
    return ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
            "--no-first-run", "--no-default-browser-check", "--disable-extensions", "--mute-audio",
            "--host-resolver-rules=MAP * ~NOTFOUND", f"--user-data-dir={profile}",
            f"--window-size={width},{height}"]


def screenshot(page: Path, png: Path, chromium: str, width: int = 1280, height: int = 2000,
               timeout: float = 120.0) -> str:
    """Screenshot ``page`` into ``png``; returns the DOM Chromium loaded (``--dump-dom``)."""
    url = Path(page).resolve().as_uri()
    png.parent.mkdir(parents=True, exist_ok=True)
    if png.exists():
        png.unlink()
    with tempfile.TemporaryDirectory(prefix="ablate-chromium-") as profile:
        shot = subprocess.run([chromium, *_flags(profile, width, height), f"--screenshot={png.resolve()}", url],
                              capture_output=True, text=True, timeout=timeout)
        if shot.returncode != 0:
            raise RuntimeError(f"chromium exited {shot.returncode}: {shot.stderr.strip()[-600:]}")
    with tempfile.TemporaryDirectory(prefix="ablate-chromium-") as profile:
        dom = subprocess.run([chromium, *_flags(profile, width, height), "--dump-dom", url],
                             capture_output=True, text=True, timeout=timeout)
    return dom.stdout


# ---------------------------------------------------------------------------------------------------------------
# PNG pixels: Pillow when installed, else a small decoder for the 8-bit RGB(A) PNGs Chromium writes


def _read_png_stdlib(path: Path) -> tuple[int, int, int, bytes]:
    data = path.read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path}: not a PNG")
    pos, idat, width = 8, [], 0
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        kind, chunk = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        pos += 12 + n
        if kind == b"IHDR":
            width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", chunk)
            if depth != 8 or color not in (0, 2, 6) or interlace:
                raise ValueError(f"{path}: PNG layout not handled (depth {depth}, colour {color})")
            channels = {0: 1, 2: 3, 6: 4}[color]
        elif kind == b"IDAT":
            idat.append(chunk)
        elif kind == b"IEND":
            break
    raw = zlib.decompress(b"".join(idat))
    stride = width * channels
    out = bytearray(height * stride)
    prev = bytearray(stride)
    for y in range(height):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        if f == 1:
            for i in range(channels, stride):
                line[i] = (line[i] + line[i - channels]) & 0xFF
        elif f == 2:
            for i in range(stride):
                line[i] = (line[i] + prev[i]) & 0xFF
        elif f == 3:
            for i in range(stride):
                left = line[i - channels] if i >= channels else 0
                line[i] = (line[i] + ((left + prev[i]) >> 1)) & 0xFF
        elif f == 4:
            for i in range(stride):
                a = line[i - channels] if i >= channels else 0
                b = prev[i]
                c = prev[i - channels] if i >= channels else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        out[y * stride:(y + 1) * stride] = line
        prev = line
    return width, height, channels, bytes(out)


def ink(png: Path, white: int = 245) -> tuple[float, int, tuple[int, int]]:
    """(fraction of pixels with a channel below ``white``, distinct colours seen (capped), (width, height))."""
    try:
        from PIL import Image

        with Image.open(png) as im:
            rgb = im.convert("RGB")
            size = rgb.size
            data, channels = rgb.tobytes(), 3
    except ImportError:
        w, h, channels, data = _read_png_stdlib(png)
        size = (w, h)
        if channels == 1:
            data, channels = bytes(b for v in data for b in (v, v, v)), 3
    n = size[0] * size[1]
    dark, colours = 0, set()
    for i in range(0, n * channels, channels):
        px = data[i:i + 3]
        if min(px) < white:
            dark += 1
            if len(colours) < 64:
                colours.add(bytes(px))
    return (dark / n if n else 0.0), len(colours), size


def check(page: Path, out: Path, chromium: str, width: int, height: int, min_ink: float) -> tuple[bool, str]:
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", "/".join(page.resolve().parent.parts[-3:])).strip("_") or "page"
    png = out / f"{name}.png"
    try:
        dom = screenshot(page, png, chromium, width, height)
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        return False, f"FAIL {page}: {e}"
    if not png.exists() or png.stat().st_size == 0:
        return False, f"FAIL {page}: no screenshot written"
    frac, colours, size = ink(png)
    problems = []
    if size != (width, height):
        problems.append(f"size {size[0]}x{size[1]}, asked {width}x{height}")
    if frac < min_ink or colours < 2:
        problems.append(f"blank: {frac:.2%} non-white pixels, {colours} colour(s)")
    if "<h1" not in dom:
        problems.append("the loaded DOM has no <h1> (an error page?)")
    status = "ok  " if not problems else "FAIL"
    return not problems, f"{status} {page}: {png} ({size[0]}x{size[1]}, {frac:.1%} ink){'; ' if problems else ''}" \
                         f"{'; '.join(problems)}"


def pages(args: list[str]) -> list[Path]:
    out: list[Path] = []
    for a in args or ["reports"]:
        p = Path(a)
        out += sorted(p.rglob("index.html")) if p.is_dir() else [p]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("paths", nargs="*", help="index.html files or folders (every index.html below); "
                                             "default: reports")
    ap.add_argument("--out", help="folder for the PNGs (default: a new temporary folder)")
    ap.add_argument("--chromium", help="the browser binary (default: $CHROMIUM, else chromium on PATH)")
    ap.add_argument("--window-size", default="1280,2000", help="WIDTH,HEIGHT of the screenshot (default 1280,2000)")
    ap.add_argument("--min-ink", type=float, default=0.01,
                    help="smallest fraction of non-white pixels of a page that is not blank (default 0.01)")
    a = ap.parse_args(argv)
    chromium = find_chromium(a.chromium)
    if chromium is None:
        sys.stderr.write("no chromium found: apt-get install -y chromium, or --chromium PATH\n")
        return 2
    width, height = (int(x) for x in a.window_size.split(","))
    out = Path(a.out) if a.out else Path(tempfile.mkdtemp(prefix="ablate-shots-"))
    todo = pages(a.paths)
    if not todo:
        sys.stderr.write("no index.html found\n")
        return 1
    ok = True
    for page in todo:
        good, line = check(page, out, chromium, width, height, a.min_ink)
        ok &= good
        print(line, flush=True)
    print(f"{len(todo)} page(s), screenshots in {out}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
