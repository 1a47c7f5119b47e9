"""Proof of work (rooms[].proof_of_work): what one ticket costs a script, a browser and the proxy.

    .venv/bin/python bench/proof_of_work.py [--quick] [--json PATH]

- the proxy: µs to hand out a challenge (its JSON and its page) and to check a proof (no store
  call), beside the wait answer every waiting visitor gets anyway;
- a script: the reference solver's hashes per second on one core (Python's hashlib, exactly what
  docs/security.md shows a JSON client doing), and native SHA-256's (`openssl speed`, when it is
  installed: what a C or Go solver gets), as time per ticket at difficulty 12, 16 and 20, and
  tickets per core-hour;
- a browser: the browser suite's last measurement (tests/artifacts/proof_of_work.json, written by
  `pytest tests/browser/test_proof_of_work.py`), in the same terms, and the ratio of a browser's
  time per ticket to a script's.

Expected times are 2^difficulty / rate: a single solve is geometric (the 95th percentile is three
times the mean). Nothing here is a pass or a fail, and no speed is asserted anywhere.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from waitroom.config.schema import parse_config
from waitroom.rooms.proof import KEY_PURPOSE, ProofOfWork, solve, visitor_binding
from waitroom.rooms.sessions import SessionCodec, keys_from_secret
from waitroom.web.answers import wait_answer
from waitroom.web.strings import Catalog
from waitroom.web.template import DEFAULT_TEMPLATE, Template

ROOT = Path(__file__).resolve().parents[1]
BROWSER = ROOT / "tests" / "artifacts" / "proof_of_work.json"
DIFFICULTIES = (12, 16, 20)
CORE_HOUR = 3600.0


def per_call_us(call: Any, seconds: float) -> float:
    """Mean µs of `call()`, repeated for about `seconds`."""
    calls, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        for _ in range(200):
            call()
        calls += 200
    return elapsed / calls * 1e6


def proxy_costs(seconds: float) -> dict[str, float]:
    room = parse_config(
        {"rooms": [{"name": "shop", "new_sessions": 1, "queue": "fifo", "proof_of_work": {"difficulty": 16}}]}
    ).rooms[0]
    proofs = ProofOfWork(
        SessionCodec(keys_from_secret("bench-secret-0123456789abcdef"), 600).purpose_keys(KEY_PURPOSE)
    )
    visitor = visitor_binding("203.0.113.7", "Mozilla/5.0 (X11; Linux x86_64) Chrome/131.0")
    now = time.time()
    challenge = proofs.challenge(room, visitor, now)
    proof = f"{challenge.token};{solve(challenge.token, challenge.difficulty)}"
    assert proofs.check(proof, room, visitor, now).session_id is not None
    wrong = f"{challenge.token};{(int(proof.rsplit(';', 1)[1]) + 1) % 2**32}"
    strings, template = Catalog.load().languages["en"], Template.load(DEFAULT_TEMPLATE)

    def answer(accept: str, with_challenge: bool) -> None:
        wait_answer(
            template=template,
            strings=strings,
            room="shop",
            title="Shop",
            status=503,
            retry_after=10,
            blocked_for=0,
            accept=accept,
            challenge=challenge if with_challenge else None,
        )

    return {
        "issue_challenge_us": per_call_us(lambda: proofs.challenge(room, visitor, now), seconds),
        "check_good_proof_us": per_call_us(lambda: proofs.check(proof, room, visitor, now), seconds),
        "check_bad_proof_us": per_call_us(lambda: proofs.check(wrong, room, visitor, now), seconds),
        "challenge_json_us": per_call_us(lambda: answer("application/json", True), seconds),
        "challenge_page_us": per_call_us(lambda: answer("text/html", True), seconds),
        "wait_page_cached_us": per_call_us(lambda: answer("text/html", False), seconds),
    }


def python_rate(seconds: float) -> float:
    """The reference solver's hashes per second: its own loop, 2^12 hashes a solve on average."""
    tried, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        tried += solve(f"w1.bench.0.12.AAAAAAAAAAAAAAAA.{tried}", 12) + 1
    return tried / (time.perf_counter() - started)


def native_rate(seconds: float) -> float | None:
    """SHA-256 of 36 bytes (one block, as the puzzle hashes) per second on one core, by OpenSSL."""
    openssl = shutil.which("openssl")
    if openssl is None:
        return None
    run = subprocess.run(
        [openssl, "speed", "-seconds", str(max(1, round(seconds))), "-bytes", "36", "sha256"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    found = re.search(r"^sha256\s+([\d.]+)k", run.stdout, re.M)
    return float(found.group(1)) * 1000 / 36 if found else None


def per_ticket(rate: float) -> dict[str, float]:
    """Expected ms per ticket at each difficulty, and tickets per core-hour at 16."""
    out = {f"ms_at_{d}": 2**d / rate * 1000 for d in DIFFICULTIES}
    out["tickets_per_core_hour_at_16"] = CORE_HOUR * rate / 2**16
    return out


def browser_figures() -> dict[str, Any] | None:
    if not BROWSER.is_file():
        return None
    found: dict[str, Any] = json.loads(BROWSER.read_text())
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="0.2 s per figure instead of 2 s (CI)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    options = parser.parse_args()
    seconds = 0.2 if options.quick else 2.0

    report: dict[str, Any] = {"proxy": proxy_costs(seconds)}
    solvers: dict[str, dict[str, float]] = {}
    python = python_rate(seconds)
    solvers["script, Python hashlib, 1 core"] = {"hashes_per_s": python, **per_ticket(python)}
    native = native_rate(seconds)
    if native is not None:
        solvers["script, native (openssl speed), 1 core"] = {"hashes_per_s": native, **per_ticket(native)}
    browser = browser_figures()
    if browser is not None:
        for name, row in browser.get("chromium_js", {}).items():
            rate = float(row["hashes_per_s"])
            solvers[f"Chromium page, CPU {name}"] = {"hashes_per_s": rate, **per_ticket(rate)}
        warm = float(browser.get("chromium_js_warm_hashes_per_s") or 0)
        if warm:
            solvers["Chromium page, CPU x1, code compiled"] = {"hashes_per_s": warm, **per_ticket(warm)}
        webcrypto = float(browser.get("chromium_webcrypto_hashes_per_s") or 0)
        if webcrypto:
            solvers["Chromium, Web Crypto (not used)"] = {"hashes_per_s": webcrypto, **per_ticket(webcrypto)}
    report["solvers"] = solvers
    if browser is not None and "Chromium page, CPU x1" in solvers:
        page = solvers["Chromium page, CPU x1"]["ms_at_16"]
        report["browser_ms_per_script_ms"] = {name: page / row["ms_at_16"] for name, row in solvers.items()}

    print("the proxy, µs per call (one core, this process):")
    for name, us in report["proxy"].items():
        print(f"  {name:24} {us:8.1f}")
    print("\n| solver | hashes/s | ms per ticket at 12 / 16 / 20 | tickets per core-hour at 16 |")
    print("| --- | --- | --- | --- |")
    for name, row in solvers.items():
        times = " / ".join(f"{row[f'ms_at_{d}']:,.1f}" for d in DIFFICULTIES)
        print(
            f"| {name} | {row['hashes_per_s']:,.0f} | {times} | {row['tickets_per_core_hour_at_16']:,.0f} |"
        )
    if browser is None:
        print(f"\n(no browser figures: run pytest tests/browser/test_proof_of_work.py to write {BROWSER})")
    elif "browser_ms_per_script_ms" in report:
        print("\na browser's time per ticket (Chromium, CPU x1) over each solver's:")
        for name, ratio in report["browser_ms_per_script_ms"].items():
            print(f"  {name:42} {ratio:8.1f}x")
    if options.json is not None:
        options.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
