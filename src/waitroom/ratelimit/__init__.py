"""Rate limits: rules that count requests per key and refuse, delay or reroute."""
