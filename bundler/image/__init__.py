"""Images and registries: the plan as Dockerfiles, layers, OCI layouts, archives and pushes.

- ``dockerfile``: ``Dockerfile`` (FROM scratch) and ``Dockerfile.distroless``;
- ``spec``: what an image is made of (layers of plan entries, its config, its platform);
- ``layers``: which files go in which layer, so that images share them;
- ``build``: from a plan to an image spec;
- ``references``: image names: Docker's reference grammar, an OCI layout's ref.name;
- ``oci``: blobs, config, manifest and the OCI image layout (image-spec 1.1);
- ``archive``: the tarball ``docker load`` takes, on classic and containerd-backed engines;
- ``referrers``: artifacts (SBOMs) attached to an image of a layout;
- ``transport``: HTTP to a registry, with Docker's credentials and TLS trust;
- ``registry``: pushing an image or an image index to a registry, without a daemon;
- ``engine``: ``--build`` and ``--verify`` through the Docker Engine (client passed in).
"""
