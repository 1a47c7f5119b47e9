"""The request counter: the demo service and load-test target (docs/counter.md).

`addon` is the mitmproxy addon (`waitroom.counter.Counter`, loaded by `-s addons/counter.py`),
`http` its paths, keys and answers without mitmproxy, `counts` its store.
"""

from waitroom.counter.addon import Counter

__all__ = ["Counter"]
