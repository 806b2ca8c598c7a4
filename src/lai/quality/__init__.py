"""Checks on instructor-written samples before anyone trains on them."""
