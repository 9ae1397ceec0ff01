"""The plan and the staging tree: every path the image gets, decided before any write.

- ``plan``: the staging plan (directories, files, links), checked whole before any write;
- ``tree``: the plan written as ``rootfs/`` and as the reproducible tarball;
- ``output``: the output folder: a lock, files written beside their names and renamed.
"""
