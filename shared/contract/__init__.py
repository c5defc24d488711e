"""The contract services and runtimes agree on: the typed events and work items, subject and
stream names, error codes, the canonical tool and its ``{{...}}`` templates, whose
conversation a call is in, the catalog's layout in its KV bucket, and the input limits every
parser holds documents to. Models and names only: nothing here does I/O."""
