"""The LLM response cache benchmark (`python -m bench.cache.run`)."""
