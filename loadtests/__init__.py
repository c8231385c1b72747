"""allinone's load tests: locust scenarios, their runner and the benchmarks.

- ``cold_start.py``, ``scale_up.py``, ``scale_to_zero.py``, ``burst_at_zero.py``: plain
  locustfiles (``locust -f loadtests/scale_up.py --headless --host
  http://127.0.0.1:8080``), each deploying its fixture, sampling the function's
  replicas every 0.5 s, checking its criteria and writing a JSON report; locust exits 1
  when a criterion fails. Shared code: :mod:`loadtests.common` (locust side) and
  :mod:`loadtests.report` (pure: statistics, criteria, the report's shape).
- ``python -m loadtests`` (:mod:`loadtests.__main__`, also ``allinone loadtest``): runs
  them as subprocesses against a server it starts or ``--server URL``, and draws one PNG
  per scenario (:mod:`loadtests.plot`).
- ``python -m loadtests.bench`` (:mod:`loadtests.bench`): the benchmarks behind
  DESIGN.md's targets; the figures are recorded in BENCHMARKS.md.

Importing this package imports nothing heavy: locust (which monkey-patches the process
with gevent) is only ever imported by the locustfiles, in their own processes.
"""
