"""Midcall in the voice frameworks runtimes are built on."""
