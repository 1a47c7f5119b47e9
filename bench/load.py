"""`make load`: start the whole stack on this machine, drive it with Locust, print what happened.

    python bench/load.py [--users 50] [--spawn-rate 10] [--duration 20s] [--store memory|redis]
                         [--config bench/load.yaml]

Starts mitmdump with the wait room and the request counter in one process on a free loopback port
(with --store redis, a private redis-server on another free port first: never the machine's own),
runs Locust headless against it for the duration, prints Locust's table and percentiles and the
waitroom outcome summary, then stops everything. The exit status is Locust's (non-zero on failures).

Against a deployment, run Locust directly (see bench/locustfile.py).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

from harness import BIN, REPO, mitmdump, redis_server


def seconds(text: str) -> int:
    match = re.fullmatch(r"(\d+)(s|m)?", text)
    if not match:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (use e.g. 20s or 2m)")
    return int(match.group(1)) * (60 if match.group(2) == "m" else 1)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--spawn-rate", type=int, default=10)
    parser.add_argument("--duration", type=seconds, default=20)
    parser.add_argument("--store", choices=["memory", "redis"], default="memory")
    parser.add_argument("--config", type=Path, default=REPO / "bench" / "load.yaml")
    options = parser.parse_args()

    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="waitroom-load-")))
        config = options.config.read_text()
        env = dict(os.environ)
        if options.store == "redis":
            redis_port = stack.enter_context(redis_server(work))
            config = config.replace("url: memory://", f"url: redis://127.0.0.1:{redis_port}/0")
            env["WAITROOM_SECRET"] = env.get("WAITROOM_SECRET") or os.urandom(32).hex()
        (work / "waitroom.yaml").write_text(config)
        # The counter answers every request itself: the upstream (port 9) is never contacted.
        options_ = ["--set", "body_size_limit=1m", "--set", f"waitroom_config={work / 'waitroom.yaml'}"]
        port = stack.enter_context(
            mitmdump(work, 9, ["addons/waitroom.py", "addons/counter.py"], options_, env)
        )
        print(
            f"load: {options.users} visitors for {options.duration}s against waitroom + counter "
            f"on :{port} ({options.store} store)",
            flush=True,
        )
        locust = [
            str(BIN / "locust"),
            "-f",
            str(REPO / "bench" / "locustfile.py"),
            "--headless",
            "--host",
            f"http://127.0.0.1:{port}",
            "-u",
            str(options.users),
            "-r",
            str(options.spawn_rate),
            "-t",
            f"{options.duration}s",
            "--stop-timeout",
            "5",
            "--only-summary",
            "--loglevel",
            "WARNING",
        ]
        try:
            result = subprocess.run(locust, cwd=REPO, timeout=options.duration + 60)
        except subprocess.TimeoutExpired:
            print("load: locust did not finish in time", file=sys.stderr)
            return 1
        logs = "".join(log.read_text(errors="replace") for log in work.glob("mitmdump-*.log"))
        if "Traceback" in logs:
            print("load: the proxy logged a traceback:\n" + logs, file=sys.stderr)
            return 1
        return result.returncode


if __name__ == "__main__":
    sys.exit(main())
