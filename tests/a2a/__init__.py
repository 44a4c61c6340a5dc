"""A2A gateway tests: real a2a-sdk agents (tests/a2a/agents.py) behind Crossway."""
