"""Images without a daemon: the plan as layers, an OCI image layout, a docker-archive.

- ``spec``: what an image is made of (layers of plan entries, its config, its platform);
- ``layers``: which files go in which layer, so that images share them;
- ``oci``: blobs, config, manifest and the OCI image layout (image-spec 1.1);
- ``archive``: the tarball ``docker load`` takes, on classic and containerd-backed engines.
"""
