"""mitmproxy entry point for the request counter (the demo workload; the upstream is never contacted).

Alone:                 mitmdump --mode reverse:http://127.0.0.1:9 --set connection_strategy=lazy \
                           -s addons/counter.py
Behind the wait room:  ... -s addons/waitroom.py -s addons/counter.py
"""

import os
import sys

# mitmproxy puts this script's folder first on sys.path, where addons/waitroom.py would shadow the
# `waitroom` package; take the folder off before importing it.
_here = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _here]

from waitroom.counter import Counter  # noqa: E402

addons = [Counter()]
