"""Pushing an image of an OCI layout to a registry, no daemon (bundler/image/registry.py).

The registries are Debian's ``docker-registry`` on 127.0.0.1 (tests/registrykit.py): with TLS
(a self-signed certificate whose CA is put in a certs.d folder of the test's own) and htpasswd
logins read from a DOCKER_CONFIG of the test's own; with Bearer tokens from a token server of
our own; and on plain HTTP. What was pushed is read back by skopeo, and counted in the
registry's storage folder: a blob the repository has is not sent again, a blob another
repository of the registry has is mounted, not uploaded. With a Docker Engine, ``docker pull``
takes a pushed image and it runs. Every failure must be one line naming the registry.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import shutil
import subprocess
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from registrykit import Registry, running_registry, self_signed
from test_oci import (
    EPOCH,
    dir_entry,
    file_entry,
    kit,  # noqa: F401
    sample_image,
    sample_layers,
    source,
    static_hello,  # noqa: F401
)

from bundler.errors import ScratchpackError, UsageError
from bundler.image import oci
from bundler.image.dockerfile import ImageConfig
from bundler.image.oci import write_oci_layout
from bundler.image.referrers import SPDX_JSON, attach_artifact
from bundler.image.registry import (
    CredentialStore,
    PushResult,
    Reference,
    RegistryError,
    TlsSettings,
    parse_reference,
    push,
)
from bundler.image.spec import ImageSpec, LayerSpec, Platform
from bundler.image.transport import Credentials
from bundler.staging.plan import EXTRA, FILE, LINK, PROGRAM, SYMLINK, Entry

USERS = {"alice": "s3cret-pw"}


# ----- references and credentials (no registry) ----------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("host:5000/team/redis:7", ("host:5000", "team/redis", "7")),
        ("registry.example/x", ("registry.example", "x", "latest")),
        ("127.0.0.1:5000/app", ("127.0.0.1:5000", "app", "latest")),
        ("localhost/a/b/c:v1.2", ("localhost", "a/b/c", "v1.2")),
        ("redis", ("registry-1.docker.io", "library/redis", "latest")),
        ("redis:7", ("registry-1.docker.io", "library/redis", "7")),
        ("bitnami/redis:7", ("registry-1.docker.io", "bitnami/redis", "7")),
        ("docker.io/redis", ("registry-1.docker.io", "library/redis", "latest")),
        ("index.docker.io/user/app:1", ("registry-1.docker.io", "user/app", "1")),
    ],
)
def test_parse_reference(given: str, expected: tuple[str, str, str]) -> None:
    assert parse_reference(given) == Reference(*expected)


def test_docker_hub_credentials_are_under_its_v1_key() -> None:
    assert parse_reference("redis").auth_key == "https://index.docker.io/v1/"
    assert parse_reference("host:5000/x").auth_key == "host:5000"
    assert str(parse_reference("host:5000/x")) == "host:5000/x:latest"


@pytest.mark.parametrize("given", ["x@sha256:" + "0" * 64, "Redis", "x:", "a b", ""])
def test_parse_reference_refuses(given: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_reference(given)
    assert "\n" not in str(caught.value)


def docker_config(folder: Path, auths: dict[str, Any], **more: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"auths": auths, **more}))
    return folder


def auth(user: str, password: str) -> dict[str, str]:
    return {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_credentials_from_docker_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = docker_config(
        tmp_path / "docker",
        {
            "https://index.docker.io/v1/": auth("hub", "h:p"),  # a colon in the password
            "host:5000": auth("u", "p"),
            "https://other.example/v2/": {"username": "o", "password": "q"},
            "empty.example": {},
        },
    )
    monkeypatch.setenv("DOCKER_CONFIG", str(folder))
    store = CredentialStore.from_docker_config()
    assert store.lookup(parse_reference("redis").auth_key) == Credentials("hub", "h:p")
    assert store.lookup("host:5000") == Credentials("u", "p")
    assert store.lookup("other.example") == Credentials("o", "q")
    assert store.lookup("empty.example") is None
    assert store.lookup("host:5001") is None
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "none"))
    assert CredentialStore.from_docker_config().lookup("host:5000") is None


def test_a_credential_helper_not_on_path_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    folder = docker_config(
        tmp_path, {"ghcr.io": {}}, credsStore="desktop", credHelpers={"gcr.io": "gcloud"}
    )
    store = CredentialStore.from_docker_config(folder / "config.json")
    for key, helper in (("ghcr.io", "desktop"), ("gcr.io", "gcloud")):
        with pytest.raises(RegistryError) as caught:
            store.lookup(key)
        message = str(caught.value)
        assert f"docker-credential-{helper}" in message and "\n" not in message
        assert "is not on PATH" in message


def test_a_broken_docker_config_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(RegistryError, match="cannot read the Docker config"):
        CredentialStore.from_docker_config(tmp_path / "config.json")
    docker_config(tmp_path, {"h": {"auth": "%%%"}})
    with pytest.raises(RegistryError, match="not base64"):
        CredentialStore.from_docker_config(tmp_path / "config.json")


def test_an_unknown_name_lists_the_layout_names(tmp_path: Path) -> None:
    write_oci_layout(tmp_path / "oci", sample_image(tmp_path), "app:1")
    with pytest.raises(oci.LayoutError, match=r"no image named 'nope' \(the layout has: app:1\)"):
        push(tmp_path / "oci", "nope", "127.0.0.1:1/x", credentials=CredentialStore())


# ----- registries -------------------------------------------------------------------------------


def needs(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"needs {name} (make deps installs it)")
    return found


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where blobs were seen is remembered under XDG_CACHE_HOME: the test's own."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.fixture
def secure(tmp_path: Path) -> Iterator[Registry]:
    needs("docker-registry")
    with running_registry(tmp_path / "registry", tls=True, users=USERS) as registry:
        yield registry


def trust(tmp_path: Path, registry: Registry) -> TlsSettings:
    """A certs.d root in tmp_path holding the registry's CA, as /etc/docker/certs.d would."""
    assert registry.ca is not None
    folder = tmp_path / "certs.d" / registry.host
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(registry.ca, folder / "ca.crt")
    return TlsSettings(certs_d=tmp_path / "certs.d")


def login(tmp_path: Path, registry: Registry, password: str = USERS["alice"]) -> CredentialStore:
    folder = docker_config(tmp_path / "docker", {registry.host: auth("alice", password)})
    return CredentialStore.from_docker_config(folder / "config.json")


def skopeo(*args: str) -> str:
    done = subprocess.run([needs("skopeo"), *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"skopeo {' '.join(args)}: {done.stderr}"
    return done.stdout


def changed_image(tmp: Path) -> ImageSpec:
    """The sample image with its second layer changed: the first layer is shared."""
    first, _second = sample_layers(tmp)
    data = b"a different second layer\n"
    second = LayerSpec(
        (dir_entry("/etc"), Entry("/etc/motd", FILE, 0o644, EXTRA, size=len(data), data=data)),
        "generated files",
    )
    return ImageSpec((first, second), ImageConfig(entrypoint=("/usr/bin/prog",)),
                     Platform("arm64", variant="v8"), EPOCH)  # fmt: skip


def one_line(exc: pytest.ExceptionInfo[ScratchpackError], *words: str) -> str:
    message = str(exc.value)
    assert "\n" not in message and "Traceback" not in message, message
    assert exc.value.exit_code != 0
    for word in words:
        assert word in message, message
    return message


@pytest.mark.slow
def test_push_to_tls_and_login_then_only_new_blobs_then_mounts(
    secure: Registry, tmp_path: Path, capsys: Any
) -> None:
    layout = tmp_path / "oci"
    first = write_oci_layout(layout, sample_image(tmp_path), "app:1")
    second = write_oci_layout(layout, changed_image(tmp_path), "app:2")
    tls, creds = trust(tmp_path, secure), login(tmp_path, secure)
    lines: list[str] = []

    def to(ref: str, name: str) -> PushResult:
        return push(layout, name, f"{secure.host}/{ref}", credentials=creds, tls=tls,
                    progress=lines.append)  # fmt: skip

    one = to("team/app:1", "app:1")
    assert one.digest == first
    assert (one.uploaded, one.mounted, one.present, one.manifests) == (3, 0, 0, 1)
    blob_sizes = sum(p.stat().st_size for p in oci.read_image(layout, "app:1").layers)
    assert one.bytes_uploaded > blob_sizes  # the layers and the config
    assert secure.blob_bytes()[0] == 4  # config, two layers, the manifest
    inspected = json.loads(
        skopeo("inspect", "--tls-verify=false", "--creds", "alice:s3cret-pw",
               f"docker://{secure.host}/team/app:1")
    )  # fmt: skip
    assert inspected["Digest"] == first
    assert inspected["Architecture"] == "arm64"
    assert any("uploading" in line for line in lines)

    two = to("team/app:2", "app:2")
    assert two.digest == second
    # The shared first layer is found; the new layer and the new config go up.
    assert (two.uploaded, two.mounted, two.present) == (2, 0, 1)
    assert secure.blob_bytes()[0] == 4 + 3  # two blobs and a manifest more

    stored = secure.blob_bytes()
    three = to("elsewhere/app:1", "app:1")
    assert (three.uploaded, three.mounted, three.present) == (0, 3, 0)
    assert three.bytes_uploaded == 0
    assert secure.blob_bytes() == stored  # mounted: no byte stored twice
    raw = skopeo("inspect", "--raw", "--tls-verify=false", "--creds", "alice:s3cret-pw",
                 f"docker://{secure.host}/elsewhere/app:1")  # fmt: skip
    assert "sha256:" + hashlib.sha256(raw.encode()).hexdigest() == first
    with capsys.disabled():
        print(
            f"\npush: first {one.uploaded} blobs uploaded ({one.bytes_uploaded} B); second "
            f"{two.uploaded} uploaded, {two.present} present; other repository "
            f"{three.mounted} mounted, 0 uploaded"
        )


@pytest.mark.slow
def test_a_wrong_password_is_one_line(secure: Registry, tmp_path: Path) -> None:
    write_oci_layout(tmp_path / "oci", sample_image(tmp_path), "app")
    with pytest.raises(ScratchpackError) as caught:
        push(tmp_path / "oci", "app", f"{secure.host}/app", tls=trust(tmp_path, secure),
             credentials=login(tmp_path, secure, "wrong"))  # fmt: skip
    one_line(caught, secure.host, "login refused", "alice")
    assert secure.blob_bytes()[0] == 0


@pytest.mark.slow
def test_no_credentials_is_one_line(secure: Registry, tmp_path: Path) -> None:
    write_oci_layout(tmp_path / "oci", sample_image(tmp_path), "app")
    with pytest.raises(ScratchpackError) as caught:
        push(tmp_path / "oci", "app", f"{secure.host}/app", tls=trust(tmp_path, secure),
             credentials=CredentialStore())  # fmt: skip
    one_line(caught, secure.host, "asks for credentials")


@pytest.mark.slow
def test_an_untrusted_certificate_is_one_line(secure: Registry, tmp_path: Path) -> None:
    write_oci_layout(tmp_path / "oci", sample_image(tmp_path), "app")
    other_ca, _key = self_signed(tmp_path)  # a CA, but not the registry's
    (tmp_path / "certs.d" / secure.host).mkdir(parents=True)
    shutil.copy(other_ca, tmp_path / "certs.d" / secure.host / "ca.crt")
    with pytest.raises(ScratchpackError) as caught:
        push(tmp_path / "oci", "app", f"{secure.host}/app", credentials=login(tmp_path, secure),
             tls=TlsSettings(certs_d=tmp_path / "certs.d"))  # fmt: skip
    one_line(caught, secure.host, "TLS certificate not trusted", "ca.crt")
    # An insecure registry: TLS with its certificate unchecked, as Docker does.
    done = push(tmp_path / "oci", "app", f"{secure.host}/app", credentials=login(tmp_path, secure),
                tls=TlsSettings(certs_d=tmp_path / "certs.d"), insecure=True)  # fmt: skip
    assert done.uploaded == 3


@pytest.mark.slow
def test_a_refused_upload_gives_the_registrys_reason(plain: Registry, tmp_path: Path) -> None:
    layout = tmp_path / "oci"
    write_oci_layout(layout, sample_image(tmp_path), "app")
    layer = oci.read_image(layout, "app").layers[0]
    data = bytearray(layer.read_bytes())
    data[-1] ^= 0xFF  # the same size, another digest
    layer.write_bytes(bytes(data))
    with pytest.raises(ScratchpackError) as caught:
        push(layout, "app", f"{plain.host}/app", credentials=CredentialStore(), insecure=True)
    one_line(caught, plain.host, "upload of blob", "HTTP 400 DIGEST_INVALID")


def test_an_unreachable_registry_is_one_line(tmp_path: Path) -> None:
    from registrykit import free_port

    write_oci_layout(tmp_path / "oci", sample_image(tmp_path), "app")
    host = f"127.0.0.1:{free_port()}"
    for insecure in (False, True):
        with pytest.raises(ScratchpackError) as caught:
            push(tmp_path / "oci", "app", f"{host}/app", credentials=CredentialStore(),
                 insecure=insecure)  # fmt: skip
        one_line(caught, host, "connection refused")


@pytest.fixture
def plain(tmp_path: Path) -> Iterator[Registry]:
    needs("docker-registry")
    with running_registry(tmp_path / "plain") as registry:
        yield registry


@pytest.mark.slow
def test_plain_http_only_for_an_insecure_registry(plain: Registry, tmp_path: Path) -> None:
    layout = tmp_path / "oci"
    digest = write_oci_layout(layout, sample_image(tmp_path), "app")
    with pytest.raises(ScratchpackError) as caught:
        push(layout, "app", f"{plain.host}/app", credentials=CredentialStore())
    one_line(caught, plain.host, "plain HTTP")
    assert plain.blob_bytes()[0] == 0
    done = push(layout, "app", f"{plain.host}/app", credentials=CredentialStore(), insecure=True)
    assert done.digest == digest and done.uploaded == 3
    raw = skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{plain.host}/app")
    assert "sha256:" + hashlib.sha256(raw.encode()).hexdigest() == digest


@pytest.mark.slow
def test_an_image_index_pushes_every_platform_and_the_sboms(
    plain: Registry, tmp_path: Path
) -> None:
    layout = tmp_path / "oci"
    arm = sample_image(tmp_path)
    amd = ImageSpec(arm.layers, arm.config, Platform("amd64"), EPOCH)
    arm_digest = write_oci_layout(layout, arm, "multi:1")
    amd_digest = write_oci_layout(layout, amd, "multi:1")
    sbom = attach_artifact(layout, amd_digest, SPDX_JSON, SPDX_JSON, b'{"spdx":1}', title="sbom")
    index_digest = next(
        m["digest"] for m in oci.read_index(layout)["manifests"]
        if m.get("annotations", {}).get(oci.REF_NAME) == "multi:1"
    )  # fmt: skip
    done = push(layout, "multi:1", f"{plain.host}/multi:1", credentials=CredentialStore(),
                insecure=True)  # fmt: skip
    assert done.digest == index_digest and done.media_type == oci.MEDIA_INDEX
    # Two configs (one per platform), two shared layers, the SBOM's empty config and blob;
    # two manifests, the index, the SBOM's manifest.
    assert (done.uploaded, done.present, done.manifests) == (4 + 2, 0, 3 + 1)
    assert done.referrers == (sbom,)
    raw = skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{plain.host}/multi:1")
    assert "sha256:" + hashlib.sha256(raw.encode()).hexdigest() == index_digest
    index = json.loads(raw)
    assert index["mediaType"] == oci.MEDIA_INDEX
    assert {m["digest"] for m in index["manifests"]} == {arm_digest, amd_digest}
    for platform in ("linux/amd64", "linux/arm64/v8"):
        arch = platform.split("/")[1]
        inspected = json.loads(
            skopeo("inspect", "--tls-verify=false", "--override-arch", arch,
                   "--override-variant", "v8" if arch == "arm64" else "",
                   f"docker://{plain.host}/multi:1")
        )  # fmt: skip
        assert inspected["Architecture"] == arch
    # docker-registry 2.8 has no referrers API: the spec's fallback tag lists the SBOM.
    tag = amd_digest.replace(":", "-")
    referrers = json.loads(
        skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{plain.host}/multi:{tag}")
    )
    assert [(m["digest"], m["artifactType"]) for m in referrers["manifests"]] == [(sbom, SPDX_JSON)]
    again = push(layout, "multi:1", f"{plain.host}/multi:1", credentials=CredentialStore(),
                 insecure=True)  # fmt: skip
    assert (again.uploaded, again.present) == (0, 4 + 2)  # the SBOM's two blobs too
    referrers = json.loads(
        skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{plain.host}/multi:{tag}")
    )
    assert len(referrers["manifests"]) == 1


@pytest.mark.slow
def test_bearer_tokens_and_a_mount_across_repositories(tmp_path: Path) -> None:
    needs("docker-registry")
    with running_registry(tmp_path / "registry", tls=True, users=USERS, token=True) as registry:
        layout = tmp_path / "oci"
        digest = write_oci_layout(layout, sample_image(tmp_path), "app")
        tls, creds = trust(tmp_path, registry), login(tmp_path, registry)
        one = push(layout, "app", f"{registry.host}/a/app:1", credentials=creds, tls=tls)
        assert (one.digest, one.uploaded) == (digest, 3)
        # The mount needs a token with pull on a/app as well as push on b/app.
        two = push(layout, "app", f"{registry.host}/b/app:1", credentials=creds, tls=tls)
        assert (two.mounted, two.uploaded) == (3, 0)
        with pytest.raises(ScratchpackError) as caught:
            push(layout, "app", f"{registry.host}/c/app", tls=tls,
                 credentials=login(tmp_path, registry, "wrong"))  # fmt: skip
        one_line(caught, registry.host, "login refused")


@pytest.mark.slow
def test_a_big_layer_streams_from_its_file(plain: Registry, tmp_path: Path) -> None:
    big = source(tmp_path / "src", "big", random.Random(3).randbytes(48 << 20))
    image = ImageSpec(
        (LayerSpec((dir_entry("/data"), file_entry("/data/big", big, 0o644)), "data"),),
        ImageConfig(entrypoint=("/x",)),
        Platform("amd64"),
    )
    write_oci_layout(tmp_path / "oci", image, "big")
    tracemalloc.start()
    try:
        done = push(tmp_path / "oci", "big", f"{plain.host}/big", credentials=CredentialStore(),
                    insecure=True)  # fmt: skip
        _now, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert done.bytes_uploaded > 48 << 20
    assert peak < 8 << 20, f"{peak} B held at once while pushing a 48 MB layer"


# ----- Docker Engine ----------------------------------------------------------------------------


@pytest.mark.docker
@pytest.mark.slow
def test_docker_pulls_a_pushed_image_and_runs_it(
    plain: Registry,
    tmp_path: Path,
    kit: Any,  # noqa: F811
    static_hello: Path,  # noqa: F811
) -> None:
    layers = (
        LayerSpec(
            (
                dir_entry("/usr"),
                dir_entry("/usr/bin"),
                file_entry("/usr/bin/hello", static_hello, 0o755, PROGRAM),
                Entry("/bin", SYMLINK, 0o777, LINK, target="usr/bin"),
            ),
            "the program",
        ),
    )
    config = ImageConfig(entrypoint=("/bin/hello",), cmd=("pushed",))
    write_oci_layout(tmp_path / "oci", ImageSpec(layers, config, Platform("amd64")), "hello")
    reference = f"{plain.host}/scratchpack/hello:{kit.run_id}"
    done = push(tmp_path / "oci", "hello", reference, credentials=CredentialStore(), insecure=True)
    kit.own(reference)
    pulled = subprocess.run(["docker", "pull", reference], capture_output=True, text=True,
                            timeout=300)  # fmt: skip
    assert pulled.returncode == 0, pulled.stderr
    assert done.digest in pulled.stdout
    code, output = kit.run(reference, None)
    assert (code, output) == (0, "hello from static\narg 1: pushed\n")
