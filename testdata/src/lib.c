/* One shared library of the fixtures. VARIANT (a string) tells copies of the same soname apart. */
#ifndef VARIANT
#define VARIANT "plain"
#endif
const char *scratchpack_fixture_variant(void) { return VARIANT; }
