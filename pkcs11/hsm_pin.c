/* SPDX-License-Identifier: Apache-2.0 */
/*
 * PIN sources and login. A PIN is read into secret memory right before
 * C_Login and wiped right after; it is never kept for later (recovery reads
 * the source again), never retried once rejected, and never put in a
 * message or log line.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/pj_log.h"
#include "pkcs11/internal.h"

pj_rc
hsm_pin_source_normalize(const char *src, char **outp, struct pj_err *err)
{
    const char *path = NULL;
    size_t n;
    int w;

    *outp = NULL;
    if (src == NULL || src[0] == '\0') {
        return pj_err_set(err, PJ_ERR_INVALID, "empty PIN source");
    }
    if (strncmp(src, "env:", 4) == 0 || strncmp(src, "systemd:", 8) == 0) {
        if ((*outp = strdup(src)) == NULL) {
            return pj_err_set(err, PJ_ERR_NOMEM, "out of memory");
        }
        return PJ_OK;
    }
    if (strncmp(src, "file://", 7) == 0) {
        /* RFC 8089: file://host/path; only the local host makes sense. */
        const char *p = src + 7;
        if (p[0] == '/') {
            path = p;
        } else if (strncmp(p, "localhost/", 10) == 0) {
            path = p + 9;
        } else {
            return pj_err_set(err, PJ_ERR_INVALID,
                              "PIN source file: URI names another host; use "
                              "file:/path or file:///path");
        }
    } else if (strncmp(src, "file:", 5) == 0) {
        path = src + 5;
    } else if (src[0] == '/') {
        path = src; /* RFC 7512 allows a plain path */
    } else {
        return pj_err_set(err, PJ_ERR_INVALID,
                          "unknown PIN source (use file:PATH, env:NAME or "
                          "systemd:NAME)");
    }
    if (path[0] == '\0') {
        return pj_err_set(err, PJ_ERR_INVALID, "PIN source file: has no path");
    }
    n = strlen(path) + 6;
    if ((*outp = malloc(n)) == NULL) {
        return pj_err_set(err, PJ_ERR_NOMEM, "out of memory");
    }
    w = snprintf(*outp, n, "file:%s", path);
    (void)w;
    return PJ_OK;
}

/* Strip one trailing newline (and a CR before it); refuse empty. */
static pj_rc
pin_finish(struct pj_secret *pin, const char *what, struct pj_err *err)
{
    if (pin->len > 0 && pin->data[pin->len - 1] == '\n') {
        pin->data[--pin->len] = '\0';
        if (pin->len > 0 && pin->data[pin->len - 1] == '\r') {
            pin->data[--pin->len] = '\0';
        }
    }
    if (pin->len == 0) {
        return pj_err_set(err, PJ_ERR_INVALID, "%s is empty", what);
    }
    if (memchr(pin->data, '\0', pin->len) != NULL) {
        return pj_err_set(err, PJ_ERR_INVALID, "%s contains a NUL byte", what);
    }
    return PJ_OK;
}

static pj_rc
pin_read_fd(int fd, struct pj_secret *pin, const char *what, struct pj_err *err)
{
    ssize_t r;

    for (;;) {
        if (pin->len >= HSM_PIN_MAX_BYTES + 2) {
            return pj_err_set(err, PJ_ERR_LIMIT, "%s is longer than %d bytes",
                              what, HSM_PIN_MAX_BYTES);
        }
        r = read(fd, pin->data + pin->len, HSM_PIN_MAX_BYTES + 2 - pin->len);
        if (r < 0) {
            if (errno == EINTR) {
                continue;
            }
            return pj_err_sys(err, "read %s", what);
        }
        if (r == 0) {
            break;
        }
        pin->len += (size_t)r;
    }
    pin->data[pin->len] = '\0';
    if (pin->len > HSM_PIN_MAX_BYTES + 1 ||
        (pin->len == HSM_PIN_MAX_BYTES + 1 &&
         pin->data[pin->len - 1] != '\n')) {
        return pj_err_set(err, PJ_ERR_LIMIT, "%s is longer than %d bytes", what,
                          HSM_PIN_MAX_BYTES);
    }
    return PJ_OK;
}

static pj_rc
pin_from_file(const char *path, bool check_mode, struct pj_secret *pin,
              struct pj_err *err)
{
    struct stat st;
    char what[4200];
    int fd;
    pj_rc rc;

    snprintf(what, sizeof(what), "PIN file %s", path);
    if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY)) < 0) {
        if (errno == ENOENT) {
            return pj_err_set(err, PJ_ERR_NOT_FOUND, "%s does not exist", what);
        }
        return pj_err_sys(err, "open %s", what);
    }
    /* fstat on the open file: no window between the check and the read. */
    if (fstat(fd, &st) != 0) {
        rc = pj_err_sys(err, "stat %s", what);
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = pj_err_set(err, PJ_ERR_INVALID, "%s is not a regular file", what);
        goto out;
    }
    if (check_mode && (st.st_mode & 077) != 0) {
        rc = pj_err_set(err, PJ_ERR_DENIED,
                        "%s is readable by others (mode %04o); chmod 600 it",
                        what, (unsigned)(st.st_mode & 07777));
        goto out;
    }
    if ((rc = pin_read_fd(fd, pin, what, err)) != PJ_OK) {
        goto out;
    }
    rc = pin_finish(pin, what, err);
out:
    close(fd);
    return rc;
}

pj_rc
hsm_pin_read(const char *source, struct pj_secret **pinp, struct pj_err *err)
{
    struct pj_secret *pin = NULL;
    char *norm = NULL;
    const char *name;
    pj_rc rc;

    *pinp = NULL;
    if ((rc = hsm_pin_source_normalize(source, &norm, err)) != PJ_OK) {
        return rc;
    }
    if ((pin = pj_secret_new(HSM_PIN_MAX_BYTES + 2)) == NULL) {
        rc = pj_err_set(err, PJ_ERR_NOMEM, "out of memory for the PIN");
        goto out;
    }
    if (strncmp(norm, "file:", 5) == 0) {
        rc = pin_from_file(norm + 5, true, pin, err);
    } else if (strncmp(norm, "env:", 4) == 0) {
        const char *v;
        char what[96];
        name = norm + 4;
        if (name[0] == '\0') {
            rc = pj_err_set(err, PJ_ERR_INVALID,
                            "PIN source env: names no variable");
            goto out;
        }
        snprintf(what, sizeof(what), "PIN variable %.64s", name);
        if ((v = getenv(name)) == NULL) {
            rc = pj_err_set(err, PJ_ERR_NOT_FOUND,
                            "environment variable %.64s (PIN source) is not "
                            "set",
                            name);
            goto out;
        }
        if (strlen(v) > HSM_PIN_MAX_BYTES + 1) {
            rc = pj_err_set(err, PJ_ERR_LIMIT, "%s is longer than %d bytes",
                            what, HSM_PIN_MAX_BYTES);
            goto out;
        }
        pin->len = strlen(v);
        memcpy(pin->data, v, pin->len);
        pin->data[pin->len] = '\0';
        rc = pin_finish(pin, what, err);
    } else if (strncmp(norm, "systemd:", 8) == 0) {
        const char *dir = getenv("CREDENTIALS_DIRECTORY");
        char path[4096];
        name = norm + 8;
        if (name[0] == '\0' || strchr(name, '/') != NULL ||
            strcmp(name, ".") == 0 || strcmp(name, "..") == 0) {
            rc = pj_err_set(err, PJ_ERR_INVALID,
                            "PIN source systemd: needs a credential name "
                            "(no '/'), as in LoadCredential=NAME:...");
            goto out;
        }
        if (dir == NULL || dir[0] == '\0') {
            rc = pj_err_set(err, PJ_ERR_NOT_FOUND,
                            "PIN source systemd:%.64s: CREDENTIALS_DIRECTORY "
                            "is not set (run under systemd with "
                            "LoadCredential= or SetCredential=)",
                            name);
            goto out;
        }
        if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, name) >=
            sizeof(path)) {
            rc = pj_err_set(err, PJ_ERR_LIMIT, "credential path too long");
            goto out;
        }
        /* systemd makes the folder private to the service; no mode rule. */
        rc = pin_from_file(path, false, pin, err);
    } else {
        rc = pj_err_set(err, PJ_ERR_INTERNAL, "unknown PIN source");
    }
out:
    free(norm);
    if (rc != PJ_OK) {
        pj_secret_free(pin);
        return rc;
    }
    *pinp = pin;
    return PJ_OK;
}

pj_rc
hsm_login(struct hsm_module *mod, CK_SESSION_HANDLE s, const char *token_name,
          const char *pin_source, struct pj_err *err)
{
    struct pj_secret *pin = NULL;
    CK_RV rv;
    pj_rc rc;

    if (pin_source == NULL) {
        return pj_err_set(err, PJ_ERR_INVALID,
                          "token '%s' needs a PIN: give --pin-source or "
                          "pin-source= in the key URI (file:PATH, env:NAME or "
                          "systemd:NAME)",
                          token_name);
    }
    if ((rc = hsm_pin_read(pin_source, &pin, err)) != PJ_OK) {
        return rc;
    }
    __atomic_add_fetch(&mod->login_calls, 1, __ATOMIC_RELAXED);
    rv = mod->fl->C_Login(s, CKU_USER, pin->data, (CK_ULONG)pin->len);
    pj_secret_free(pin); /* wiped at the moment of last use */
    switch (rv) {
    case CKR_OK:
    case CKR_USER_ALREADY_LOGGED_IN:
        return PJ_OK;
    case CKR_PIN_INCORRECT:
    case CKR_PIN_LEN_RANGE:
    case CKR_PIN_INVALID:
    case CKR_PIN_EXPIRED:
        rc = pj_err_set(err, PJ_ERR_PIN,
                        "token '%s' rejected the PIN from the PIN source (%s); "
                        "it is not retried: fix the PIN source, then restart",
                        token_name, hsm_ckr_name(rv));
        break;
    case CKR_PIN_LOCKED:
        rc = pj_err_set(err, PJ_ERR_PIN_LOCKED,
                        "the user PIN of token '%s' is locked (%s); the "
                        "security officer must reset it",
                        token_name, hsm_ckr_name(rv));
        break;
    default:
        rc = pj_err_set(err, PJ_ERR_TOKEN, "C_Login on token '%s' failed: %s",
                        token_name, hsm_ckr_name(rv));
        break;
    }
    if (err != NULL && err->ckr == 0) {
        err->ckr = rv;
    }
    return rc;
}
