"""lymphosort.evaluate: metrics with intervals, efficiency (params, MACs, latency), plots,
and the `lymphosort evaluate` command (`evaluate_run`)."""
