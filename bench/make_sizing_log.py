"""The sizing page's example access log: synthetic, and says so.

    python bench/make_sizing_log.py [--out docs/examples/sizing/access.log.gz]

An nginx `combined` log of a shop's sale morning recorded before it had a wait room: the sale
opens at 09:00, 3,000 visitors come in the first ten minutes (most at once), then about 25 a
minute. Each visitor looks at a few pages over a few minutes (/shop, items, the cart, the
checkout), its browser loads /static/app.js once, and some pages ask /api/stock. Everyone got a
200: there was nothing in front of the shop. Addresses are from 198.18.0.0/15 (the benchmarking
range). The same seed gives the same file, byte for byte.
"""

from __future__ import annotations

import argparse
import gzip
import math
import random
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "docs" / "examples" / "sizing" / "access.log.gz"
OPENS = datetime(2026, 11, 27, 9, 0, tzinfo=timezone(timedelta(hours=1)))
BROWSERS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko)",
    "Mozilla/5.0 (X11; Linux x86_64; rv:132.0) Gecko/20100101 Firefox/132.0",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Mobile Safari/537.36",
)


def arrivals(rng: random.Random) -> list[float]:
    """Seconds after 08:55: a few early visitors, 3,000 in the first ten minutes of the sale (front:
    exponential, mean 2.5 minutes), then about 25 a minute until 10:00."""
    early = [rng.uniform(0, 300) for _ in range(120)]
    rush = [300 - 150 * math.log1p(-rng.random() * (1 - math.exp(-4))) for _ in range(3000)]
    after = [rng.uniform(900, 3900) for _ in range(1250)]
    return sorted(early + rush + after)


def visit(rng: random.Random, index: int, at: float) -> list[tuple[float, str, str, int]]:
    """(seconds, method, path, bytes) of one visit."""
    pages = 1 + int(math.log(1 - rng.random()) / math.log(1 - 1 / 4))  # geometric, mean 4
    stay = rng.expovariate(1 / 360) if pages > 1 else 0.0
    moments = sorted([0.0] + [rng.uniform(0, stay) for _ in range(pages - 1)])
    out = []
    for n, moment in enumerate(moments):
        t = at + moment
        if n == 0:
            path = "/shop"
        elif n == len(moments) - 1 and rng.random() < 0.4:
            path = "/shop/checkout"
        elif rng.random() < 0.3:
            path = "/shop/cart"
        else:
            path = f"/shop/item/{rng.randint(1, 60)}"
        out.append((t, "POST" if path == "/shop/checkout" else "GET", path, rng.randint(8_000, 30_000)))
        if n == 0:
            out.append((t + 0.2, "GET", "/static/app.js", 48_211))
        if path.startswith("/shop/item") and rng.random() < 0.5:
            out.append((t + 0.4, "GET", f"/api/stock?item={rng.randint(1, 60)}", 64))
    return out


def lines(seed: int = 2026) -> list[str]:
    rng = random.Random(seed)
    start = OPENS - timedelta(minutes=5)
    rows = []
    for index, at in enumerate(arrivals(rng)):
        address = f"198.{18 + (index >> 16)}.{index >> 8 & 255}.{index & 255}"
        agent = f"{BROWSERS[index % len(BROWSERS)]} (synthetic {index})"
        for t, method, path, size in visit(rng, index, at):
            moment = start + timedelta(seconds=t)
            rows.append(
                (
                    moment,
                    f'{address} - - [{moment.strftime("%d/%b/%Y:%H:%M:%S %z")}] "{method} {path} '
                    f'HTTP/1.1" {303 if method == "POST" else 200} {size} "-" "{agent}"',
                )
            )
    rows.sort(key=lambda row: row[0])
    return [text for _, text in rows]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    text = ("\n".join(lines()) + "\n").encode()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # mtime 0: the same bytes on every run.
    with open(args.out, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as f:
        f.write(text)
    count = text.count(b"\n")
    print(
        f"wrote {args.out}: {count:,} lines (synthetic), {args.out.stat().st_size:,} bytes", file=sys.stderr
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
