"""Guardrails: detectors over the text of requests and responses, protocol-neutral.

    content.py      `Slot`: one piece of text and where to write it back; `string_slots`
    detectors/      the built-in detectors (PII, secrets, injection, regex, words, Presidio)
    external.py     checks by another service (OpenAI-compatible moderation, a webhook)
    engine.py       `Guard`: one configured guard's detectors, scanning and masking text
    stream.py       `StreamMasker`: masking a stream as it flows, with a bounded hold-back

The `guardrails` policy (`crossway.policy.guardrails`) applies guards to what the protocol
backends hand it; nothing here knows LLM, MCP or A2A.
"""
