"""The LLM gateway: OpenAI- and Anthropic-compatible APIs in front of every major provider.

The canonical in-memory form is the OpenAI Chat Completions shape (request, response and
`chat.completion.chunk` dicts). Downstream APIs (`crossway.llm.api`) convert to and from it;
providers (`crossway.llm.providers`) convert it to and from their own wire format. When the
downstream API and the provider speak the same format, bytes are forwarded untouched.
"""
