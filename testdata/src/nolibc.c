/* A program linked with -nostdlib: only the libraries on its link line are DT_NEEDED. */
void _start(void) {
    for (;;) {
    }
}
