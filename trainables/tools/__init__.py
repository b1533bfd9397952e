"""Maintenance scripts for ``trainables`` (not imported by trials)."""
