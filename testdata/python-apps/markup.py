"""lxml. basic: parse and serialise; more: XPath, XSLT, HTML, objectify, metadata."""

import json
import sys
from importlib.metadata import version

from lxml import etree

DOC = "<items>" + "".join(f"<item n='{n}'>{n * n}</item>" for n in range(1, 6)) + "</items>"


def basic() -> dict[str, object]:
    return {"xml": etree.tostring(etree.fromstring("<a><b/></a>")).decode()}


def more() -> dict[str, object]:
    import lxml.html
    import lxml.objectify

    tree = etree.fromstring(DOC)
    xslt = etree.XSLT(
        etree.fromstring(
            "<xsl:stylesheet version='1.0' xmlns:xsl='http://www.w3.org/1999/XSL/Transform'>"
            "<xsl:template match='/'><sum><xsl:value-of select='sum(//item)'/></sum></xsl:template>"
            "</xsl:stylesheet>"
        )
    )
    html = lxml.html.fromstring("<p>Hello <b>scratch</b></p>")
    return {
        "xpath": [int(x) for x in tree.xpath("//item[@n > 3]/text()")],
        "xslt": str(xslt(tree)).split("?>")[-1].strip(),
        "html": html.text_content(),
        "objectify": int(lxml.objectify.fromstring("<r><v>7</v></r>").v) * 6,
        "version": version("lxml"),
    }


if __name__ == "__main__":
    print(json.dumps({"basic": basic, "more": more}[sys.argv[1]](), sort_keys=True))
