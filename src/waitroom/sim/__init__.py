"""`waitroom simulate`: the product's own deciders, line and store on a virtual clock.

A library as well as a command: `run.simulate(run.Options(...))` runs a whole simulation, and
`engine.Engine` runs visitors (from `visits`, with `visitors.Behaviour`) on any store; the crowd
benchmark drives it on a real Redis. Layering: below `addon` (it never imports mitmproxy's proxy,
only its flow-file reader), above `rooms`, `ratelimit` and `build`.
"""
