"""Tables, figures and metrics.json built from the evaluate stage's per-run metrics."""
