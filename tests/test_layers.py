"""Layers by Debian package: ownership from a dpkg database, and layers that images share.

A small Debian-shaped root (merged /usr, a dpkg database with a diversion) is made in
tmp_path; plans are made by the Planner itself, as a pack makes them.
"""

from __future__ import annotations

from pathlib import Path

from fakeroot import DEBIAN_STATUS, LOADER, MULTIARCH, make_debian_root

from bundler.image.layers import TOP, complete_for_sharing, plan_layers
from bundler.loader.closure import Binary
from bundler.loader.resolve import Library
from bundler.loader.rootfs import FsRoot
from bundler.packages.dpkg import open_database, parse_stanzas
from bundler.staging.plan import DIR, Planner, PlanOptions


def _binary(path: str, libraries: list[str]) -> Binary:
    libs = tuple(Library(p.rsplit("/", 1)[1], p, path, (path,), via="default") for p in libraries)
    return Binary(path, "dynamic", LOADER, "glibc", libs)


def _planner(root: FsRoot, binary: Binary, extras: tuple[str, ...] = ()) -> Planner:
    planner = Planner(root, PlanOptions())
    planner.add_binaries([binary])
    planner.add_extras(extras)
    return planner


def test_stanzas_keep_order_and_continuations() -> None:
    stanzas = list(parse_stanzas(DEBIAN_STATUS))
    names = [dict(s)["Package"] for s in stanzas]
    assert names == ["libc6", "libfoo1", "footool", "divertor", "removed"]
    assert dict(stanzas[0])["Description"] == "GNU C Library\n continued here"


def test_owners_through_merged_usr_links_and_diversions(tmp_path: Path) -> None:
    root = make_debian_root(tmp_path / "root")
    database = open_database(root)
    assert database is not None
    assert set(database.packages) == {"libc6", "libfoo1", "footool", "divertor"}  # not "removed"
    assert database.owner(f"/{MULTIARCH}/libc.so.6") == "libc6"  # listed as /lib/...
    assert database.owner("/lib/x86_64-linux-gnu/libfoo.so.1") == "libfoo1"  # listed as /usr/...
    assert database.owner("/usr/bin/foo") == "divertor"  # the diverter's own file
    assert database.owner("/usr/bin/foo.distrib") == "footool"  # footool's, moved aside
    assert database.owner("/bin/footool") == "footool"
    assert database.owner("/usr/bin/nothing") is None
    assert database.packages["libc6"].source == "glibc"
    assert database.packages["libfoo1"].source == "libfoo1"


def test_no_dpkg_database_is_none(tmp_path: Path) -> None:
    (tmp_path / "bare").mkdir()
    assert open_database(FsRoot(str(tmp_path / "bare"))) is None


def test_layers_by_package_glibc_at_the_bottom_unowned_on_top(tmp_path: Path) -> None:
    root = make_debian_root(tmp_path / "root")
    libraries = [f"/{MULTIARCH}/libfoo.so.1", "/lib/x86_64-linux-gnu/libc.so.6"]
    binary = _binary("/usr/bin/footool", libraries)
    planner = _planner(root, binary, ("/etc/foo.conf",))
    planner.add_generated("/etc/passwd", b"root:x:0:0::/:/bin/sh\n")
    planner.add_directory("/tmp", 0o1777)
    database = open_database(root)
    assert database is not None
    complete_for_sharing(planner, database, [binary])
    layers = plan_layers(planner.plan, database, [LOADER])
    comments = [layer.comment.split()[0] for layer in layers]
    assert comments == ["libc6", "libfoo1", "footool", "files"], comments
    bottom = {e.path for e in layers[0].entries}
    assert {"/lib", "/lib64", "/bin", "/usr/lib64/ld-linux-x86-64.so.2"} <= bottom
    assert {f"/{MULTIARCH}/libc.so.6", f"/{MULTIARCH}/libm.so.6"} <= bottom
    top = {e.path: e for e in layers[-1].entries}
    assert "/etc/passwd" in top and top["/tmp"].mode == 0o1777
    # Every file is in exactly one layer; folders may repeat, as the very same entry.
    seen: dict[str, object] = {}
    for layer in layers:
        for entry in layer.entries:
            if entry.type == DIR:
                assert seen.setdefault(entry.path, entry) == entry
            else:
                assert entry.path not in seen, entry.path
                seen[entry.path] = entry
            parent = entry.path.rsplit("/", 1)[0]
            assert parent == "" or parent in {e.path for e in layer.entries}, entry.path
    assert set(seen) == set(planner.plan.entries)


def test_images_needing_different_subsets_of_a_package_share_its_layer(tmp_path: Path) -> None:
    root = make_debian_root(tmp_path / "root")
    database = open_database(root)
    assert database is not None
    libc, libm = f"/{MULTIARCH}/libc.so.6", f"/{MULTIARCH}/libm.so.6"
    first = _binary("/usr/bin/footool", [libc])
    second = _binary("/usr/bin/footool", [f"/{MULTIARCH}/libfoo.so.1", libm, libc])
    layers = []
    for binary in (first, second):
        planner = _planner(root, binary)
        added = complete_for_sharing(planner, database, [binary])
        assert added > 0
        made = plan_layers(planner.plan, database, [LOADER])
        layers.append({layer.comment.split()[0]: layer for layer in made})
    assert layers[0]["libc6"] == layers[1]["libc6"]
    paths = {e.path for e in layers[0]["libc6"].entries}
    assert libm in paths
    assert f"/{MULTIARCH}/gconv/UTF-16.so" not in paths  # only the loader's own folder
    foo = {e.path for e in layers[1]["libfoo1"].entries}
    assert f"/{MULTIARCH}/libfoo-extra.so.1" in foo and "/usr/share/doc/libfoo1/README" not in foo


def test_a_budget_merges_the_last_groups_into_the_top(tmp_path: Path) -> None:
    root = make_debian_root(tmp_path / "root")
    libraries = [f"/{MULTIARCH}/libfoo.so.1", f"/{MULTIARCH}/libc.so.6"]
    planner = _planner(root, _binary("/usr/bin/footool", libraries))
    planner.add_generated("/etc/passwd", b"x\n")
    database = open_database(root)
    assert len(plan_layers(planner.plan, database, [LOADER], max_layers=10)) == 4
    merged = plan_layers(planner.plan, database, [LOADER], max_layers=2)
    assert len(merged) == 2
    assert merged[0].comment.startswith("libc6")
    top = {e.path for e in merged[1].entries}
    assert {"/usr/bin/footool", "/etc/passwd", f"/{MULTIARCH}/libfoo.so.1.0"} <= top
    assert TOP == ""
    one = plan_layers(planner.plan, database, [LOADER], max_layers=1)
    assert len(one) == 1 and {e.path for e in one[0].entries} == set(planner.plan.entries)


def test_a_root_without_dpkg_is_one_layer(tmp_path: Path) -> None:
    root = make_debian_root(tmp_path / "root")
    binary = _binary("/usr/bin/footool", [f"/{MULTIARCH}/libc.so.6"])
    planner = _planner(root, binary)
    layers = plan_layers(planner.plan, None, [LOADER])
    assert len(layers) == 1
    assert {e.path for e in layers[0].entries} == set(planner.plan.entries)
