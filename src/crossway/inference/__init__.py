"""Inference routing: spread requests over self-hosted model servers by queue, KV cache,
prefix cache and LoRA adapter (a provider of `type: inference_pool`).

    state       what is known about each endpoint (scraped metrics, Crossway's own counts)
    scrape      the metrics scraper (vLLM, SGLang, TensorRT-LLM / Triton, DCGM names)
    scheduler   filters, weighted scorers, a picker; the prefix-cache index; saturation
    pool        one pool: its endpoints (static or DNS), scraper, scheduler, failover order
    ext_proc    an external endpoint picker over Envoy's ext_proc gRPC protocol
"""
