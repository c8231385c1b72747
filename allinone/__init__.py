"""allinone: a single-node serverless platform and test bed.

One Sanic process embeds the apiserver, builder, ReplicaSet controller, autoscaler and
activator (wired together in :mod:`allinone.app`). etcd is the one source of truth for
objects; see ``DESIGN.md`` in the shared folder for the whole picture.
"""

__version__ = "0.1.0"
