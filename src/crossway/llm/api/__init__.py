"""Downstream APIs: the wire formats clients speak, converted to and from canonical chat.

Each module holds one API: how its request becomes a canonical OpenAI Chat Completions body,
how a canonical `chat.completion` (or a stream of `chat.completion.chunk` dicts) becomes its
answer, and how a `crossway.errors.GatewayError` is rendered in its error shape.

    anthropic_messages   POST /v1/messages     (Anthropic Messages)
    responses            POST /v1/responses    (OpenAI Responses)
"""
