"""Fixtures shared by the integration and e2e tiers (servers, images, ports)."""
