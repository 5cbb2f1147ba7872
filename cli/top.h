/*
 * top.h - llmguardctl top: a live view of llmguardd, built from the status
 * and metrics ops and a quota_status per subject shown (llmguardctl(1),
 * "top").
 */
#ifndef LLMGUARD_CLI_TOP_H
#define LLMGUARD_CLI_TOP_H

#include <stdbool.h>

#include "llmguard.h"

struct top_options {
    double interval_s;      /* between refreshes */
    long count;             /* refreshes before exiting; 0: until q */
};

/*
 * Show the view of the daemon on g until q is pressed, a signal arrives
 * or count refreshes are done: redrawn in place when standard output is a
 * terminal, else printed as one plain block per refresh.  Returns 0, or
 * the LLMGUARD_E* code of a first refresh that failed (nothing shown;
 * llmguard_last_error() says why); later failures are shown in the view.
 */
int top_run(llmguard_t *g, const struct top_options *o);

#endif
