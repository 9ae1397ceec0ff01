"""Package metadata of the root: which package owns each packed file (dpkg)."""
