"""Re-record every flow fixture from its scenario: `make flows` (or `python -m tests.flows.record
[NAME ...]`).

For each tests/flows/NAME.yaml: start the full stack for real (mitmdump with the wait room and the
request counter, `-w NAME.mitm`; a private redis-server when the scenario says `store: redis`;
another upstream for `upstream:` actions), play the steps with one cookie jar per visitor, stop the
proxy, and write NAME.expected from what was recorded. Review a deliberate behaviour change as the
diff of the .expected files.
"""

from __future__ import annotations

import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import jwt

from tests.flows.scenario import SECRET, TIMES_HEADER, Scenario, expectation_lines, read_flows, scenarios
from tests.support import Mitmdump, RedisServer, Upstream
from waitroom.rooms.sessions import SessionCodec, keys_from_secret


def cookie_for(spec: str, ttl: float = 600.0) -> tuple[str, str]:
    """`forged:ROOM` → a cookie no key signed; `expired:ROOM` → a genuine cookie, long expired."""
    kind, _, room = spec.partition(":")
    if kind == "forged":
        return f"waitroom_{room}", "v1.Zm9yZ2Vk.bm90LWEtc2lnbmF0dXJl"
    if kind == "expired":
        codec = SessionCodec(keys_from_secret(SECRET), ttl)
        return f"waitroom_{room}", codec.issue(room, "s" * 22, time.time() - 10 * ttl)[1]
    raise ValueError(f"unknown cookie spec {spec!r}")


def bearer(claims: dict[str, Any], secret: str) -> str:
    claims = dict(claims)
    forge = claims.pop("forge", None)
    now = int(time.time())
    payload = {**claims, "iat": now, "exp": now + 600}
    if forge == "expired":
        payload.update(iat=now - 7200, exp=now - 3600)
    if forge == "none":
        return "Bearer " + jwt.encode(payload, None, algorithm="none")
    key = "not-the-secret-0123456789abcdef01" if forge == "signature" else secret
    return "Bearer " + jwt.encode(payload, key, algorithm="HS256")


def record(scenario: Scenario, workdir: Path) -> None:
    other = Upstream(name="other-backend")
    redis = RedisServer(workdir) if scenario.store == "redis" else None
    urls = {"{other}": other.url, "{redis}": redis.url if redis else ""}
    moments = {name: time.time() + offset for name, offset in scenario.times.items()}
    times = {name: datetime.fromtimestamp(at, UTC).isoformat() for name, at in moments.items()}
    config = workdir / f"{scenario.name}.yaml"
    config.write_text(scenario.config_text({**urls, **{f"{{{k}}}": v for k, v in times.items()}}))
    out = workdir / f"{scenario.name}.mitm"
    env = {"WAITROOM_SECRET": SECRET, **scenario.env}
    behind = other.url if scenario.upstream == "other" else "http://127.0.0.1:9"
    scripts = ["addons/waitroom.py"] + (["addons/counter.py"] if scenario.upstream == "counter" else [])
    proxy = Mitmdump(behind, workdir, config, env=env, extra=["-w", str(out)], scripts=scripts).wait_ready()
    visitors: dict[str, httpx.Client] = {}
    try:
        for step in scenario.steps:
            if "sleep" in step:  # the scenario's own passing of time: so long, or so long after a moment
                start = moments[step["after"]] if "after" in step else time.time()
                time.sleep(max(0.0, start + float(step["sleep"]) - time.time()))
                continue
            client = visitors.setdefault(step["as"], httpx.Client(base_url=proxy.url, timeout=10))
            headers = dict(step.get("headers") or {})
            if "jwt" in step:
                headers["Authorization"] = bearer(step["jwt"], scenario.env.get("WAITROOM_JWT_SECRET", ""))
            request = client.build_request(step.get("method", "GET"), step["path"], headers=headers)
            if "cookie" in step:
                name, value = cookie_for(step["cookie"])
                request.headers["Cookie"] = f"{name}={value}"
            client.send(request)
    finally:
        for client in visitors.values():
            client.close()
        proxy.stop()
        other.close()
        if redis:
            redis.stop()
    flows = read_flows(out)
    if len(flows) != sum(1 for s in scenario.steps if "sleep" not in s):
        raise SystemExit(f"{scenario.name}: recorded {len(flows)} flows for {len(scenario.steps)} steps")
    scenario.recording.write_bytes(out.read_bytes())
    header = [
        f"# {scenario.name}: {scenario.description.strip().splitlines()[0]}",
        "# make flows re-records this file",
    ]
    if times:
        header.append(TIMES_HEADER + " ".join(f"{name}={value}" for name, value in times.items()))
    scenario.expected.write_text("\n".join(header + expectation_lines(flows)) + "\n")
    print(f"recorded {scenario.name}: {len(flows)} flows")


def main(names: list[str]) -> int:
    chosen = [s for s in scenarios() if not names or s.name in names]
    if names and len(chosen) != len(names):
        print(f"unknown scenario among {names}; have {[s.name for s in scenarios()]}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="waitroom-flows-") as tmp:
        for scenario in chosen:
            record(scenario, Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
