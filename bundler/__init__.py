"""scratchpack: pack a dynamic Linux program and its loader closure into a FROM scratch image."""

__version__ = "0.1.0"
