"""Midcall for voice runtimes: the Python SDK (``midcall.client``)."""
