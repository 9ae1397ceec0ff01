"""psycopg2 (libpq). basic: import and adapt; more: libpq's DSN parser, quoting, a refused
connection (libpq and its SSL/Kerberos libraries loaded), extras."""

import json
import sys
from importlib.metadata import version

import psycopg2
import psycopg2.extensions


def basic() -> dict[str, object]:
    return {"quoted": psycopg2.extensions.adapt("x").getquoted().decode()}


def more() -> dict[str, object]:
    import psycopg2.extras

    dsn = psycopg2.extensions.parse_dsn("host=127.0.0.1 port=1 dbname=app user=scratch")
    try:
        psycopg2.connect(host="127.0.0.1", port=1, dbname="app", connect_timeout=2)
        refused = "connected?"
    except psycopg2.OperationalError as exc:
        refused = "refused" if "refused" in str(exc) else str(exc)
    return {
        "dsn": dsn,
        "quoted": psycopg2.extensions.QuotedString("O'Reilly").getquoted().decode(),
        "json": psycopg2.extras.Json({"a": 1}).dumps({"a": 1}),
        "connect": refused,
        "libpq": psycopg2.extensions.libpq_version() >= 100000,
        "version": version("psycopg2-binary"),
    }


if __name__ == "__main__":
    print(json.dumps({"basic": basic, "more": more}[sys.argv[1]](), sort_keys=True))
