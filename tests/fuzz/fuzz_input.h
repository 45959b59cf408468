/* Turning a fuzzer's byte string into structured values: small integers, lengths and byte spans
 * taken from the front of the input, every read defined when the input runs out (0, or an empty
 * span). Shared by the targets in tests/fuzz/; header-only. */
#ifndef LIBWSGI_FUZZ_INPUT_H
#define LIBWSGI_FUZZ_INPUT_H

#include <stddef.h>
#include <stdint.h>

typedef struct fz_in {
    const uint8_t *p;
    size_t left;
} fz_in;

/* The next byte, 0 once the input is used up. */
static inline unsigned fz_u8(fz_in *in)
{
    if (!in->left) return 0;
    in->left--;
    return *in->p++;
}

/* The next two bytes, little-endian. */
static inline unsigned fz_u16(fz_in *in)
{
    unsigned lo = fz_u8(in);
    return lo | fz_u8(in) << 8;
}

/* Up to @p n bytes as a span into the input (not copied, not NUL-terminated); *len gets its
 * length, which is shorter than @p n near the end. */
static inline const uint8_t *fz_bytes(fz_in *in, size_t n, size_t *len)
{
    const uint8_t *p = in->p;
    if (n > in->left) n = in->left;
    in->p += n;
    in->left -= n;
    *len = n;
    return p;
}

/* A span whose length is the next byte (0..255). */
static inline const uint8_t *fz_span8(fz_in *in, size_t *len)
{
    return fz_bytes(in, fz_u8(in), len);
}

#endif
