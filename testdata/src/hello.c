/* A program that runs: prints a greeting, the variant of the library it was linked with (lib.c),
 * and its arguments. The docker tests build it with musl-gcc and run its FROM scratch image. */
#include <stdio.h>

const char *scratchpack_fixture_variant(void);

int main(int argc, char **argv) {
    printf("hello from %s\n", scratchpack_fixture_variant());
    for (int i = 1; i < argc; i++) printf("arg %d: %s\n", i, argv[i]);
    return 0;
}
