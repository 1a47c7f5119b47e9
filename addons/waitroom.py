"""mitmproxy entry point for the wait room.

    mitmdump --mode reverse:http://UPSTREAM --set connection_strategy=lazy \
        -s addons/waitroom.py --set waitroom_config=config/waitroom.yaml
"""

import os
import sys
from pathlib import Path

# mitmproxy puts this script's folder first on sys.path, where this very file would shadow the
# `waitroom` package; take the folder off before importing it.
_here = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _here]

from waitroom.addon import WaitRoom  # noqa: E402

addons = [WaitRoom(default_config=Path(_here).parent / "config" / "waitroom.yaml")]
