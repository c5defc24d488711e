"""What runs inside the sandbox: the zygote, each call's process, and their frames.

Mounted read-only into every jail (nothing else of Midcall's is), and
imported there as the package ``sandbox``: stdlib and httpx only, relative
imports only. The code-executor imports ``frames`` from here too, so both
ends read and write frames with the same code.
"""
