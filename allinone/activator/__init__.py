"""The activator: the HTTP trigger every invocation goes through.

A pure throttler (:mod:`allinone.activator.throttler`: admission, a bounded queue, pod
choice by :mod:`allinone.activator.balancer`, draining) decides; the proxy
(:mod:`allinone.activator.activator`) sends the request over the pod's Unix socket and
holds requests while a function scales from zero (503 at once when the queue is full).
Because every request passes here, it counts exact in-flight concurrency per function
(:mod:`allinone.activator.stats`), which is the autoscaler's only metric; pods chosen
for removal are drained before they go.
"""
