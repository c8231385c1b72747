"""controller: the ReplicaSet controller (pure planning in :mod:`.planning`)."""
