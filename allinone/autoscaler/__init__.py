"""The autoscaler: Knative's Pod Autoscaler (KPA) for allinone functions.

:mod:`allinone.autoscaler.kpa` holds the pure decision, ``decide(scaling, state,
observation, now)``, which turns the activator's concurrency samples into a desired pod
count (stable and panic windows, panic mode, scale-up/down rate limits, min/max/initial
scale, scale-to-zero grace) and returns the next state instead of mutating anything. A
thin loop, added separately, ticks every 2 s (and at once when a request arrives for a
function with no ready pod), feeds it observations and writes the ReplicaSet's replicas.
"""
