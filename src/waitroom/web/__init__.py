"""Plain HTTP semantics: the canonical request target, the client behind trusted proxies, and the
answers the proxy serves itself. No mitmproxy, no store, no decisions."""
