/* A program that dlopen()s libz.so.1 (never in its DT_NEEDED) and says so in a .note.dlopen
 * ELF note (owner "FDO", type 0x407c0c0a, the UAPI dlopen-metadata JSON), so that scratchpack
 * packs zlib without tracing it. Prints "zlib VERSION" and exits 0, or the dlerror() and exits
 * 1 (FROM scratch when packed with --dlopen none). */
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>

#define JSON "[{\"feature\":\"zlib\",\"description\":\"compression\"," \
  "\"priority\":\"recommended\",\"soname\":[\"libz.so.1\"]}]"
__attribute__((used, section(".note.dlopen"))) _Alignas(4) static const struct {
    struct { uint32_t n_namesz, n_descsz, n_type; } nhdr;
    char name[sizeof("FDO")];
    _Alignas(4) char json[sizeof(JSON)];
} note = { { sizeof("FDO"), sizeof(JSON), 0x407c0c0a }, "FDO", JSON };

int main(void) {
    void *z = dlopen("libz.so.1", RTLD_NOW);
    if (z == NULL) {
        printf("dlopen: %s\n", dlerror());
        return 1;
    }
    const char *(*version)(void) = (const char *(*)(void))dlsym(z, "zlibVersion");
    if (version == NULL) {
        printf("dlsym: %s\n", dlerror());
        return 1;
    }
    printf("zlib %s\n", version());
    return 0;
}
