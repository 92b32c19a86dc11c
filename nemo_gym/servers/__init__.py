"""Base classes for the three server kinds (resources, model, agent) and the head server."""
