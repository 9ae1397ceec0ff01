"""Package metadata: which package owns each packed file, and what scanners read of it.

- ``dpkg``: the root's dpkg database (owners, diversions, stanzas);
- ``pydist``: Python distributions (RECORD, dist-info) and venvs (pyvenv.cfg);
- ``pyapps``: what a venv or a Python program packs: its standard library, whole distributions;
- ``contents``: the packed files by owning package, with versions and licences;
- ``licences``: machine-readable copyright files as SPDX terms;
- ``metadata``: ``status.d``, ``md5sums`` and copyright files for the image;
- ``sbom``: SPDX 2.3 and CycloneDX 1.6 documents.
"""
