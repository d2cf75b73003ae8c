"""Training R replicas together: state, step, strategies, the epoch loop."""
