"""The A2A gateway: Agent2Agent agents proxied, bridged between protocol versions (v0.3 and
v1.0), discovered, routed by capability, with their tasks tracked (`crossway.a2a.backend`)."""
