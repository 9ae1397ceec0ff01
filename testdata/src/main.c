/* A fixture program: its dependencies come from the link line; it never needs to run. */
int main(void) { return 0; }
