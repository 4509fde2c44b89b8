"""Statistics and verdicts: intervals over seeds and documents, equivalence tests, and the claims engine."""
