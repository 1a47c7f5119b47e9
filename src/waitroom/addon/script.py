"""The wait room for `mitmdump -s`, from an installed package (a checkout has addons/waitroom.py):

mitmdump --mode reverse:http://UPSTREAM --set connection_strategy=lazy -s "$(waitroom --addon-path)"
"""

from waitroom.addon import WaitRoom

addons = [WaitRoom()]
