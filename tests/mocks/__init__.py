"""Mock upstream LLM providers for tests: faithful to each provider's documented wire format."""
