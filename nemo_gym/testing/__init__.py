"""Test and benchmark fixtures that stand in for paid APIs: a scripted OpenAI-compatible server."""
