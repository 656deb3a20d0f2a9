"""Responses Gateway: the OpenAI Responses API in front of self-hosted vLLM servers."""

__version__ = "0.1.0"
