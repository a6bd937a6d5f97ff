"""Hand-written kernels that XLA lacks on some backend, each with an XLA fallback."""
