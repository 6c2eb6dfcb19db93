/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Replays a libFuzzer target over corpus files or directories, so every
 * build runs the corpus under plain ctest (and under ASan+UBSan in the
 * sanitizer build) without libFuzzer.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/pj_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int
replay_file(const char *path)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    struct pj_err err = {0};

    if (pj_file_read(path, 4 * 1024 * 1024, &buf, &len, &err) != PJ_OK) {
        fprintf(stderr, "replay: %s\n", err.msg);
        return -1;
    }
    LLVMFuzzerTestOneInput(buf, len);
    free(buf);
    return 0;
}

int
main(int argc, char **argv)
{
    int i, files = 0;

    for (i = 1; i < argc; i++) {
        struct stat st;
        DIR *d;
        struct dirent *de;

        if (stat(argv[i], &st) != 0) {
            fprintf(stderr, "replay: %s: no such corpus\n", argv[i]);
            return 1;
        }
        if (!S_ISDIR(st.st_mode)) {
            if (replay_file(argv[i]) != 0) {
                return 1;
            }
            files++;
            continue;
        }
        if ((d = opendir(argv[i])) == NULL) {
            return 1;
        }
        while ((de = readdir(d)) != NULL) {
            char path[4096];
            if (de->d_name[0] == '.') {
                continue;
            }
            snprintf(path, sizeof(path), "%s/%s", argv[i], de->d_name);
            if (replay_file(path) != 0) {
                closedir(d);
                return 1;
            }
            files++;
        }
        closedir(d);
    }
    if (files == 0) {
        fprintf(stderr, "replay: empty corpus: nothing was tested\n");
        return 1;
    }
    printf("replayed %d corpus files\n", files);
    return 0;
}
