/* iconv() with charsets glibc does not build in (each is a gconv module): converts a UTF-8
 * text to every charset named on the command line (default ISO-8859-15 and EBCDIC-US) and
 * prints "CHARSET: HEX BYTES". Exits 1 with the error when a conversion cannot be opened, as
 * it cannot FROM scratch without --with gconv. */
#include <errno.h>
#include <iconv.h>
#include <stdio.h>
#include <string.h>

static int convert(const char *charset, const char *text) {
    iconv_t cd = iconv_open(charset, "UTF-8");
    if (cd == (iconv_t)-1) {
        printf("%s: iconv_open: %s\n", charset, strerror(errno));
        return 1;
    }
    char out[64];
    char *in = (char *)text, *o = out;
    size_t inleft = strlen(text), outleft = sizeof out;
    if (iconv(cd, &in, &inleft, &o, &outleft) == (size_t)-1) {
        printf("%s: iconv: %s\n", charset, strerror(errno));
        iconv_close(cd);
        return 1;
    }
    iconv_close(cd);
    printf("%s:", charset);
    for (char *p = out; p < o; p++) printf(" %02x", (unsigned char)*p);
    printf("\n");
    return 0;
}

int main(int argc, char **argv) {
    /* "HI €": the euro sign is 0xa4 in ISO-8859-15 (not in ISO-8859-1). */
    const char *text = argc > 1 ? argv[1] : "HI \xe2\x82\xac";
    int rc = 0;
    if (argc > 2) {
        for (int i = 2; i < argc; i++) rc |= convert(argv[i], text);
    } else {
        rc |= convert("ISO-8859-15", text);
        rc |= convert("EBCDIC-US", "HELLO");
    }
    return rc;
}
