"""The Open Inference Protocol v2 over HTTP/REST, with Triton's HTTP extensions (a front door)."""
