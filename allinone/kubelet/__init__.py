"""The pod-lifecycle component (the kubelet's part): see :mod:`allinone.kubelet.kubelet`."""
