/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Target: agent_dispatch (request parsing, policy, answers) without sockets
 * or a token. The input is split into lines like the server does; every
 * line must get exactly one well-formed answer line ({"ok":...}\n).
 * Byte 0 picks the peer (allowed uid, allowed gid, stranger) so policy
 * paths are reached.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "agent/agent.h"
#include "core/pj_log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char conf[] = "[profile prod]\n"
                           "key = pkcs11:token=t;object=k;type=private\n"
                           "client-id = 3MVGfuzz\n"
                           "subject = u@example.com\n"
                           "subjects = etl@example.com, b@example.com\n"
                           "allow-uid = 1001\n"
                           "allow-gid = 2000\n"
                           "[profile other]\n"
                           "key = pkcs11:token=t;object=k2;type=private\n"
                           "client-id = 3MVGfuzz\n"
                           "subject = o@example.com\n"
                           "allow-exe = /usr/bin/ok\n";

static bool
no_submit(struct agent *ag, struct agent_job *job)
{
    (void)ag;
    (void)job;
    abort(); /* no key is open: nothing may reach a worker */
}

static pj_rc
no_http(struct agent *ag, struct agent_job *job, struct pj_err *err)
{
    (void)ag;
    (void)job;
    (void)err;
    abort();
}

static struct agent *
agent_once(void)
{
    static struct agent *ag;
    struct pj_config *cfg = NULL;
    struct pj_err err = {0};
    struct agent_backend be = {no_submit, no_http, NULL, NULL};

    if (ag == NULL) {
        pj_log_set_level(PJ_LOG_ERR); /* audit lines are noise here */
        if (pj_config_load_string(conf, "fuzz.conf", &cfg, &err) != PJ_OK ||
            agent_new(cfg, NULL, &be, &ag, &err) != PJ_OK) {
            abort();
        }
        ag->self_uid = 12345;
    }
    return ag;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char exe_ok[] = "/usr/bin/ok";
    struct agent_peer peers[3] = {{1001, 1001, 10, exe_ok, 0},
                                  {3000, 2000, 11, NULL, EACCES},
                                  {4000, 4000, 0, NULL, ENOENT}};
    struct agent *ag = agent_once();
    const struct agent_peer *peer;
    size_t off = 1;

    if (size == 0) {
        return 0;
    }
    peer = &peers[data[0] % 3];
    while (off < size) {
        const char *line = (const char *)data + off;
        const char *nl = memchr(line, '\n', size - off);
        size_t len = nl ? (size_t)(nl - line) : size - off;
        struct agent_req *req = agent_req_new(NULL, peer);

        if (req == NULL) {
            abort();
        }
        if (agent_dispatch(ag, peer, line, len, req) != AGENT_ANSWERED ||
            !req->done || req->out.len < 12 ||
            memcmp(req->out.data, "{\"ok\":", 6) != 0 ||
            req->out.data[req->out.len - 1] != '\n' ||
            memchr(req->out.data, '\n', req->out.len - 1) != NULL) {
            abort();
        }
        agent_req_free(req);
        off += len + 1;
    }
    return 0;
}
