"""Deployment tooling, not imported by the package: the vLLM environment builder and server (``vllm_server.py``)
and the compatibility module it installs into that environment (``vllm_compat.py``)."""
