"""services: the etcd and registry child processes that `allinone serve` supervises."""
