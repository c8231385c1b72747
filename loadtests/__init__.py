"""allinone's load tests: the locust scenarios (``python -m loadtests``, ``allinone
loadtest``) and the benchmarks (``python -m loadtests.bench``); docs/BENCHMARKS.md has
the figures. Importing the package imports nothing heavy: locust (gevent's monkey-patching)
is imported only by ``locustfile.py``, in its own process."""
