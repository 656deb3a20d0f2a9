"""End-to-end tests against a real vLLM (see conftest.py)."""
