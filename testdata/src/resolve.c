/* getaddrinfo() through NSS: prints each address of HOST (default "localhost") for SERVICE
 * (default "http", a name only /etc/services knows), one "ADDRESS PORT" line per address, and
 * exits 0; on failure prints gai_strerror() and exits 1. The docker tests pack it FROM scratch
 * with --with nss (and without it, where the service name cannot be resolved). */
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

int main(int argc, char **argv) {
    const char *host = argc > 1 ? argv[1] : "localhost";
    const char *service = argc > 2 ? argv[2] : "http";
    struct addrinfo hints, *res, *ai;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo(host, service, &hints, &res);
    if (rc != 0) {
        printf("getaddrinfo %s %s: %s\n", host, service, gai_strerror(rc));
        return 1;
    }
    for (ai = res; ai != NULL; ai = ai->ai_next) {
        char text[INET6_ADDRSTRLEN];
        const void *addr;
        unsigned port;
        if (ai->ai_family == AF_INET) {
            const struct sockaddr_in *sin = (const struct sockaddr_in *)ai->ai_addr;
            addr = &sin->sin_addr;
            port = ntohs(sin->sin_port);
        } else if (ai->ai_family == AF_INET6) {
            const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ai->ai_addr;
            addr = &sin6->sin6_addr;
            port = ntohs(sin6->sin6_port);
        } else {
            continue;
        }
        inet_ntop(ai->ai_family, addr, text, sizeof text);
        printf("%s %u\n", text, port);
    }
    freeaddrinfo(res);
    return 0;
}
