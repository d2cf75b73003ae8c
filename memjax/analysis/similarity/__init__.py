"""P1: representation similarity (CKA estimators, convergence, noisy-vs-clean, CKA matrices)."""
