"""Launching vLLM backends and building tiny local models for tests."""
