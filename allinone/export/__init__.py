"""Export functions to other platforms: :mod:`.knative` (pure) and :mod:`.registry` (I/O)."""
