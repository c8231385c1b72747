"""Workflows: Amazon States Language state machines over allinone functions.

- :mod:`~allinone.workflows.validate`: definitions checked at create/update (pure);
- :mod:`~allinone.workflows.paths`, :mod:`~allinone.workflows.intrinsics`,
  :mod:`~allinone.workflows.choice`: JSONPath, intrinsic functions, Choice rules (pure);
- :mod:`~allinone.workflows.interpreter`: runs one execution over an Invoker, a Clock
  and a Sink (no I/O of its own);
- :mod:`~allinone.workflows.runner`: durable executions in the store, resume after a
  crash; ``WorkflowRunner.start_execution(workflow, input, wait=...)`` is the entry
  point for other components (the HTTP API, triggers);
- :mod:`~allinone.workflows.graph`: the Graphviz picture.
"""
