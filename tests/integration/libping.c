/* libping - ping llmguardd through libllmguard: libping [SOCKET] */
#include <stdio.h>

#include "llmguard.h"

int
main(int argc, char **argv)
{
    llmguard_t *g = llmguard_open(argc > 1 ? argv[1] : NULL);
    int rc;

    if (g == NULL) {
        fprintf(stderr, "llmguard_open failed\n");
        return 2;
    }
    rc = llmguard_ping(g);
    if (rc == 0)
        printf("pong %s\n", llmguard_socket_path(g));
    else
        printf("error %d %s: %s\n", rc, llmguard_strerror(rc),
               llmguard_last_error(g));
    llmguard_close(g);
    return rc == 0 ? 0 : 1;
}
