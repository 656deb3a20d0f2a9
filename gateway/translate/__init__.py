"""Pure translation between the Responses API and vLLM's chat completions (no I/O)."""
