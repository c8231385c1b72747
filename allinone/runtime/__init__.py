"""runtime: how pods become containers (see :mod:`allinone.runtime.base`)."""
