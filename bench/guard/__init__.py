"""Guardrail benchmarks: overhead (bench.guard.overhead) and accuracy (bench.guard.accuracy)."""
