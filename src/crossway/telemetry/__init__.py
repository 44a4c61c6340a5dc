"""Metrics, traces and access logs."""
