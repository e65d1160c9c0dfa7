/* lsn.c: LSN text form and PostgreSQL-epoch timestamp conversion. */
#include "pgshift/decode.h"

#include <inttypes.h>
#include <stdio.h>

char *decode_lsn_format(pgs_lsn lsn, char buf[18])
{
    snprintf(buf, 18, "%" PRIX32 "/%" PRIX32, (uint32_t)(lsn >> 32), (uint32_t)lsn);
    return buf;
}

static bool parse_hex32(const char **p, uint32_t *out)
{
    uint64_t v = 0;
    int digits = 0;
    for (; digits < 9; digits++) {
        char c = **p;
        int d;
        if (c >= '0' && c <= '9')
            d = c - '0';
        else if (c >= 'A' && c <= 'F')
            d = c - 'A' + 10;
        else if (c >= 'a' && c <= 'f')
            d = c - 'a' + 10;
        else
            break;
        v = v * 16 + (uint64_t)d;
        (*p)++;
    }
    if (digits == 0 || digits > 8)
        return false;
    *out = (uint32_t)v;
    return true;
}

bool decode_lsn_parse(const char *text, pgs_lsn *out)
{
    if (text == NULL)
        return false;
    const char *p = text;
    uint32_t hi, lo;
    if (!parse_hex32(&p, &hi) || *p++ != '/' || !parse_hex32(&p, &lo) || *p != '\0')
        return false;
    *out = ((pgs_lsn)hi << 32) | lo;
    return true;
}

pgs_timestamp decode_ts_from_unix_us(int64_t unix_us)
{
    return unix_us - PGS_EPOCH_OFFSET_US;
}

int64_t decode_ts_to_unix_us(pgs_timestamp ts)
{
    return ts + PGS_EPOCH_OFFSET_US;
}
