"""Result injector: maps an HTTP outcome to the conversation's result, and meters it."""
