/* Times libvips making one variant per file in process, as `rentcache thumbnail` does:
 * vips_thumbnail_buffer (shrink-on-load, lanczos3, auto-rotate, never upscaled) and
 * jpegsave/webpsave to memory with Q and strip. One JSON line per file and repeat.
 *
 *   gcc -O2 bench/vips_time.c $(pkg-config --cflags --libs vips) -o vips_time
 *   VIPS_CONCURRENCY=1 ./vips_time WIDTH QUALITY jpeg|webp REPEAT FILE...
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <vips/vips.h>

static double now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

int main(int argc, char **argv) {
    if (argc < 6 || VIPS_INIT(argv[0]))
        return 2;
    int width = atoi(argv[1]), quality = atoi(argv[2]), repeat = atoi(argv[4]);
    int webp = strcmp(argv[3], "webp") == 0;
    /* No operation cache: every repeat does the whole work. */
    vips_cache_set_max(0);
    for (int f = 5; f < argc; f++) {
        gchar *buf;
        gsize len;
        if (!g_file_get_contents(argv[f], &buf, &len, NULL))
            return 1;
        for (int r = 0; r < repeat; r++) {
            double t0 = now_us();
            VipsImage *out;
            void *obuf;
            size_t olen;
            if (vips_thumbnail_buffer(buf, len, &out, width, "height", 10000000,
                                      "size", VIPS_SIZE_DOWN, NULL))
                vips_error_exit(NULL);
            int e = webp ? vips_webpsave_buffer(out, &obuf, &olen, "Q", quality, "strip", TRUE, NULL)
                         : vips_jpegsave_buffer(out, &obuf, &olen, "Q", quality, "strip", TRUE, NULL);
            if (e)
                vips_error_exit(NULL);
            double us = now_us() - t0;
            printf("{\"file\": \"%s\", \"us\": %.1f, \"bytes\": %zu, \"width\": %d, \"height\": %d}\n",
                   argv[f], us, olen, vips_image_get_width(out), vips_image_get_height(out));
            g_free(obuf);
            g_object_unref(out);
        }
        g_free(buf);
    }
    return 0;
}
