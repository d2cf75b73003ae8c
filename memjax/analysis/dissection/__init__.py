"""P4: memorization dissection (input gradients, activation maximization, function dissimilarity)."""
