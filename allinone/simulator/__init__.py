"""The simulator: replay invocation traces through allinone's own control plane in virtual time.

- :mod:`~allinone.simulator.trace`: the trace formats (CSV rows, Azure per-minute counts).
- :mod:`~allinone.simulator.generate`: seeded synthetic traces (steady, diurnal, ...).
- :mod:`~allinone.simulator.model`: the runtime model (pod start, unpause, overheads).
- :mod:`~allinone.simulator.engine`: the discrete-event driver over the production
  decision code (KPA ``decide``, balancer ``pick``, replica ``plan``).
- :mod:`~allinone.simulator.report`: summary.json, charts, the comparison table.
"""
