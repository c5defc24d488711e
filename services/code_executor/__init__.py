"""code-executor: runs python tools (a customer's own functions) in a sandbox per account."""
