"""The activator: the HTTP trigger every invocation goes through.

It picks a ready pod (:mod:`allinone.activator.balancer`: least in-flight, respecting
``containerConcurrency``), proxies the request through one pooled ``aiohttp`` session,
and holds requests in a bounded queue while a function scales from zero (503 at once
when that queue is full). Because every request passes here, it counts exact in-flight
concurrency per function (:mod:`allinone.activator.stats`), which is the autoscaler's
only metric; pods chosen for removal are drained before they go.
"""
