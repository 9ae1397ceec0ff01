"""The plan and the staging tree: every path the image gets, decided before any write.

- ``plan``: the staging plan (directories, files, links), checked whole before any write;
- ``secrets``: secrets refused before anything is written (--exclude, --allow-secret);
- ``pycache``: every packed pyc made a checked-hash pyc of the source beside it;
- ``tree``: the plan written as ``rootfs/`` and as the reproducible tarball;
- ``digests``: what earlier packs hashed (files by identity, tars by recipe, facts of bytes);
- ``blobs``: compressed blobs, on every core, and the layer cache;
- ``output``: the output folder: a lock, files synced, written beside their names and renamed,
  and the records of what each output was made from.
"""
