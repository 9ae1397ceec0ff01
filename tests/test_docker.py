"""Proof with a real Docker Engine: scratchpack run in a builder stage gives a FROM
scratch redis image that answers PONG; the README's multi-stage pattern does too; the image is
no bigger than its closure; a musl program runs FROM scratch; --build/--verify work and fail
cleanly.

No registry can be reached: the builder image is the debootstrapped bookworm tree of
``debootstrap_root`` (redis-server, redis-tools, python3-venv) imported with ``docker import``,
and scratchpack is pip-installed in it (/opt/scratchpack, like the README) from a wheelhouse
made on the host. Images are built once per module; everything created carries a per-run tag
or name and is removed at the end, failures included (tests/dockerkit.py).

Figures (image and closure sizes) are printed to the terminal: ``pytest -s`` or ``-rA`` shows
them. About 30-60 s with a warm debootstrap cache (the builder image is imported and built
once per run; nothing is cached between runs).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
SRC = REPO / "testdata" / "src"
docker_test = [pytest.mark.docker, pytest.mark.slow]

# What the builder stage runs: the README's command, and a manifest beside it.
STAGE_COMMAND = "scratchpack redis-server --extra /etc/redis/redis.conf -o /out"
# What scratchpack needs at run time (pyproject's dependencies first, then theirs), pinned to
# the versions tested on the host.
DEPENDENCIES = ("pyelftools", "click", "docker", "packageurl-python")
RUNTIME_DISTS = (
    *DEPENDENCIES,
    "requests",
    "urllib3",
    "certifi",
    "idna",
    "charset-normalizer",
)


def scratchpack_cmd() -> list[str]:
    """The console script of this environment (as users run it), else ``python -m bundler``."""
    script = Path(sys.executable).with_name("scratchpack")
    return [str(script)] if script.exists() else [sys.executable, "-m", "bundler"]


def scratchpack(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*scratchpack_cmd(), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
    )


def report(capsys: pytest.CaptureFixture[str], text: str) -> None:
    """Show TEXT on the terminal even under capture (the figures a reader of the run wants)."""
    with capsys.disabled():
        print(f"\n    {text}", flush=True)


def mb(count: int) -> str:
    return f"{count / 1e6:.2f} MB"


# ----- fixtures ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def kit() -> Iterator[Any]:
    from dockerkit import Kit  # imports docker: only when these tests run

    kit = Kit()
    try:
        yield kit
    finally:
        problems = kit.cleanup()
        kit.client.close()
        if problems:
            print("docker cleanup left:", *problems, sep="\n  ", file=sys.stderr)


@pytest.fixture
def curl() -> str:
    """This machine's curl: a small real program with a good handful of libraries."""
    path = shutil.which("curl")
    if path is None:
        pytest.skip("needs curl")
    return path


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """scratchpack's wheel (this checkout as it is) and its dependencies', for --no-index."""
    from dockerkit import DockerKitError, make_wheelhouse

    pins = []
    for dist in RUNTIME_DISTS:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            pins.append(f"{dist}=={importlib.metadata.version(dist)}")
    try:
        base = tmp_path_factory.mktemp("wheelhouse")
        return make_wheelhouse(base, REPO, pins, DEPENDENCIES)
    except DockerKitError as exc:
        if os.environ.get("SCRATCHPACK_REQUIRE_DOCKER") == "1":
            pytest.fail(str(exc))
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def builder(
    kit: Any, debootstrap_root: Path, wheelhouse: Path, tmp_path_factory: pytest.TempPathFactory
) -> str:
    """The builder image: debootstrapped bookworm (docker import) + scratchpack in a venv at
    /opt/scratchpack, on PATH, installed with --no-index from the wheelhouse."""
    base = kit.tag("bookworm")
    start = time.monotonic()
    kit.import_tree(debootstrap_root, base)
    imported = time.monotonic() - start
    context = tmp_path_factory.mktemp("builder")
    shutil.copytree(wheelhouse, context / "wheels")
    (context / "Dockerfile").write_text(
        f"FROM {base}\n"
        "COPY wheels/ /tmp/wheels/\n"
        "RUN python3 -m venv /opt/scratchpack \\\n"
        " && /opt/scratchpack/bin/pip install -q --disable-pip-version-check --no-index \\\n"
        "      --find-links /tmp/wheels scratchpack \\\n"
        " && rm -rf /tmp/wheels \\\n"
        " && /opt/scratchpack/bin/scratchpack --version\n"
        "ENV PATH=/opt/scratchpack/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin"
        ":/sbin:/bin\n"
    )
    tag = kit.tag("builder")
    kit.build(context, tag)
    print(f"builder: import {imported:.0f} s, total {time.monotonic() - start:.0f} s")
    return tag


@pytest.fixture(scope="module")
def stage(kit: Any, builder: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The builder-stage run: ``RUN scratchpack redis-server --extra ... -o /out`` in an image
    FROM the builder; /out copied out of it and its Dockerfile built as it is."""
    context = tmp_path_factory.mktemp("stage")
    (context / "Dockerfile").write_text(
        f"FROM {builder}\nRUN {STAGE_COMMAND} --json > /manifest.json\n"
    )
    stage_tag = kit.tag("stage")
    kit.build(context, stage_tag)
    got = tmp_path_factory.mktemp("got")
    kit.copy_out(stage_tag, ["/out", "/manifest.json"], got)
    out = got / "out"
    manifest = json.loads((got / "manifest.json").read_text())
    redis_tag = kit.tag("redis")
    image = kit.build(out, redis_tag)
    return {"out": out, "manifest": manifest, "tag": redis_tag, "image": image}


@pytest.fixture(scope="module")
def readme_dockerfile() -> tuple[str, str]:
    """(the scratchpack RUN step, the final FROM scratch stage) of the README's dockerfile
    block that shows the builder-stage pattern."""
    readme = (REPO / "README.md").read_text()
    for block in re.findall(r"```dockerfile\n(.*?)```", readme, flags=re.S):
        if "COPY --from=build /out/rootfs/ /" not in block:
            continue
        # One logical line per instruction (backslash continuations joined).
        instructions = re.sub(r"\\\n\s*", " ", block).splitlines()
        run = [i for i in instructions if i.startswith("RUN ") and "scratchpack " in i]
        starts = [n for n, i in enumerate(instructions) if i.strip() == "FROM scratch"]
        if run and starts:
            return run[-1], "\n".join(instructions[starts[-1] :]).strip() + "\n"
    pytest.fail("README.md has no dockerfile block with a scratchpack RUN and a FROM scratch stage")


# ----- tests ------------------------------------------------------------------------------------
@pytest.mark.docker
@pytest.mark.slow
def test_builder_stage_redis_answers_pong(kit: Any, builder: str, stage: dict[str, Any]) -> None:
    out: Path = stage["out"]
    assert {"Dockerfile", "rootfs.tar.gz", "rootfs"} <= {p.name for p in out.iterdir()}
    dockerfile = (out / "Dockerfile").read_text()
    assert "FROM scratch" in dockerfile
    assert 'ENTRYPOINT ["/usr/bin/redis-server"]' in dockerfile
    assert (out / "rootfs/etc/redis/redis.conf").is_file()
    # The scratch image holds only the closure: no shell, no redis-cli.
    packed = {f["path"] for f in stage["manifest"]["files"]}
    assert not packed & {"/bin/sh", "/usr/bin/sh", "/usr/bin/redis-cli", "/usr/bin/python3"}
    image = kit.client.images.get(stage["tag"])
    assert image.attrs["Config"]["Entrypoint"] == ["/usr/bin/redis-server"]
    network = kit.network(kit.name("net-stage"))
    server = kit.start(
        stage["tag"], ["--protected-mode", "no"], name=kit.name("redis-stage"), network=network
    )
    assert kit.wait_for_pong(builder, server.name, network, server) == "PONG"
    assert "Ready to accept connections" in kit.logs(server)


@pytest.mark.docker
@pytest.mark.slow
def test_readme_multi_stage_pattern_answers_pong(
    kit: Any,
    builder: str,
    stage: dict[str, Any],
    readme_dockerfile: tuple[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The README's Dockerfile, its first stage replaced by the builder image (which installs
    the same things the same way: Debian's redis-server, scratchpack in /opt/scratchpack)."""
    run_step, final_stage = readme_dockerfile
    assert "COPY --from=build /out/rootfs/ /" in final_stage
    (tmp_path / "Dockerfile").write_text(f"FROM {builder} AS build\n{run_step}\n\n{final_stage}")
    tag = kit.tag("multistage")
    image = kit.build(tmp_path, tag)
    network = kit.network(kit.name("net-multi"))
    server = kit.start(tag, None, name=kit.name("redis-multi"), network=network)
    assert kit.wait_for_pong(builder, server.name, network, server) == "PONG"
    size = int(image.attrs["Size"])
    report(capsys, f"multi-stage redis image (README pattern): {mb(size)} ({size} B)")
    # The README's run packs more than the plain stage (--with base: zoneinfo, certs, ...), so
    # the image is measured against its own files, read back from the image itself.
    files = image_file_bytes(kit, tag)
    report(capsys, f"multi-stage redis image files: {mb(files)} ({files} B)")
    assert files > int(stage["manifest"]["totals"]["bytes"])
    assert size <= files * 1.01


def image_file_bytes(kit: Any, tag: str) -> int:
    """Bytes of the regular files of an image (hard links once), from `docker export`."""
    import io
    import tarfile

    container = kit.client.containers.create(tag)
    try:
        data = b"".join(container.export())
    finally:
        container.remove(force=True)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return sum(m.size for m in tar.getmembers() if m.isreg())


@pytest.mark.docker
@pytest.mark.slow
def test_redis_image_is_no_bigger_than_its_closure(
    kit: Any, stage: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = stage["manifest"]
    closure = int(manifest["totals"]["bytes"])
    # The manifest agrees with the staged tree (regular files, each inode once).
    seen: set[int] = set()
    staged = 0
    for path in (stage["out"] / "rootfs").rglob("*"):
        st = path.lstat()
        if path.is_file() and not path.is_symlink() and st.st_ino not in seen:
            seen.add(st.st_ino)
            staged += st.st_size
    assert staged == closure
    size = kit.image_size(stage["tag"])
    files = [f for f in manifest["files"] if f["type"] == "file"]
    tarball = (stage["out"] / "rootfs.tar.gz").stat().st_size
    report(
        capsys,
        f"redis scratch image: {mb(size)} ({size} B); closure: {mb(closure)} ({closure} B, "
        f"{len(files)} files); image/closure = {size / closure:.4f}; "
        f"rootfs.tar.gz {mb(tarball)}",
    )
    assert size <= closure * 1.01
    # And it is the closure: redis-server and its libraries, about 18 MB, not a distribution.
    assert 5e6 < closure < 40e6
    # (Debian's /usr/bin/redis-server is a link to redis-check-rdb: both are in.)
    paths = {f["path"] for f in manifest["files"]}
    assert {"/usr/bin/redis-server", "/usr/bin/redis-check-rdb"} <= paths


@pytest.mark.docker
@pytest.mark.slow
def test_musl_program_runs_from_scratch(
    kit: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if shutil.which("musl-gcc") is None:
        pytest.skip("needs musl-gcc (musl-tools)")
    (tmp_path / "bin").mkdir()
    (tmp_path / "lib").mkdir()
    lib = tmp_path / "lib" / "libhello.so.1"
    prog = tmp_path / "bin" / "hello"
    compile_steps = [
        [
            *("musl-gcc", "-shared", "-fPIC", '-DVARIANT="musl"', "-Wl,-soname,libhello.so.1"),
            *("-o", str(lib), str(SRC / "lib.c")),
        ],
        [
            *("musl-gcc", "-o", str(prog), str(SRC / "hello.c"), f"-L{lib.parent}"),
            *("-l:libhello.so.1", "-Wl,-rpath,$ORIGIN/../lib"),
        ],
    ]
    for cmd in compile_steps:
        subprocess.run(cmd, check=True, capture_output=True, timeout=60)
    tag = kit.tag("musl")
    kit.own(tag)
    out = tmp_path / "out"
    done = scratchpack(str(prog), "-o", str(out), "--build", tag, "--verify", "one two")
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(rf"sha256:[0-9a-f]{{64}} {re.escape(tag)} \S+ \S*B\n", done.stdout)
    listed = [line for line in scratchpack("--list", str(prog)).stdout.splitlines()]
    assert listed[1] == "/lib/ld-musl-x86_64.so.1"
    code, output = kit.run(tag, ["from", "scratch"])
    assert (code, output) == (0, "hello from musl\narg 1: from\narg 2: scratch\n")
    size = kit.image_size(tag)
    report(capsys, f"musl hello image: {mb(size)} ({size} B)")
    assert size < 2e6


@pytest.mark.docker
@pytest.mark.slow
def test_build_and_verify_a_host_program(kit: Any, tmp_path: Path, curl: str) -> None:
    tag = kit.tag("curl")
    kit.own(tag)
    done = scratchpack(curl, "-o", str(tmp_path / "out"), "--build", tag, "--verify", "--version")
    assert done.returncode == 0, done.stderr
    image_id, shown_tag, _size = done.stdout.split(" ", 2)
    assert shown_tag == tag
    assert kit.client.images.get(tag).id == image_id
    code, output = kit.run(tag, ["--version"])
    assert code == 0 and output.startswith("curl "), output


@pytest.mark.docker
@pytest.mark.slow
def test_failing_verify_exits_1_showing_the_output(kit: Any, tmp_path: Path, curl: str) -> None:
    tag = kit.tag("curl-fail")
    kit.own(tag)
    done = scratchpack(
        curl, "-o", str(tmp_path / "out"), "--build", tag, "--verify", "--no-such-option-xyz"
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert "exited 2" in done.stderr
    # curl's own complaint, as the container printed it.
    assert "--no-such-option-xyz" in done.stderr and "unknown" in done.stderr, done.stderr
    # The image was built (the failure is the run, not the build) and no container is left.
    assert kit.client.images.get(tag)
    assert not kit.client.containers.list(all=True, filters={"ancestor": tag})


@pytest.mark.docker
@pytest.mark.slow
def test_verify_with_no_arguments_runs_the_image(kit: Any, tmp_path: Path, curl: str) -> None:
    """curl with no arguments exits 2 ("try 'curl --help'"): the verify run must fail."""
    tag = kit.tag("curl-noargs")
    kit.own(tag)
    done = scratchpack(curl, "-o", str(tmp_path / "out"), "--build", tag, "--verify", "")
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "exited 2" in done.stderr


@pytest.mark.docker
@pytest.mark.slow
def test_unbalanced_quote_in_verify_is_a_usage_error(kit: Any, tmp_path: Path, curl: str) -> None:
    tag = kit.tag("curl-quote")
    kit.own(tag)
    done = scratchpack(curl, "-o", str(tmp_path / "out"), "--build", tag, "--verify", "'x")
    assert "Traceback" not in done.stderr
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.splitlines()) == 1, done.stderr


def test_build_without_an_engine_is_one_line_exit_2(tmp_path: Path, curl: str) -> None:
    """No engine mark: this is about a dead engine, so it runs everywhere."""
    try:
        import docker  # noqa: F401
    except ImportError:
        pytest.skip("the docker SDK is not installed")
    dead = f"unix://{tmp_path}/no-engine.sock"
    done = scratchpack(
        curl,
        "-q",
        "-o",
        str(tmp_path / "out"),
        "--build",
        "x:y",
        env={"DOCKER_HOST": dead},
        timeout=120,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("scratchpack: cannot reach the Docker Engine"), lines[0]
    assert done.stdout == ""


@pytest.mark.docker
@pytest.mark.slow
def test_verify_of_a_server_times_out(kit: Any, tmp_path: Path) -> None:
    """A run that does not exit (a server) is killed after --verify-timeout and fails."""
    sleep = shutil.which("sleep")
    if sleep is None:
        pytest.skip("needs sleep")
    tag = kit.tag("sleep")
    kit.own(tag)
    done = scratchpack(
        sleep,
        "-o",
        str(tmp_path / "out"),
        "--build",
        tag,
        "--verify",
        "600",
        "--verify-timeout",
        "3",
    )
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "still running after 3 s" in done.stderr
    assert not kit.client.containers.list(all=True, filters={"ancestor": tag})


def test_bad_tag_is_refused_before_packing(tmp_path: Path) -> None:
    done = scratchpack("true", "-o", str(tmp_path / "out"), "--build", "Bad:Tag!")
    assert done.returncode == 2
    assert "not a valid image name" in done.stderr
    assert not (tmp_path / "out").exists()


def test_the_wheelhouse_names_every_dependency() -> None:
    """The builder image installs from the wheelhouse with --no-index: a dependency missing
    here would fail every Docker test with pip's "No matching distribution"."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    names = {re.split(r"[<>=!~\[ ;]", dep, maxsplit=1)[0] for dep in project["dependencies"]}
    assert names == set(DEPENDENCIES)
