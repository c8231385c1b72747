"""Prometheus metrics of the platform, served at ``GET /metrics``.

One registry per server (not the process-global default) so that tests can run several
servers in one process without "duplicated timeseries" errors.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1, 2, 5, 10, 30, 60)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.invocations = Counter(
            "allinone_invocations", "Invocations through the activator", ["function", "code"],
            registry=r)
        self.latency = Histogram(
            "allinone_request_latency_seconds", "Invocation latency through the activator",
            ["function"], buckets=LATENCY_BUCKETS, registry=r)
        self.cold_starts = Counter(
            "allinone_cold_starts", "Requests that arrived with no ready pod", ["function"],
            registry=r)
        self.cold_start_latency = Histogram(
            "allinone_cold_start_latency_seconds", "Latency of requests that arrived at zero",
            ["function"], buckets=LATENCY_BUCKETS, registry=r)
        self.pod_start = Histogram(
            "allinone_pod_start_seconds", "A pod's start, from the kubelet's start to its "
            "first healthy probe, by how it started: created (Docker create + start), "
            "standby (start of a created container) or resumed (unpause)",
            ["function", "kind"], buckets=LATENCY_BUCKETS, registry=r)
        self.desired_replicas = Gauge(
            "allinone_desired_replicas", "Replicas the autoscaler wants", ["function"], registry=r)
        self.ready_replicas = Gauge(
            "allinone_ready_replicas", "Pods ready to serve", ["function"], registry=r)
        self.queue_depth = Gauge(
            "allinone_queue_depth", "Requests held in the activator waiting for a pod or a slot",
            ["function"], registry=r)
        self.panic = Gauge(
            "allinone_panic_mode", "1 while the autoscaler is in panic mode", ["function"],
            registry=r)
        self.excess_burst_capacity = Gauge(
            "allinone_excess_burst_capacity",
            "Knative's excess burst capacity: ready x target - targetBurstCapacity - panic "
            "value (the activator is always in the path here; reported only)",
            ["function"], registry=r)
        self.builds = Counter(
            "allinone_builds", "Image builds by result", ["result"], registry=r)
        self.trigger_fires = Counter(
            "allinone_trigger_fires", "Events a trigger fired", ["trigger"], registry=r)
        self.trigger_failures = Counter(
            "allinone_trigger_failures", "Deliveries that failed after their retries",
            ["trigger"], registry=r)
        self.trigger_missed = Counter(
            "allinone_trigger_missed", "Scheduled times skipped (deadline, superseded)",
            ["trigger"], registry=r)
        self.trigger_latency = Histogram(
            "allinone_trigger_delivery_seconds", "From an event's firing to its delivery's end",
            ["trigger"], buckets=LATENCY_BUCKETS, registry=r)
        self.workflow_executions = Counter(
            "allinone_workflow_executions", "Finished workflow executions by status",
            ["workflow", "status"], registry=r)
        self.workflow_running = Gauge(
            "allinone_workflow_executions_running", "Workflow executions running now",
            ["workflow"], registry=r)
        self.workflow_duration = Histogram(
            "allinone_workflow_execution_duration_seconds",
            "Workflow execution duration, start to stop", ["workflow"],
            buckets=(*LATENCY_BUCKETS, 120, 300, 900, 3600), registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def forget(self, function: str) -> None:
        """Drop a deleted function's series so /metrics does not grow forever."""
        for metric in (self.latency, self.cold_starts, self.cold_start_latency,
                       self.desired_replicas, self.ready_replicas, self.queue_depth, self.panic,
                       self.excess_burst_capacity):
            try:
                metric.remove(function)
            except KeyError:
                pass

    def forget_trigger(self, trigger: str) -> None:
        for metric in (self.trigger_fires, self.trigger_failures, self.trigger_missed,
                       self.trigger_latency):
            try:
                metric.remove(trigger)
            except KeyError:
                pass
