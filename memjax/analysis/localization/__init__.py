"""P3: where memorization lives (gradient accounting, rewinding, retraining, critical neurons, example-tied dropout)."""
