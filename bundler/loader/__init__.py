"""The loader's rules: what ld.so (glibc's or musl's) would map for a program, file for file.

- ``rootfs``: paths inside a root, symbolic links resolved as ``chroot`` would;
- ``elf``: ELF facts of one file (the only module that talks to pyelftools);
- ``ldconfig``: ``ld.so.conf`` and ``ld.so.cache``;
- ``hwcaps``: the glibc-hwcaps and legacy hwcap folders for a CPU's features;
- ``ldso``: which loader a program gets and how that loader was built;
- ``resolve``: the glibc and musl searches, in load order;
- ``versions``: symbol versions checked as the loader checks them;
- ``programs``: the programs a user names (paths, ``PATH``, ``#!`` lines);
- ``closure``: every program's closure and what is missing, for one run.
"""
