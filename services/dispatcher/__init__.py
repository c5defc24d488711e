"""Dispatcher: accepts tool calls, acks them with a pending event, queues execution."""
