"""The run time: what a program needs once it runs, which no loader search can see.

- ``needs``: ``--with`` groups (NSS, certificates, zoneinfo, gconv ...), ``--user``, ``--mkdir``;
- ``trace``: trace mode, a real run under strace and every file it touched;
- ``languages``: language runtimes (Python, Perl, Node) packed without their modules, told;
- ``python_codecs``: the codecs Python looks up by name at run time.
"""
