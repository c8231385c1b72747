"""allinone's load tests: locust scenarios, their runner and the benchmarks.

- ``scenarios.py`` (the scenarios as data) run by ``locustfile.py`` (the locust adapter:
  ``locust -f loadtests/locustfile.py --scenario scale_up --headless --host URL``); each
  deploys its fixture through :mod:`allinone.client`, samples the replicas every 0.5 s,
  checks its criteria and writes a JSON report; locust exits 1 when a criterion fails.
  :mod:`loadtests.report` is pure (statistics, criteria, the report's shape).
- ``python -m loadtests`` (:mod:`loadtests.__main__`, also ``allinone loadtest``): runs
  them as subprocesses against a server it starts or ``--server URL``, and draws one PNG
  per scenario (:mod:`loadtests.plot`).
- ``python -m loadtests.bench`` (:mod:`loadtests.bench`): the benchmarks behind
  DESIGN.md's targets, with :mod:`loadtests.loadgen`; figures in BENCHMARKS.md.

Importing this package imports nothing heavy: locust (which monkey-patches the process
with gevent) is only ever imported by the locustfiles, in their own processes.
"""
